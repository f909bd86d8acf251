"""The project's one Gaussian renderer: `render(gaussians, viewmats, Ks, width, height, ...)`.

Two backends with one signature `(gaussians, viewmats, Ks, width, height, options) -> RenderOutput`:
"gsplat" (its CUDA kernels; CUDA tensors only) and "torch" (our tile rasterizer in
plain torch, for the CPU). "auto" picks by the device of the Gaussians, never by
what happens to import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ..gaussians import SH_C0, Gaussians
from ..geometry import sh_basis
from .projection import camera_centres, project
from .tiles import rasterize

Backend = Literal["auto", "gsplat", "torch"]
BACKENDS: tuple[str, ...] = ("auto", "gsplat", "torch")


@dataclass(frozen=True)
class RenderOptions:
    """How to render; defaults follow gsplat's `rasterization()`.

    Attributes:
        background: RGB in 0..1 behind the Gaussians (one colour for all cameras).
        sh_degree: SH bands to use (0..3); None = the Gaussians' degree.
        backend: "auto" (gsplat on CUDA, torch otherwise), "gsplat" or "torch".
        antialiased: gsplat's "antialiased" rasterize mode (opacity compensation for eps2d).
        near: Gaussians with camera z below this are culled.
        far: Gaussians with camera z above this are culled.
        eps2d: low-pass filter added to each 2D covariance diagonal (pixels^2).
    """

    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    sh_degree: int | None = None
    backend: Backend = "auto"
    antialiased: bool = False
    near: float = 0.01
    far: float = 1e10
    eps2d: float = 0.3

    def __post_init__(self) -> None:
        bg = tuple(float(v) for v in np.asarray(self.background, dtype=np.float64).reshape(-1))
        if len(bg) != 3:
            raise ValueError(f"`background` must be 3 floats (RGB), got {self.background!r}")
        object.__setattr__(self, "background", bg)
        if self.sh_degree is not None and self.sh_degree not in (0, 1, 2, 3):
            raise ValueError(f"`sh_degree` must be None or 0..3, got {self.sh_degree!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"`backend` must be one of {BACKENDS}, got {self.backend!r}")
        if not 0 < self.near < self.far:
            raise ValueError(f"`near` and `far` must satisfy 0 < near < far, got near={self.near}, far={self.far}")
        if not self.eps2d >= 0:
            raise ValueError(f"`eps2d` must be >= 0, got {self.eps2d!r}")


@dataclass
class RenderOutput:
    """Images of C cameras.

    Attributes:
        rgb: [C,H,W,3] float 0..1 (composited over the background).
        alpha: [C,H,W,1] float 0..1, accumulated opacity.
        depth: [C,H,W,1] expected camera z, sum(w_i z_i) / sum(w_i) (0 where alpha is ~0).
        meta: backend facts: "backend", "radii" [C,N,2], "means2d" [C,N,2], "depths" [C,N],
            "conics" [C,N,3], "opacities" [C,N] (gsplat: its own meta, packed layout).
    """

    rgb: torch.Tensor
    alpha: torch.Tensor
    depth: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)


def sh_colors(gaussians: Gaussians, campos: torch.Tensor, degree: int) -> torch.Tensor:
    """View-dependent colours as gsplat computes them: clamp_min(SH(dir) + 0.5, 0).

    Args:
        gaussians: N Gaussians of SH degree >= `degree`.
        campos: [C,3] camera centres in the world.
        degree: SH bands to use (0..3).

    Returns:
        [C,N,3] colours, >= 0 (not clamped above).
    """
    cams, n = campos.shape[0], gaussians.num
    color = (SH_C0 * gaussians.sh_dc)[None].expand(cams, n, 3)              # [C,N,3]
    if degree > 0:
        dirs = F.normalize(gaussians.means[None] - campos[:, None], dim=-1)  # [C,N,3]
        basis = sh_basis(dirs.reshape(-1, 3), degree).reshape(cams, n, -1)   # [C,N,K]
        k = basis.shape[-1]
        color = color + torch.einsum("cnk,nkd->cnd", basis, gaussians.sh_rest[:, :k])
    return torch.clamp_min(color + 0.5, 0.0)


def render_torch(gaussians: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                 options: RenderOptions) -> RenderOutput:
    """The pure-torch backend (any device; see `render` for the arguments)."""
    degree = gaussians.sh_degree if options.sh_degree is None else options.sh_degree
    proj = project(gaussians.means, gaussians.quats, torch.exp(gaussians.log_scales), viewmats, Ks, width, height,
                   opacities=torch.sigmoid(gaussians.opacity_logits), eps2d=options.eps2d, near=options.near,
                   far=options.far, antialiased=options.antialiased)
    colors = sh_colors(gaussians, camera_centres(viewmats), degree)                         # [C,N,3]
    feats = torch.cat([colors, proj.depths[..., None]], dim=-1)                             # [C,N,4]
    acc, alpha, n_isects = rasterize(proj.means2d, proj.conics, proj.opacities, proj.radii, proj.depths,
                                     feats, width, height)
    bg = torch.tensor(options.background, dtype=acc.dtype, device=acc.device)
    rgb = acc[..., :3] + (1.0 - alpha) * bg
    depth = acc[..., 3:] / alpha.clamp(min=1e-10)
    meta = {"backend": "torch", "radii": proj.radii, "means2d": proj.means2d, "depths": proj.depths,
            "conics": proj.conics, "opacities": proj.opacities, "n_isects": n_isects}
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth, meta=meta)


def _as_cameras(viewmats: torch.Tensor | np.ndarray, Ks: torch.Tensor | np.ndarray, like: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check and convert cameras to tensors of `like`'s dtype and device."""
    viewmats = torch.as_tensor(viewmats).to(dtype=like.dtype, device=like.device)
    Ks = torch.as_tensor(Ks).to(dtype=like.dtype, device=like.device)
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"`viewmats` must be [C,4,4], got {list(viewmats.shape)}")
    if Ks.ndim != 3 or Ks.shape[1:] != (3, 3):
        raise ValueError(f"`Ks` must be [C,3,3], got {list(Ks.shape)}")
    if Ks.shape[0] != viewmats.shape[0] or viewmats.shape[0] == 0:
        raise ValueError(f"`viewmats` and `Ks` must hold the same C >= 1 cameras, got {viewmats.shape[0]} "
                         f"and {Ks.shape[0]}")
    if not (torch.isfinite(viewmats).all() and torch.isfinite(Ks).all()):
        raise ValueError("`viewmats` and `Ks` must be finite")
    return viewmats, Ks


