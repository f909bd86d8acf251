"""Deterministic Gaussian scenes and cameras for tests and benchmarks of the renderer."""

from __future__ import annotations

import math

import numpy as np
import torch

from .. import cameras
from ..cameras import intrinsics, look_at
from ..gaussians import Gaussians, rgb_to_sh_dc
from ..geometry import fibonacci_sphere, matrix_to_quat


def textured_sphere(n: int = 20_000, radius: float = 0.35, sh_degree: int = 3, seed: int = 0) -> Gaussians:
    """`n` flat Gaussians tiling a sphere, coloured by a latitude/longitude checker.

    Each Gaussian is a disc tangent to the sphere (normal scale 1/6 of the tangent
    scale), opacity 0.9; higher SH bands hold small seeded random values (std 0.05).

    Returns:
        float32 Gaussians on the CPU.
    """
    gen = torch.Generator().manual_seed(seed)
    normals = fibonacci_sphere(n)                                                # [n,3] float64
    means = radius * normals
    # Tangent frame: columns (t1, t2, normal), det +1.
    helper = torch.where((normals[:, 2].abs() < 0.9)[:, None], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64),
                         torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    t1 = torch.nn.functional.normalize(torch.cross(helper, normals, dim=-1), dim=-1)
    t2 = torch.cross(normals, t1, dim=-1)
    quats = matrix_to_quat(torch.stack([t1, t2, normals], dim=-1))
    spacing = math.sqrt(4 * math.pi * radius ** 2 / n)
    scales = torch.tensor([0.7 * spacing, 0.7 * spacing, 0.7 * spacing / 6], dtype=torch.float64).expand(n, 3)
    lon = torch.atan2(normals[:, 1], normals[:, 0])
    lat = torch.asin(normals[:, 2].clamp(-1, 1))
    checker = ((torch.floor(lon / (math.pi / 6)) + torch.floor(lat / (math.pi / 8))) % 2)[:, None]  # [n,1]
    rgb = checker * torch.tensor([0.9, 0.35, 0.1], dtype=torch.float64) \
        + (1 - checker) * torch.tensor([0.15, 0.45, 0.85], dtype=torch.float64)
    k = (sh_degree + 1) ** 2 - 1
    return Gaussians(means=means.float(), quats=quats.float(), log_scales=torch.log(scales).float(),
                     opacity_logits=torch.full((n,), math.log(0.9 / 0.1)), sh_dc=rgb_to_sh_dc(rgb).float(),
                     sh_rest=0.05 * torch.randn(n, k, 3, generator=gen))


def random_cloud(n: int = 2_000, sh_degree: int = 0, extent: float = 0.5, seed: int = 0) -> Gaussians:
    """`n` random anisotropic Gaussians in [-extent, extent]^3 with random colours, opacities and rotations."""
    gen = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2 - 1
    return Gaussians(means=(torch.rand(n, 3, generator=gen) * 2 - 1) * extent,
                     quats=torch.randn(n, 4, generator=gen),
                     log_scales=math.log(0.02) + 0.6 * torch.randn(n, 3, generator=gen),
                     opacity_logits=torch.randn(n, generator=gen) * 1.5 + 0.5,
                     sh_dc=torch.randn(n, 3, generator=gen) * 0.8,
                     sh_rest=0.2 * torch.randn(n, k, 3, generator=gen))


def ring_cameras(azimuths: tuple[float, ...] = (0.0,), elevation: float = 30.0, distance: float = 1.5,
                 focal: float = 280.0, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """SyncDreamer-ring cameras: ([C,4,4] world-to-camera, [C,3,3] intrinsics), float32."""
    views, ks = cameras.ring_cameras(azimuths, elevation, size, distance, focal)
    return torch.from_numpy(views).float(), torch.from_numpy(ks).float()


def close_camera(distance: float = 0.6, focal: float = 280.0, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """One camera close to the object (parts of it off-image): ([1,4,4], [1,3,3]) float32."""
    eye = np.array([distance, 0.25 * distance, 0.35 * distance])
    return (torch.from_numpy(look_at(eye, np.array([0.05, 0.0, 0.0]))[None]).float(),
            torch.from_numpy(intrinsics(focal, size, size)[None]).float())
