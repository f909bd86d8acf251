"""Pure functions of the embedded depth backend `inflation` (numpy + scipy.sparse).

Silhouette inflation: solve the Poisson equation

    -laplacian(u) = 1 inside the mask,   u = 0 outside

on the pixel grid (5-point stencil, unit spacing) and take the height

    h = thickness * 2 * sqrt(u)      (pixels)

For a disc of radius R the solution is u = (R^2 - r^2) / 4, so 2*sqrt(u) =
sqrt(R^2 - r^2) is exactly a hemisphere: `thickness` is the object's total
front-to-back thickness (front h plus mirrored back h) divided by the
silhouette's width, exact for round silhouettes (1.0 turns a disc into a
sphere, 0.5 into an ellipsoid half as deep as wide). Long, thin parts come out
about 1.4x thicker relative to their width (a strip's maximum of 2*sqrt(u) is
width/sqrt(2)). The square root rounds the rim (vertical tangent at the silhouette).

`shade` then optionally adds what the photo's shading suggests: brighter is nearer.
"""

from __future__ import annotations

import cv2
import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla


def poisson_inflation(mask: np.ndarray) -> np.ndarray:
    """Solve -laplacian(u) = 1 in `mask`, u = 0 outside.

    Args:
        mask: [H,W] bool.

    Returns:
        [H,W] float64, > 0 inside the mask, 0 outside (units: pixels^2).
    """
    h, w = mask.shape
    inside = np.pad(mask, 1)                                  # a zero ring keeps neighbours in range
    n = int(inside.sum())
    u = np.zeros((h, w))
    if n == 0:
        return u
    index = -np.ones(inside.shape, dtype=np.int64)
    index[inside] = np.arange(n)
    ys, xs = np.nonzero(inside)
    rows, cols = [np.arange(n)], [np.arange(n)]
    vals = [np.full(n, 4.0)]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nb = index[ys + dy, xs + dx]
        ok = nb >= 0
        rows.append(np.nonzero(ok)[0])
        cols.append(nb[ok])
        vals.append(np.full(int(ok.sum()), -1.0))
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    sol = spla.spsolve(a, np.ones(n), permc_spec="MMD_AT_PLUS_A")
    u[ys - 1, xs - 1] = np.maximum(sol, 0.0)
    return u


def inflate(mask: np.ndarray, thickness: float) -> np.ndarray:
    """Height of the front surface above the mid-plane.

    Args:
        mask: [H,W] bool silhouette.
        thickness: total thickness / silhouette width (see the module docstring).

    Returns:
        [H,W] float32 >= 0, pixels; 0 outside the mask.
    """
    return (thickness * 2.0 * np.sqrt(poisson_inflation(mask))).astype(np.float32)


def shade(height: np.ndarray, image: np.ndarray, mask: np.ndarray, strength: float,
          scale: float = 0.05) -> np.ndarray:
    """Modulate an inflated height by the photo's shading: brighter is nearer.

    The luminance's fine structure (minus its blur over `scale` of the object's long side, taken
    inside the mask only) is normalised to unit spread and clipped to [-1, 1]; the height becomes
    ``height * (1 + strength * detail)``, so bumps scale with the local height and vanish at the rim.

    Args:
        height: [H,W] float32 >= 0 (from `inflate`).
        image: [H,W,3] float32 0..1.
        mask: [H,W] bool.
        strength: 0 (off) .. 1; the relative height change at one spread of detail.
        scale: blur radius as a fraction of the object's long side.

    Returns:
        [H,W] float32 >= 0; `height` itself when `strength` is 0 or the object has no shading.
    """
    if strength <= 0 or not mask.any():
        return height
    ys, xs = np.nonzero(mask)
    sigma = max(scale * float(max(np.ptp(ys), np.ptp(xs)) + 1), 0.5)
    lum = (image @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    weight = mask.astype(np.float32)
    local = cv2.GaussianBlur(lum * weight, (0, 0), sigma) / np.maximum(cv2.GaussianBlur(weight, (0, 0), sigma), 1e-6)
    detail = np.where(mask, lum - local, 0.0)
    spread = float(detail[mask].std())
    if spread < 1e-4:
        return height
    detail = np.clip(detail / spread, -1.0, 1.0)
    return np.maximum(height * (1.0 + min(strength, 1.0) * detail), 0.0).astype(np.float32)


def rim_confidence(mask: np.ndarray, ramp_px: float) -> np.ndarray:
    """Confidence from the distance to the silhouette: 0 at the rim, 1 at `ramp_px` inside and deeper.

    Args:
        mask: [H,W] bool.
        ramp_px: distance (pixels) at which confidence reaches 1.

    Returns:
        [H,W] float32 in 0..1; 0 outside the mask.
    """
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    conf = np.clip((dist - 0.5) / max(ramp_px, 1e-6), 0.0, 1.0)
    return np.where(mask, conf, 0.0).astype(np.float32)


def depth_preview(height: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Visualise a height map: a colour map (dark = far, bright = near) on white.

    Args:
        height: [H,W] float32 >= 0.
        mask: [H,W] bool.

    Returns:
        [H,W,3] uint8 RGB.
    """
    top = float(height.max())
    norm = (height / top if top > 0 else height) * 255.0
    colour = cv2.applyColorMap(np.clip(norm, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
    return np.where(mask[..., None], colour, 255).astype(np.uint8)
