"""TSDF fusion of rendered views into a signed distance and a colour volume (torch on any device, scipy).

The grid has ``voxels^3`` cells over the object box [-0.5, 0.5]^3 (voxel i has its
centre at -0.5 + (i + 0.5) / voxels), indexed [x, y, z]. `fuse_tsdf`:

1. Silhouette carving: a voxel that projects into a view's image where alpha <
   `alpha_min` is empty. What survives every view is the visual hull.
2. TSDF: in each view where the voxel's pixel has a depth d (alpha >= alpha_min),
   its signed distance along the ray is s = d - z (z: the voxel's camera depth).
   Views with s > -trunc add clip(s / trunc, -1, 1); views that see the voxel
   hidden deeper than `trunc` behind the surface add nothing. The volume holds the
   mean, positive outside and negative inside.
3. Voxels no view measured take the signed distance to the visual hull's boundary
   (inside the hull: negative); carved voxels are never negative. The zero level
   set is therefore closed and bounded by the silhouettes. Where no camera sees the
   surface (e.g. the underside, from a ring of cameras above it) it is the hull.
4. Colour: the mean colour of the views that see the voxel within `trunc` of the
   surface; voxels without one take the colour of the nearest voxel that has one.

`ai_modules.export.mesh` turns the volumes into a mesh.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

BOX_MIN = -0.5
BOX_SIZE = 1.0


def as_array(x: np.ndarray | torch.Tensor, dtype: type = np.float32) -> np.ndarray:
    """A numpy array of `dtype` from an array or a tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def voxel_centres(voxels: int) -> np.ndarray:
    """Centres [voxels] of the grid cells along one axis of the object box."""
    return (BOX_MIN + (np.arange(voxels) + 0.5) * BOX_SIZE / voxels).astype(np.float32)


