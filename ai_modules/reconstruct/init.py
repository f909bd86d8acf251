"""Initial Gaussians for fitting: from depth maps back-projected into the world, or from the
visual hull of the masks when there is no depth.
"""

from __future__ import annotations

import math

import torch

from ..gaussians import Gaussians, rgb_to_sh_dc


def _views_checked(images: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor) -> None:  # noqa: N803
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be [V,H,W,3], got {list(images.shape)}")
    v = images.shape[0]
    if viewmats.shape != (v, 4, 4) or Ks.shape != (v, 3, 3):
        raise ValueError(f"`viewmats` must be [V,4,4] and `Ks` [V,3,3] for V={v}, got "
                         f"{list(viewmats.shape)} and {list(Ks.shape)}")


def from_depths(images: torch.Tensor, masks: torch.Tensor, depths: torch.Tensor, viewmats: torch.Tensor,
                Ks: torch.Tensor, max_points: int = 50_000, opacity: float = 0.5,  # noqa: N803
                generator: torch.Generator | None = None) -> Gaussians:
    """Back-project every masked pixel with its depth into the world; subsample to `max_points`.

    Args:
        images: [V,H,W,3] float32 0..1.
        masks: [V,H,W] float32 0..1 (object where > 0.5).
        depths: [V,H,W] float32 camera z (> 0 where valid).
        viewmats: [V,4,4] world-to-camera, OpenCV axes.
        Ks: [V,3,3] intrinsics in pixels.
    """
    _views_checked(images, viewmats, Ks)
    v, h, w, _ = images.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    points, colours, sizes = [], [], []
    for i in range(v):
        valid = (masks[i] > 0.5) & (depths[i] > 0) & torch.isfinite(depths[i])
        z = depths[i][valid]
        fx, fy, cx, cy = Ks[i, 0, 0], Ks[i, 1, 1], Ks[i, 0, 2], Ks[i, 1, 2]
        cam = torch.stack([(xs[valid] + 0.5 - cx) / fx * z, (ys[valid] + 0.5 - cy) / fy * z, z], dim=-1)
        c2w = torch.linalg.inv(viewmats[i])
        points.append(cam @ c2w[:3, :3].T + c2w[:3, 3])
        colours.append(images[i][valid])
        sizes.append(z / fx)  # one pixel's footprint at that depth
    pts, rgb, size = torch.cat(points), torch.cat(colours), torch.cat(sizes)
    if pts.shape[0] == 0:
        raise ValueError("`masks`/`depths` hold no valid pixel to start from")
    if pts.shape[0] > max_points:
        keep = torch.randperm(pts.shape[0], generator=generator)[:max_points]
        pts, rgb, size = pts[keep], rgb[keep], size[keep] * math.sqrt(pts.shape[0] / max_points)
    return _gaussians(pts, rgb, size, opacity)


def from_visual_hull(images: torch.Tensor, masks: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,  # noqa: N803
                     num_points: int = 20_000, extent: float = 0.5, opacity: float = 0.5,
                     generator: torch.Generator | None = None) -> Gaussians:
    """Sample points in [-extent, extent]^3 that project inside every mask; colour = mean of their pixels.

    Args:
        images: [V,H,W,3] float32 0..1.
        masks: [V,H,W] float32 0..1.
        viewmats: [V,4,4]; Ks: [V,3,3].
    """
    pts = _carve(images, masks, viewmats, Ks, num_points, extent, generator)
    rgb = _mean_colour(pts, images, viewmats, Ks, torch.ones(len(viewmats), len(pts), dtype=torch.bool))
    spacing = (2 * extent) ** 3 / max(pts.shape[0], 1) * (1 / 0.3)  # rough volume per point, hull ~30% of box
    size = torch.full((pts.shape[0],), spacing ** (1 / 3) * 0.5)
    return _gaussians(pts, rgb, size, opacity)


