"""The one container of 3D Gaussians that every stage passes around.

Conventions (ARCHITECTURE.md): means in the world frame (right-handed, Z up,
object inside [-0.5, 0.5]^3); quaternions (w, x, y, z), not necessarily unit;
natural-log scales; opacity logits (opacity = sigmoid(logit)); SH coefficients
in the 3DGS convention (colour = 0.5 + SH_C0 * dc + higher bands).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from . import ply
from .geometry import matrix_to_quat, quat_multiply, rotate_sh

SH_C0 = 0.28209479177387814


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """Convert colours [..., 3] in 0..1 to SH DC coefficients [..., 3]."""
    return (rgb - 0.5) / SH_C0


def sh_dc_to_rgb(dc: torch.Tensor) -> torch.Tensor:
    """Convert SH DC coefficients [..., 3] to colours [..., 3] (not clipped)."""
    return 0.5 + SH_C0 * dc


@dataclass
class Gaussians:
    """A set of N 3D Gaussians; all tensors on one device, float32.

    Attributes:
        means: [N,3] positions.
        quats: [N,4] rotations (w,x,y,z).
        log_scales: [N,3] natural-log standard deviations along the rotated axes.
        opacity_logits: [N] logits of opacity.
        sh_dc: [N,3] SH degree-0 coefficients (RGB).
        sh_rest: [N,K,3] higher SH coefficients, K = (d+1)^2 - 1 (0 for degree 0).
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    opacity_logits: torch.Tensor
    sh_dc: torch.Tensor
    sh_rest: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.ndim == 2 else -1
        expected = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,),
                    "sh_dc": (n, 3)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"`{name}` must be {list(shape)}, got {list(getattr(self, name).shape)}")
        k = self.sh_rest.shape[1] if self.sh_rest.ndim == 3 else -1
        if self.sh_rest.ndim != 3 or self.sh_rest.shape[0] != n or self.sh_rest.shape[2] != 3 \
                or math.isqrt(k + 1) ** 2 != k + 1 or k > 15:
            raise ValueError(f"`sh_rest` must be [N,K,3] with K in (0, 3, 8, 15), got {list(self.sh_rest.shape)}")

    @property
    def num(self) -> int:
        """Number of Gaussians N."""
        return int(self.means.shape[0])

    @property
    def sh_degree(self) -> int:
        """SH degree d (0..3)."""
        return math.isqrt(self.sh_rest.shape[1] + 1) - 1

    @property
    def device(self) -> torch.device:
        """Device of the tensors."""
        return self.means.device

    def _map(self, fn) -> Gaussians:  # noqa: ANN001 - private helper over the six tensors
        return Gaussians(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: str | torch.device) -> Gaussians:
        """Return the Gaussians on `device` (tensors already there are shared, not copied)."""
        return self._map(lambda t: t.to(device))

    def clone(self) -> Gaussians:
        """Return a deep copy."""
        return self._map(lambda t: t.clone())

    def select(self, keep: torch.Tensor) -> Gaussians:
        """Return the Gaussians where `keep` ([N] bool) is True."""
        if keep.shape != (self.num,) or keep.dtype != torch.bool:
            raise ValueError(f"`keep` must be a [N={self.num}] bool tensor, got {keep.dtype} {list(keep.shape)}")
        return self._map(lambda t: t[keep])

    def prune(self, mask: torch.Tensor) -> Gaussians:
        """Return the Gaussians without those where `mask` ([N] bool) is True."""
        if mask.dtype != torch.bool:
            raise ValueError(f"`mask` must be a bool tensor, got {mask.dtype}")
        return self.select(~mask)

    def nonfinite_mask(self) -> torch.Tensor:
        """Return [N] bool: True where any parameter is NaN or infinite."""
        bad = torch.zeros(self.num, dtype=torch.bool, device=self.device)
        for f in fields(self):
            t = getattr(self, f.name)
            t = t.flatten(1) if t.ndim > 1 else t[:, None]
            if t.shape[1]:
                bad |= ~torch.isfinite(t).all(dim=1)
        return bad

    def sanitize(self) -> tuple[Gaussians, int]:
        """Drop Gaussians with any non-finite parameter.

        Returns:
            (the finite Gaussians, how many were dropped).
        """
        bad = self.nonfinite_mask()
        count = int(bad.sum())
        return (self.prune(bad) if count else self), count

    def with_sh_degree(self, degree: int) -> Gaussians:
        """Return a copy at SH `degree` (0..3): higher bands padded with zeros or dropped."""
        if degree not in (0, 1, 2, 3):
            raise ValueError(f"`degree` must be 0..3, got {degree!r}")
        k = (degree + 1) ** 2 - 1
        rest = self.sh_rest[:, :k]
        if rest.shape[1] < k:
            pad = rest.new_zeros(self.num, k - rest.shape[1], 3)
            rest = torch.cat([rest, pad], dim=1)
        return Gaussians(self.means, self.quats, self.log_scales, self.opacity_logits, self.sh_dc, rest)

    def rotated(self, rotation: np.ndarray | torch.Tensor) -> Gaussians:
        """The Gaussians turned by a [3,3] proper rotation about the origin (means, quaternions and
        higher SH bands rotate; scales, opacity and SH DC do not).

        Raises:
            ValueError: `rotation` is not a proper rotation.
        """
        rot = torch.as_tensor(rotation, dtype=torch.float64).cpu()
        if rot.shape != (3, 3) or not torch.allclose(rot @ rot.T, torch.eye(3, dtype=torch.float64), atol=1e-9) \
                or abs(float(torch.linalg.det(rot)) - 1.0) > 1e-9:
            raise ValueError("`rotation` must be a 3x3 rotation matrix with determinant +1")
        q = matrix_to_quat(rot).to(self.quats)
        return Gaussians(means=self.means @ rot.to(self.means).T, quats=quat_multiply(q.expand_as(self.quats), self.quats),
                         log_scales=self.log_scales.clone(), opacity_logits=self.opacity_logits.clone(),
                         sh_dc=self.sh_dc.clone(), sh_rest=rotate_sh(self.sh_rest, rot))

    @staticmethod
    def empty(sh_degree: int = 0, device: str | torch.device = "cpu") -> Gaussians:
        """Return a container with N = 0."""
        z = lambda *s: torch.zeros(*s, dtype=torch.float32, device=device)  # noqa: E731
        return Gaussians(z(0, 3), z(0, 4), z(0, 3), z(0), z(0, 3), z(0, (sh_degree + 1) ** 2 - 1, 3))

    @staticmethod
    def concat(parts: list[Gaussians]) -> Gaussians:
        """Concatenate Gaussians of one SH degree and device.

        Raises:
            ValueError: empty list, or mixed SH degrees.
        """
        if not parts:
            raise ValueError("`parts` must hold at least one Gaussians, got an empty list")
        if len({p.sh_degree for p in parts}) != 1:
            raise ValueError(f"`parts` must share one SH degree, got {[p.sh_degree for p in parts]}")
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Gaussians)})

    # ------------------------------------------------------------------ .ply
    def to_records(self, sh_degree: int | None = None) -> np.ndarray:
        """Return the Inria .ply records [N, 14 + 3*(d+1)^2] float32 (see `ai_modules.ply`)."""
        g = self.with_sh_degree(self.sh_degree if sh_degree is None else sh_degree)
        n = g.num
        rest = g.sh_rest.transpose(1, 2).reshape(n, -1)          # channel-major
        cols = [g.means, torch.zeros(n, 3, device=g.device), g.sh_dc, rest,
                g.opacity_logits[:, None], g.log_scales, g.quats]
        return torch.cat([c.detach().float() for c in cols], dim=1).cpu().numpy()

    @staticmethod
    def from_records(records: np.ndarray, sh_degree: int) -> Gaussians:
        """Inverse of `to_records`; the result is on the CPU."""
        t = torch.from_numpy(np.ascontiguousarray(records, dtype=np.float32))
        n, k = t.shape[0], (sh_degree + 1) ** 2 - 1
        rest = t[:, 9:9 + 3 * k].reshape(n, 3, k).transpose(1, 2).contiguous()
        tail = t[:, 9 + 3 * k:]
        return Gaussians(means=t[:, 0:3].clone(), quats=tail[:, 4:8].clone(), log_scales=tail[:, 1:4].clone(),
                         opacity_logits=tail[:, 0].clone(), sh_dc=t[:, 6:9].clone(), sh_rest=rest)

    def save_ply(self, path: Path, sh_degree: int | None = None) -> None:
        """Write an Inria-layout .ply atomically (coordinates as they are; no frame change).

        Args:
            path: destination file.
            sh_degree: degree of the file (default: this container's); padded with zeros.

        Raises:
            ValueError: non-finite values (call `sanitize()` first).
        """
        degree = self.sh_degree if sh_degree is None else sh_degree
        ply.write(Path(path), self.to_records(degree), degree)

    @staticmethod
    def load_ply(path: Path) -> Gaussians:
        """Read an Inria-layout .ply written by `save_ply` (strict; see `ai_modules.ply.read`).

        Raises:
            FormatError: wrong header or byte size.
        """
        records, degree = ply.read(Path(path))
        return Gaussians.from_records(records, degree)