def _project(points: torch.Tensor, view: torch.Tensor, k: torch.Tensor, h: int, w: int
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixel index [M] (row * w + col; 0 outside the image), camera depth [M] and in-image mask [M] of world
    points [M,3]."""
    cam = points @ view[:3, :3].T + view[:3, 3]
    z = cam[:, 2]
    safe = torch.where(z > 1e-6, z, 1.0)
    col = torch.floor(cam[:, 0] / safe * k[0, 0] + k[0, 2]).long()
    row = torch.floor(cam[:, 1] / safe * k[1, 1] + k[1, 2]).long()
    inside = (z > 1e-6) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    return torch.where(inside, row * w + col, 0), z, inside


def _check_views(rgbs: np.ndarray, depths: np.ndarray, alphas: np.ndarray, viewmats: np.ndarray,
                 ks: np.ndarray) -> None:
    v = rgbs.shape[0] if rgbs.ndim == 4 else -1
    if rgbs.ndim != 4 or rgbs.shape[-1] != 3 or v < 1:
        raise ValueError(f"`rgbs` must be [V,H,W,3] with V >= 1, got {list(rgbs.shape)}")
    hw = rgbs.shape[:3]
    for name, arr, shape in (("depths", depths, hw), ("alphas", alphas, hw), ("viewmats", viewmats, (v, 4, 4)),
                             ("Ks", ks, (v, 3, 3))):
        if arr.shape != tuple(shape):
            raise ValueError(f"`{name}` must be {list(shape)}, got {list(arr.shape)}")


def fuse_tsdf(rgbs: np.ndarray | torch.Tensor, depths: np.ndarray | torch.Tensor,
              alphas: np.ndarray | torch.Tensor, viewmats: np.ndarray | torch.Tensor,
              Ks: np.ndarray | torch.Tensor, *, voxels: int = 128, trunc: float | None = None,  # noqa: N803
              alpha_min: float = 0.5, device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Fuse depth maps and silhouettes into a truncated signed distance volume (module docstring).

    Args:
        rgbs: [V,H,W,3] float 0..1 colours.
        depths: [V,H,W] camera z (OpenCV axes); 0 or NaN where empty.
        alphas: [V,H,W] float 0..1 coverage.
        viewmats: [V,4,4] world-to-camera (OpenCV axes).
        Ks: [V,3,3] intrinsics in pixels.
        voxels: cells per axis over [-0.5, 0.5]^3 (>= 8).
        trunc: truncation distance in world units (default: 4 voxels).
        alpha_min: coverage below which a pixel is background, in (0, 1).
        device: where the views are projected and accumulated (the distance transforms run on the CPU).

    Returns:
        tsdf: [D,D,D] float32 in -1..1 indexed [x, y, z], positive outside, D = `voxels`.
        colour: [D,D,D,3] float32 0..1.

    Raises:
        ValueError: shapes that disagree, or out-of-range `voxels`, `trunc`, `alpha_min`.
    """
    rgbs, depths, alphas = as_array(rgbs), as_array(depths), as_array(alphas)
    viewmats, ks = as_array(viewmats, np.float64), as_array(Ks, np.float64)
    _check_views(rgbs, depths, alphas, viewmats, ks)
    if not isinstance(voxels, int) or voxels < 8:
        raise ValueError(f"`voxels` must be an integer >= 8, got {voxels!r}")
    if not 0.0 < alpha_min < 1.0:
        raise ValueError(f"`alpha_min` must be in (0, 1), got {alpha_min!r}")
    size = BOX_SIZE / voxels
    trunc = 4.0 * size if trunc is None else float(trunc)
    if not trunc > 0.0:
        raise ValueError(f"`trunc` must be > 0, got {trunc!r}")
    h, w = rgbs.shape[1:3]
    c = voxel_centres(voxels)
    dev = torch.device(device)
    points = torch.from_numpy(np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)).to(dev)
    flat_alpha = torch.from_numpy(alphas.reshape(len(alphas), -1)).to(dev)
    flat_depth = np.where(np.isfinite(depths) & (depths > 0) & (alphas >= alpha_min), depths, np.nan)
    flat_depth = torch.from_numpy(flat_depth.reshape(len(depths), -1)).to(dev)
    flat_rgb = torch.from_numpy(rgbs.reshape(len(rgbs), -1, 3)).to(dev)
    views = torch.from_numpy(viewmats).float().to(dev)
    kt = torch.from_numpy(ks).float().to(dev)

    alive = torch.arange(points.shape[0], device=dev)       # 1. visual hull
    for i in range(len(rgbs)):
        pix, _, inside = _project(points[alive], views[i], kt[i], h, w)
        alive = alive[~(inside & (flat_alpha[i][pix] < alpha_min))]
    hull = np.zeros(points.shape[0], dtype=bool)
    hull[alive.cpu().numpy()] = True
    hull = hull.reshape(voxels, voxels, voxels)
    band = ndimage.binary_dilation(hull, iterations=2).reshape(-1)
    idx = np.nonzero(band)[0]

    n = idx.size                                            # 2. TSDF and colour over the hull + margin
    total, count, rgb_count = (torch.zeros(n, device=dev) for _ in range(3))
    rgb_sum = torch.zeros(n, 3, device=dev)
    band_points = points[torch.from_numpy(idx).to(dev)]
    for i in range(len(rgbs)):
        pix, z, inside = _project(band_points, views[i], kt[i], h, w)
        sdf = flat_depth[i][pix] - z
        seen = inside & torch.isfinite(sdf) & (sdf > -trunc)
        total += torch.where(seen, (sdf / trunc).clamp(-1.0, 1.0), 0.0)
        count += seen
        near = seen & (sdf < trunc)
        rgb_sum += torch.where(near[:, None], flat_rgb[i][pix], 0.0)
        rgb_count += near
    total, count, rgb_sum, rgb_count = (t.cpu().numpy() for t in (total, count, rgb_sum, rgb_count))

    in_hull = hull.reshape(-1)[idx]                          # 3. unmeasured voxels, carving
    hull_sdf = _signed_distance(hull, band.reshape(hull.shape)).reshape(-1)[idx] * (size / trunc)
    value = np.where(count > 0, total / np.maximum(count, 1.0), np.clip(hull_sdf, -1.0, 1.0))
    value = np.where(in_hull, value, np.maximum(value, 1e-3))
    tsdf = np.ones(voxels ** 3, np.float32)
    tsdf[idx] = value
    colour = np.zeros((voxels ** 3, 3), np.float32)    # 4. colour, filled from the nearest measured voxel
    has = np.zeros(voxels ** 3, dtype=bool)
    colour[idx] = rgb_sum / np.maximum(rgb_count, 1.0)[:, None]
    has[idx] = rgb_count > 0
    colour, has = colour.reshape(voxels, voxels, voxels, 3), has.reshape(voxels, voxels, voxels)
    if has.any():                                          # fill inside the band's bounding box only
        box = ndimage.find_objects(band.reshape(voxels, voxels, voxels).astype(np.int8))[0]
        nearest = ndimage.distance_transform_edt(~has[box], return_distances=False, return_indices=True)
        colour[box] = colour[box][tuple(nearest)]
    return tsdf.reshape(voxels, voxels, voxels), colour


def _signed_distance(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Signed distance [D,D,D] in voxels to the boundary of `mask` (negative inside), computed in `region`'s box."""
    out = np.full(mask.shape, np.inf, np.float32)
    boxes = ndimage.find_objects(region.astype(np.int8))
    if not boxes:
        return out
    box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in boxes[0])
    inside = mask[box]
    out[box] = np.where(inside, 0.5 - ndimage.distance_transform_edt(inside),
                        ndimage.distance_transform_edt(~inside) - 0.5)
    return out


def sample_volume(volume: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinearly sample a [D,D,D,C] grid over the object box at world points [M,3] -> [M,C] (edges clamped)."""
    d = volume.shape[0]
    coords = ((np.asarray(points, np.float64) - BOX_MIN) / BOX_SIZE * d - 0.5).T       # [3,M] index space
    return np.stack([ndimage.map_coordinates(volume[..., ch], coords, order=1, mode="nearest")
                     for ch in range(volume.shape[-1])], axis=-1)
