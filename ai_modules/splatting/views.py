"""Many views at once for callers that only look at the pictures (no gradients)."""

from __future__ import annotations

import numpy as np
import torch

from ..gaussians import Gaussians
from .renderer import render

#: Pixels rendered per `render` call at most (cameras are batched up to this); bounds the rasterizer's memory.
BATCH_PIXELS = 1 << 17


def render_views(g: Gaussians, viewmats: np.ndarray, ks: np.ndarray, size: int,
                 background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render square views on the Gaussians' device, a batch of cameras at a time, without gradients.

    Args:
        g: Gaussians in the world frame (on the device to render on).
        viewmats: [C,4,4] world-to-camera, OpenCV axes.
        ks: [C,3,3] intrinsics, pixels.
        size: side of every view, pixels.
        background: RGB composited behind the Gaussians, 0..1.

    Returns:
        rgb: [C,S,S,3] float32 0..1 (over `background`).
        alpha: [C,S,S] float32 0..1.
        depth: [C,S,S] float32 expected camera z (meaningless where alpha is 0).
    """
    per_call = max(1, BATCH_PIXELS // (size * size))
    rgbs, alphas, depths = [], [], []
    with torch.no_grad():
        for i in range(0, len(viewmats), per_call):
            out = render(g, viewmats[i:i + per_call], ks[i:i + per_call], size, size, background=background)
            rgbs.append(out.rgb.float().cpu().numpy())
            alphas.append(out.alpha[..., 0].float().cpu().numpy())
            depths.append(out.depth[..., 0].float().cpu().numpy())
    return np.concatenate(rgbs), np.concatenate(alphas), np.concatenate(depths)