def from_visible_hull(images: torch.Tensor, masks: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,  # noqa: N803
                      num_points: int = 20_000, extent: float = 0.5, opacity: float = 0.5,
                      generator: torch.Generator | None = None, oversample: int = 8,
                      tolerance: float = 0.03) -> Gaussians:
    """The visual hull's points that some view sees: within `tolerance` (world units) of the front-most hull
    point along their pixel in at least one view; each coloured by the views that see it.

    Why: views from one ring (SyncDreamer's, at 30 deg) cannot carve the space under an object or above a
    flat top, and hull points there are hidden in every view, so no loss removes them; lower or higher
    cameras then see them as floaters. Starting on the visible surface also puts the points where the
    detail is (thin parts get their share).

    Args:
        as `from_visual_hull`; `oversample`: hull points drawn per point kept.
    """
    pts = _carve(images, masks, viewmats, Ks, num_points * oversample, extent, generator)
    v, h, w, _ = images.shape
    half_h, half_w = max(h // 2, 1), max(w // 2, 1)        # a coarser z-buffer: the points leave no holes in it
    seen = torch.zeros(v, len(pts), dtype=torch.bool)
    for i in range(v):
        u, vv, z = _project(pts, viewmats[i], Ks[i])
        pix = (vv * half_h / h).long().clamp(0, half_h - 1) * half_w + (u * half_w / w).long().clamp(0, half_w - 1)
        front = torch.full((half_h * half_w,), float("inf")).scatter_reduce(0, pix, z, "amin")
        seen[i] = z <= front[pix] + tolerance
    visible = torch.nonzero(seen.any(0))[:, 0]
    keep = visible[torch.randperm(len(visible), generator=generator)[:num_points]]
    pts, seen = pts[keep], seen[:, keep]
    area = 4.0 * (2 * extent) ** 2 * 0.3                    # rough surface of a hull that fills ~30% of the box
    size = torch.full((pts.shape[0],), (area / max(pts.shape[0], 1)) ** 0.5 * 0.5)
    return _gaussians(pts, _mean_colour(pts, images, viewmats, Ks, seen), size, opacity)


def _carve(images: torch.Tensor, masks: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,  # noqa: N803
           num_points: int, extent: float, generator: torch.Generator | None) -> torch.Tensor:
    """Up to `num_points` uniform points in the box that project inside every mask (rejection sampling)."""
    _views_checked(images, viewmats, Ks)
    v, h, w, _ = images.shape
    kept = []
    for _ in range(20):  # rejection sampling until enough points survive the carving
        cand = (torch.rand(num_points * 4, 3, generator=generator) * 2 - 1) * extent
        inside = torch.ones(cand.shape[0], dtype=torch.bool)
        for i in range(v):
            u, vv, z = _project(cand, viewmats[i], Ks[i])
            ok = (z > 0) & (u >= 0) & (u < w) & (vv >= 0) & (vv < h)
            hit = torch.zeros_like(inside)
            hit[ok] = masks[i][vv[ok].long(), u[ok].long()] > 0.5
            inside &= hit
        kept.append(cand[inside])
        if sum(k.shape[0] for k in kept) >= num_points:
            break
    pts = torch.cat(kept)[:num_points]
    if pts.shape[0] == 0:
        raise ValueError("the masks share no volume inside the object box; check cameras and masks")
    return pts


def _mean_colour(pts: torch.Tensor, images: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,  # noqa: N803
                 use: torch.Tensor) -> torch.Tensor:
    """Mean colour of each point over the views where `use` [V,N] is true (all views where none is)."""
    v, h, w, _ = images.shape
    total, count = torch.zeros_like(pts), torch.zeros(len(pts), 1)
    everywhere = ~use.any(0)
    for i in range(v):
        u, vv, _ = _project(pts, viewmats[i], Ks[i])
        weight = (use[i] | everywhere).float()[:, None]
        total += weight * images[i][vv.long().clamp(0, h - 1), u.long().clamp(0, w - 1)]
        count += weight
    return total / count.clamp_min(1.0)


def _project(points: torch.Tensor, viewmat: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: N803
    cam = points @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = cam[:, 2]
    zs = z.clamp_min(1e-6)
    return K[0, 0] * cam[:, 0] / zs + K[0, 2], K[1, 1] * cam[:, 1] / zs + K[1, 2], z


def _gaussians(points: torch.Tensor, rgb: torch.Tensor, size: torch.Tensor, opacity: float) -> Gaussians:
    n = points.shape[0]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    return Gaussians(means=points.float().contiguous(), quats=quats,
                     log_scales=size.clamp_min(1e-4).log()[:, None].repeat(1, 3).float(),
                     opacity_logits=torch.full((n,), math.log(opacity / (1 - opacity))),
                     sh_dc=rgb_to_sh_dc(rgb.float().clamp(0, 1)), sh_rest=torch.zeros(n, 0, 3))
