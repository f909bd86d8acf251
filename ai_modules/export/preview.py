"""A small CPU point-splat renderer for preview contact sheets (numpy).

Stopgap: issue 3 replaces it with a proper EWA Gaussian rasterizer (gsplat on
CUDA, a pure-torch reference on CPU). Until then this draws each Gaussian as an
isotropic screen-space Gaussian blob:

* project the means with a pinhole camera (OpenCV axes, `ai_modules.cameras`);
* blob standard deviation = focal * sqrt(s2 * s3) / depth (the two largest
  scales: a flat disc seen face-on), clamped to [0.5, 1.5] pixels, drawn in a
  (2R+1)^2 window, R = 2;
* colour from SH DC only (view-dependent bands are ignored), alpha = opacity *
  blob weight;
* every fragment is sorted by (pixel, depth) and composited front to back
  (transmittance by a segmented cumulative sum of log(1 - alpha)), then over
  the background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..cameras import intrinsics, orbit_camera, project
from ..gaussians import SH_C0, Gaussians

RADIUS = 2
MIN_SIGMA, MAX_SIGMA = 0.5, 1.5


def render_points(g: Gaussians, view: np.ndarray, k: np.ndarray, width: int, height: int,
                  background: float = 1.0) -> np.ndarray:
    """Render Gaussians as blobs.

    Args:
        g: Gaussians in the world frame.
        view: [4,4] world-to-camera (OpenCV axes).
        k: [3,3] intrinsics, pixels.
        width, height: image size.
        background: grey level of the background, 0..1.

    Returns:
        [H,W,3] float32 0..1.
    """
    means = g.means.detach().cpu().double().numpy()
    scales = np.sort(np.exp(g.log_scales.detach().cpu().double().numpy()), axis=1)
    rgb = np.clip(0.5 + SH_C0 * g.sh_dc.detach().cpu().double().numpy(), 0.0, 1.0)
    opacity = 1.0 / (1.0 + np.exp(-g.opacity_logits.detach().cpu().double().numpy()))
    uv, depth = project(means, view, k)
    visible = depth > 1e-3
    uv, depth, scales, rgb, opacity = uv[visible], depth[visible], scales[visible], rgb[visible], opacity[visible]
    sigma = np.clip(k[0, 0] * np.sqrt(scales[:, 1] * scales[:, 2]) / depth, MIN_SIGMA, MAX_SIGMA)
    rank = np.empty(len(depth), dtype=np.int64)
    rank[np.argsort(depth, kind="stable")] = np.arange(len(depth))

    offs = np.arange(-RADIUS, RADIUS + 1)
    ox, oy = np.meshgrid(offs, offs)
    base = np.floor(uv).astype(np.int64)                                       # pixel holding the mean
    px = base[:, None, 0] + ox.ravel()[None]
    py = base[:, None, 1] + oy.ravel()[None]
    d2 = (px + 0.5 - uv[:, None, 0]) ** 2 + (py + 0.5 - uv[:, None, 1]) ** 2
    alpha = np.minimum(opacity[:, None] * np.exp(-0.5 * d2 / sigma[:, None] ** 2), 0.99)
    ok = (px >= 0) & (px < width) & (py >= 0) & (py < height) & (alpha > 1.0 / 255.0)
    pix = (py * width + px)[ok]
    idx = np.broadcast_to(np.arange(len(depth))[:, None], ok.shape)[ok]
    alpha = alpha[ok]

    order = np.argsort(pix * len(depth) + rank[idx])                          # by pixel, then near to far
    pix, idx, alpha = pix[order], idx[order], alpha[order]
    log_t = np.log1p(-alpha)
    csum = np.cumsum(log_t)
    starts = np.r_[True, pix[1:] != pix[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(pix)), 0))
    before = csum - log_t - (csum[group_start] - log_t[group_start])          # exclusive sum within the pixel
    weight = np.exp(before) * alpha
    n_pix = width * height
    image = np.stack([np.bincount(pix, weight * rgb[idx, c], minlength=n_pix) for c in range(3)], axis=1)
    remaining = np.exp(np.bincount(pix, log_t, minlength=n_pix))
    image += background * remaining[:, None]
    return np.clip(image, 0.0, 1.0).reshape(height, width, 3).astype(np.float32)


def contact_sheet(g: Gaussians, azimuths: tuple[float, ...], elevation: float, size: int,
                  distance: float = 1.5, fill: float = 0.42, labels: bool = True) -> np.ndarray:
    """Render the object from several orbit views into one image, 4 tiles a row.

    The focal length is chosen so that the Gaussians' bounding sphere (about
    the origin) projects to a radius of `fill` * `size`.

    Args:
        g: Gaussians in the world frame (object inside [-0.5, 0.5]^3).
        azimuths: degrees; 0 is the input photo's viewpoint (+X).
        elevation: degrees.
        size: side of one tile, pixels.
        distance: camera distance from the origin.
        fill: projected radius of the bounding sphere / tile side.
        labels: write "az 90 el 30" in each tile.

    Returns:
        [rows*size, cols*size, 3] uint8 RGB on white.
    """
    reach = float(g.means.norm(dim=1).max()) if g.num else 0.5
    reach = min(max(reach, 1e-3), 0.95 * distance)
    focal = fill * size * math.sqrt(distance ** 2 - reach ** 2) / reach
    k = intrinsics(focal, size, size)
    tiles = []
    for az in azimuths:
        tile = render_points(g, orbit_camera(az, elevation, distance), k, size, size)
        tile = np.ascontiguousarray(np.rint(tile * 255.0).astype(np.uint8))
        if labels:
            cv2.putText(tile, f"az {az:g} el {elevation:g}", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (115, 115, 115), 1, cv2.LINE_AA)
        tiles.append(tile)
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * size, cols * size, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = tile
    return sheet