def render(gaussians: Gaussians, viewmats: torch.Tensor | np.ndarray, Ks: torch.Tensor | np.ndarray,
           width: int, height: int, background: Sequence[float] = (1.0, 1.0, 1.0), sh_degree: int | None = None,
           backend: Backend = "auto", antialiased: bool = False, near: float = 0.01, far: float = 1e10,
           eps2d: float = 0.3, *, options: RenderOptions | None = None) -> RenderOutput:
    """Render Gaussians into C pinhole cameras; differentiable w.r.t. every Gaussian tensor.

    Colours come from the SH coefficients up to `sh_degree`, evaluated at the direction
    from each camera centre to each mean, plus 0.5, clamped at 0 (gsplat's convention).

    Args:
        gaussians: the N Gaussians (float32 for "gsplat"; float32/float64 for "torch").
        viewmats: [C,4,4] world-to-camera matrices, OpenCV axes (tensor or array).
        Ks: [C,3,3] intrinsics in pixels (tensor or array).
        width: image width in pixels.
        height: image height in pixels.
        background, sh_degree, backend, antialiased, near, far, eps2d: see `RenderOptions`.
        options: a `RenderOptions` to use instead of the keyword arguments above.

    Returns:
        `RenderOutput` with rgb [C,H,W,3], alpha [C,H,W,1], depth [C,H,W,1].

    Raises:
        ValueError: bad shapes, sizes or options (or `options` together with keyword options);
            "gsplat" without float32 CUDA tensors; `sh_degree` above the Gaussians' degree.

    Example:
        >>> from ai_modules.cameras import intrinsics, orbit_camera
        >>> out = render(Gaussians.empty(), orbit_camera(0, 30, 1.5)[None], intrinsics(280, 256, 256)[None], 256, 256)
        >>> out.rgb.shape, float(out.rgb.min())
        (torch.Size([1, 256, 256, 3]), 1.0)
    """
    given = RenderOptions(background=tuple(background), sh_degree=sh_degree, backend=backend,
                          antialiased=antialiased, near=near, far=far, eps2d=eps2d)
    if options is None:
        options = given
    elif given != RenderOptions():
        raise ValueError("`options` must not be combined with the keyword options; put them all in `options`")
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"`{name}` must be a positive int, got {value!r}")
    if options.sh_degree is not None and options.sh_degree > gaussians.sh_degree:
        raise ValueError(f"`sh_degree` must be <= the Gaussians' degree {gaussians.sh_degree}, got {options.sh_degree}")
    viewmats, Ks = _as_cameras(viewmats, Ks, gaussians.means)
    chosen = options.backend
    if chosen == "auto":
        chosen = "gsplat" if gaussians.device.type == "cuda" else "torch"
    if chosen == "gsplat":
        if gaussians.device.type != "cuda":
            raise ValueError(f"`backend` 'gsplat' needs the Gaussians on a CUDA device, got {gaussians.device}")
        from .gsplat_backend import render_gsplat  # only when asked for: gsplat builds its kernels on first use

        return render_gsplat(gaussians, viewmats, Ks, int(width), int(height), options)
    return render_torch(gaussians, viewmats, Ks, int(width), int(height), options)
