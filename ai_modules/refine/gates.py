"""Which pixels of an enhanced view MVCRM may trust: one boolean mask per gate, all on torch tensors.

* `coverage`: the Gaussians cover the pixel (rendered alpha) and it lies inside the object, away from
  the silhouette's edge (where a render mixes object and background).
* `depth_agreement`: the enhanced view's monocular depth agrees with the rendered depth, once aligned.
  MiDaS/DPT predict *inverse* depth up to scale and shift, so the alignment is fitted in inverse depth
  (where the model's output is affine) and the agreement is judged in depth, relative to the view's range.
* `feature_agreement`: DINOv2 patch features of the enhanced view stay close to the render's
  (`features.feature_similarity`); a hallucinated part has low similarity.
* `multiview_agreement`: what the view shows at a surface point agrees, patch for patch, with what the
  nearest other enhanced views show at the same point (found through the rendered depth). A diffusion
  model's per-view inventions, or a warp of a pixel or two, disagree between views; a real improvement
  of the object's appearance is the same from every side. This gate needs no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """`mask` [V,H,W] bool shrunk by `pixels` (a (2p+1)^2 square)."""
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    return -F.max_pool2d(-mask[:, None].float(), k, stride=1, padding=pixels)[:, 0] > 0.5


def coverage(alpha: torch.Tensor, object_mask: torch.Tensor | None = None, threshold: float = 0.5,
             edge: int = 1) -> torch.Tensor:
    """Pixels [V,H,W] whose rendered `alpha` [V,H,W] is at least `threshold` (and inside `object_mask`),
    `edge` pixels away from the boundary."""
    mask = alpha >= threshold
    if object_mask is not None:
        mask &= object_mask >= threshold
    return erode(mask, edge)


@dataclass(frozen=True)
class DepthAlignment:
    """The affine map of predicted inverse depth onto rendered inverse depth (``s * pred + t``) and what it says.

    Attributes:
        scale, shift: the fit (scale <= 0 means the prediction is reversed: near read as far).
        pixels: pixels it was fitted on.
    """

    scale: float
    shift: float
    pixels: int


def align_inverse_depth(inverse: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor
                        ) -> tuple[torch.Tensor, DepthAlignment] | None:
    """Fit ``s * inverse + t`` to ``1 / depth`` over `valid`: a start from medians and mean deviations, then
    least squares on the best three quarters of the residuals, three times (a wrong part must not drag the
    fit); return the aligned *depth* [H,W] and the fit.

    Args:
        inverse: [H,W] predicted inverse depth (larger = nearer, any scale and shift).
        depth: [H,W] rendered camera z (> 0 where valid).
        valid: [H,W] bool, the pixels to fit on.

    Returns:
        None with fewer than 64 valid pixels.
    """
    valid = valid & (depth > 0) & torch.isfinite(inverse)
    if int(valid.sum()) < 64:
        return None
    x, y = inverse[valid].double(), 1.0 / depth[valid].double()
    mx, my = x.median(), y.median()
    s = (y - my).abs().mean() / (x - mx).abs().mean().clamp_min(1e-12)   # MiDaS's own median / deviation start
    t = my - s * mx
    for _ in range(3):
        residual = (s * x + t - y).abs()
        keep = residual <= torch.quantile(residual, 0.75)
        a = torch.stack([x[keep], torch.ones_like(x[keep])], dim=-1)
        s, t = torch.linalg.lstsq(a, y[keep, None]).solution[:, 0]
    aligned = (s * inverse.double() + t).clamp_min(1e-6)
    return (1.0 / aligned).to(depth.dtype), DepthAlignment(float(s), float(t), int(valid.sum()))


def depth_agreement(inverse: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, tolerance: float
                    ) -> tuple[torch.Tensor, DepthAlignment | None]:
    """Pixels [H,W] of `valid` where the aligned predicted depth is within `tolerance` x the depth range of
    the rendered depth; none when the fit is impossible or reversed (scale <= 0)."""
    fitted = align_inverse_depth(inverse, depth, valid)
    if fitted is None or fitted[1].scale <= 0:
        return torch.zeros_like(valid), None if fitted is None else fitted[1]
    aligned, fit = fitted
    inside = depth[valid]
    span = (inside.max() - inside.min()).clamp_min(1e-6)
    return valid & ((aligned - depth).abs() <= tolerance * span), fit


def feature_agreement(similarity: torch.Tensor, valid: torch.Tensor, threshold: float) -> torch.Tensor:
    """Pixels of `valid` [V,H,W] whose patch similarity [V,H,W] (cosine, -1..1) is at least `threshold`."""
    return valid & (similarity >= threshold)


def neighbours(viewmats: torch.Tensor, count: int) -> list[list[int]]:
    """For each camera, the `count` others whose viewing directions are closest (ring neighbours first)."""
    centres = torch.linalg.inv(viewmats.double())[:, :3, 3]
    dirs = F.normalize(centres, dim=-1)
    cos = dirs @ dirs.T
    cos.fill_diagonal_(-2.0)
    k = min(count, len(viewmats) - 1)
    return cos.topk(k, dim=1).indices.tolist() if k > 0 else [[] for _ in range(len(viewmats))]


def multiview_agreement(images: torch.Tensor, depths: torch.Tensor, valid: torch.Tensor, viewmats: torch.Tensor,
                        Ks: torch.Tensor, *, neighbour_count: int = 4, tolerance: float = 0.05,  # noqa: N803
                        search: int = 1, patch: int = 1, visibility: float = 0.02) -> tuple[torch.Tensor,
                                                                                           torch.Tensor]:
    """Pixels [V,H,W] whose surroundings agree with at least half of the neighbours that see the same point.

    Each valid pixel of view i is lifted to the world with its rendered depth and projected into each of
    the `neighbour_count` nearest views j. There it counts as seen when j covers it at the same depth
    (within `visibility` x the depth). The two views agree when the mean absolute colour difference over a
    (2 `patch` + 1)^2 patch is below `tolerance` for the best of the shifts within `search` pixels (the
    rendered geometry is a pixel or so off). Comparing patches rather than pixels is what tells a real
    texture (the same patch from both sides) from invented detail (a patch that matches nothing).

    Args:
        images: [V,H,W,3] enhanced views 0..1. depths: [V,H,W] rendered camera z.
        valid: [V,H,W] bool, the pixels to judge (coverage).
        viewmats: [V,4,4] world-to-camera; Ks: [V,3,3] pixels.

    Returns:
        (agreeing [V,H,W] bool, seen [V,H,W] bool: pixels that at least one neighbour sees).
    """
    v, h, w, _ = images.shape
    dev, dt = images.device, images.dtype
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=dt) + 0.5,
                            torch.arange(w, device=dev, dtype=dt) + 0.5, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1)                      # [H,W,3]
    colour = images.permute(0, 3, 1, 2)                                           # [V,3,H,W]
    box = 2 * patch + 1
    agree_all = torch.zeros_like(valid)
    seen_all = torch.zeros_like(valid)
    for i, others in enumerate(neighbours(viewmats, neighbour_count)):
        if not others or not bool(valid[i].any()):
            continue
        cam = (pix @ torch.linalg.inv(Ks[i]).T) * depths[i][..., None]           # [H,W,3] camera i
        world = (cam - viewmats[i, :3, 3]) @ viewmats[i, :3, :3]                  # R^T (x - t)
        votes = torch.zeros(h, w, device=dev, dtype=dt)
        seen = torch.zeros(h, w, device=dev, dtype=dt)
        for j in others:
            cj = world @ viewmats[j, :3, :3].T + viewmats[j, :3, 3]               # [H,W,3] camera j
            z = cj[..., 2].clamp_min(1e-6)
            uv = (cj @ Ks[j].T)[..., :2] / z[..., None]                           # pixels in j
            grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)[None]
            dj = F.grid_sample(depths[j][None, None], grid, mode="nearest", align_corners=False)[0, 0]
            vj = F.grid_sample(valid[j][None, None].to(dt), grid, mode="nearest", align_corners=False)[0, 0]
            visible = valid[i] & (vj > 0.5) & ((dj - z).abs() <= visibility * z)
            best = torch.full((h, w), float("inf"), device=dev, dtype=dt)
            for dy in range(-search, search + 1):
                for dx in range(-search, search + 1):
                    shifted = grid + torch.tensor([2 * dx / w, 2 * dy / h], device=dev, dtype=dt)
                    cj_rgb = F.grid_sample(colour[j:j + 1], shifted, mode="bilinear", align_corners=False,
                                           padding_mode="border")[0]             # [3,H,W]
                    diff = (cj_rgb - colour[i]).abs().mean(0, keepdim=True)[None]
                    diff = F.avg_pool2d(diff, box, stride=1, padding=patch, count_include_pad=False)[0, 0]
                    best = torch.minimum(best, diff)
            seen += visible.to(dt)
            votes += (visible & (best <= tolerance)).to(dt)
        seen_all[i] = seen > 0
        agree_all[i] = valid[i] & (seen > 0) & (votes * 2 >= seen)
    return agree_all, seen_all


__all__ = ["DepthAlignment", "align_inverse_depth", "coverage", "depth_agreement", "erode", "feature_agreement",
           "multiview_agreement", "neighbours"]
