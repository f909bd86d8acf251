"""The "gsplat" backend: `gsplat.rasterization` with the project's conventions (CUDA tensors only)."""

from __future__ import annotations

import torch

from ..gaussians import Gaussians
from .renderer import RenderOptions, RenderOutput


def render_gsplat(gaussians: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
                  options: RenderOptions) -> RenderOutput:
    """Render through gsplat's CUDA rasterizer (see `ai_modules.splatting.render` for the arguments).

    Raises:
        ValueError: the Gaussians are not float32 on a CUDA device.
    """
    if gaussians.device.type != "cuda":
        raise ValueError(f"`gaussians` must be on a CUDA device for the gsplat backend, got {gaussians.device}")
    if gaussians.means.dtype != torch.float32:
        raise ValueError(f"`gaussians` must be float32 for the gsplat backend, got {gaussians.means.dtype}")
    import gsplat  # here, not at the top: gsplat builds its kernels on first use

    degree = gaussians.sh_degree if options.sh_degree is None else options.sh_degree
    k = (degree + 1) ** 2
    coeffs = torch.cat([gaussians.sh_dc[:, None, :], gaussians.sh_rest], dim=1)[:, :k]   # [N,K,3] dc first
    colors, alphas, meta = gsplat.rasterization(
        means=gaussians.means, quats=gaussians.quats, scales=torch.exp(gaussians.log_scales),
        opacities=torch.sigmoid(gaussians.opacity_logits), colors=coeffs, viewmats=viewmats, Ks=Ks,
        width=width, height=height, near_plane=options.near, far_plane=options.far, eps2d=options.eps2d,
        sh_degree=degree, render_mode="RGB+ED", rasterize_mode="antialiased" if options.antialiased else "classic")
    # The background is composited here, as gsplat's kernel would (colour + (1 - alpha) * bg): gsplat 1.5.3
    # rejects `backgrounds` in its default packed mode (it checks them against the packed [nnz] shape).
    bg = torch.tensor(options.background, dtype=colors.dtype, device=colors.device)
    meta = dict(meta)
    meta["backend"] = "gsplat"
    return RenderOutput(rgb=colors[..., :3] + (1.0 - alphas) * bg, alpha=alphas, depth=colors[..., 3:4], meta=meta)
