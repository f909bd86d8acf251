"""Rotations, quaternions (w, x, y, z) and spherical harmonics, in torch.

Pure functions, batched over leading dimensions, float32 or float64.
"""

from __future__ import annotations

import math

import torch

# 3DGS spherical-harmonics constants (real SH, the sign convention of the Inria code).
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


def yaw_matrix(yaw_deg: float) -> torch.Tensor:
    """[3, 3] float64 rotation by `yaw_deg` about +Z (counter-clockwise seen from above); entries within 1e-12 of
    an integer are snapped, so quarter turns are exact."""
    a = math.radians(yaw_deg)
    c, s = math.cos(a), math.sin(a)
    m = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    r = m.round()
    return torch.where((m - r).abs() < 1e-12, r, m)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Convert quaternions [...,4] (w,x,y,z; normalised here) to rotation matrices [...,3,3]."""
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quat(m: torch.Tensor) -> torch.Tensor:
    """Convert rotation matrices [...,3,3] (det +1) to unit quaternions [...,4] (w,x,y,z), w >= 0."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    # Four candidate solutions (Shepperd); take the numerically best per matrix.
    cands = torch.stack([
        torch.stack([1 + m00 + m11 + m22, m21 - m12, m02 - m20, m10 - m01], -1),
        torch.stack([m21 - m12, 1 + m00 - m11 - m22, m01 + m10, m02 + m20], -1),
        torch.stack([m02 - m20, m01 + m10, 1 - m00 + m11 - m22, m12 + m21], -1),
        torch.stack([m10 - m01, m02 + m20, m12 + m21, 1 - m00 - m11 + m22], -1),
    ], dim=-2)                                                     # [...,4,4]
    diag = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    best = diag.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of quaternions [...,4] (w,x,y,z): rotate by b, then by a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def covariance_to_scale_rotation(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Factor covariances [N,3,3] (symmetric positive definite) as R diag(s^2) R^T.

    Returns:
        log_scales: [N,3] natural-log standard deviations (ascending).
        quats: [N,4] unit quaternions (w,x,y,z) of R (det +1).
    """
    evals, evecs = torch.linalg.eigh(cov.double())
    flip = torch.linalg.det(evecs) < 0
    evecs[flip, :, 0] = -evecs[flip, :, 0]
    log_scales = 0.5 * torch.log(evals.clamp_min(1e-30))
    return log_scales.to(cov.dtype), matrix_to_quat(evecs).to(cov.dtype)


def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Evaluate the 3DGS real SH basis of bands 1..`degree` at unit directions.

    Args:
        dirs: [M,3] unit vectors.
        degree: 0..3.

    Returns:
        [M,K] with K = (degree+1)^2 - 1 (band 0 excluded; it is constant).
    """
    x, y, z = dirs.unbind(-1)
    out = []
    if degree >= 1:
        out += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [SH_C2[0] * x * y, SH_C2[1] * y * z, SH_C2[2] * (2 * zz - xx - yy), SH_C2[3] * x * z,
                SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [SH_C3[0] * y * (3 * xx - yy), SH_C3[1] * x * y * z, SH_C3[2] * y * (4 * zz - xx - yy),
                SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), SH_C3[4] * x * (4 * zz - xx - yy),
                SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, dim=-1) if out else dirs.new_zeros(dirs.shape[0], 0)


def fibonacci_sphere(n: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Return `n` deterministic, well-spread unit vectors [n,3]."""
    i = torch.arange(n, dtype=dtype) + 0.5
    z = 1 - 2 * i / n
    r = torch.sqrt(1 - z * z)
    phi = math.pi * (3 - math.sqrt(5)) * i
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)


def rotate_sh(sh_rest: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate higher SH coefficients so the colour field turns with the frame.

    If directions map as d' = rot @ d, the returned coefficients evaluated at d'
    give the colour the input gave at d.

    Args:
        sh_rest: [N,K,3], K = (d+1)^2 - 1.
        rot: [3,3] rotation matrix.

    Returns:
        [N,K,3].
    """
    k = sh_rest.shape[1]
    if k == 0:
        return sh_rest.clone()
    degree = math.isqrt(k + 1) - 1
    dirs = fibonacci_sphere(64)
    basis = sh_basis(dirs, degree)                                     # Y(d')       [M,K]
    basis_src = sh_basis(dirs @ rot.double(), degree)                  # Y(rot^T d')  [M,K]
    t = torch.linalg.lstsq(basis, basis_src).solution                  # [K,K]
    return torch.einsum("kj,njc->nkc", t.to(sh_rest), sh_rest)
