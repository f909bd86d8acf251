"""Quaternions, SH rotation and cameras."""

from __future__ import annotations

import numpy as np
import torch

from ai_modules.cameras import intrinsics, orbit_camera, project
from ai_modules.geometry import (covariance_to_scale_rotation, fibonacci_sphere, matrix_to_quat, quat_multiply,
                                 quat_to_matrix, rotate_sh, sh_basis)


def random_quats(n: int, seed: int = 0) -> torch.Tensor:
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return q / q.norm(dim=1, keepdim=True)


def test_quaternion_matrix_round_trip_and_product():
    q = random_quats(200)
    m = quat_to_matrix(q)
    assert torch.allclose(m @ m.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(200, 3, 3), atol=1e-12)
    q2 = matrix_to_quat(m)
    assert torch.allclose(q2, q * torch.sign(q[:, :1]), atol=1e-10)
    p = random_quats(200, seed=1)
    assert torch.allclose(quat_to_matrix(quat_multiply(p, q)), quat_to_matrix(p) @ m, atol=1e-12)
    assert torch.allclose(quat_to_matrix(torch.tensor([[1.0, 0, 0, 0]])), torch.eye(3))


def test_covariance_factorisation():
    q = random_quats(50)
    s = torch.rand(50, 3, dtype=torch.float64) + 0.1
    r = quat_to_matrix(q)
    cov = r @ torch.diag_embed(s ** 2) @ r.transpose(1, 2)
    log_s, q2 = covariance_to_scale_rotation(cov)
    r2 = quat_to_matrix(q2)
    assert torch.allclose(r2 @ torch.diag_embed(torch.exp(2 * log_s)) @ r2.transpose(1, 2), cov, atol=1e-10)


def test_rotated_sh_evaluates_like_the_original():
    rot = quat_to_matrix(random_quats(1, seed=3))[0]
    coeffs = torch.randn(4, 15, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rotated = rotate_sh(coeffs, rot)
    dirs = fibonacci_sphere(100)
    before = torch.einsum("mk,nkc->nmc", sh_basis(dirs, 3), coeffs)
    after = torch.einsum("mk,nkc->nmc", sh_basis(dirs @ rot.T, 3), rotated)   # evaluated at d' = rot d
    assert torch.allclose(before, after, atol=1e-9)


def test_orbit_camera_convention():
    view = orbit_camera(0.0, 0.0, 1.5)                   # on +X, looking at the origin, Z up
    k = intrinsics(100.0, 64, 64)
    uv, depth = project(np.array([[0.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 0.1], [0.1, 0.0, 0.0]]), view, k)
    assert np.allclose(uv[0], [32, 32]) and np.isclose(depth[0], 1.5)
    assert uv[1, 0] > 32                                  # world +Y is image right
    assert uv[2, 1] < 32                                  # world +Z is image up
    assert depth[3] < 1.5                                 # world +X is toward this camera
    assert np.allclose(orbit_camera(90.0, 0.0, 2.0)[:3, 3], [0, 0, 2.0])
    assert np.isclose(np.linalg.det(view[:3, :3]), 1.0)
