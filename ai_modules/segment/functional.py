"""Pure functions of the embedded segmentation backend `alpha_grabcut` (numpy + OpenCV).

Two ways to a mask:

1. the input's own alpha channel, when it has a meaningful one;
2. otherwise a border-colour model: the border band of the photo is taken as
   background, clustered (k-means, up to 3 colours, in CIELAB); every pixel's
   distance to the nearest background colour is thresholded; OpenCV GrabCut,
   initialised from that mask, refines it; holes are filled (unless they are
   large and background-coloured, like the inside of a cup's handle) and the
   largest connected component is kept.

Then `centre_and_scale` puts the object in a square on white.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from ..errors import NoObjectFound
from ..settings import SegmentSettings

_HINT = ("Photograph the object whole, against a plain background that differs from it in colour, "
         "or supply a PNG whose alpha channel cuts the object out")


def meaningful_alpha(alpha: np.ndarray | None, min_fraction: float) -> bool:
    """True when `alpha` ([H,W] uint8) has at least `min_fraction` of pixels below 50% (i.e. cuts something out)."""
    return alpha is not None and float((alpha < 128).mean()) >= max(min_fraction, 1e-6)


def to_lab(rgb8: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 RGB -> [H,W,3] float32 CIELAB (L 0..100)."""
    return cv2.cvtColor(rgb8.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)


def border_band(height: int, width: int, band: int) -> np.ndarray:
    """[H,W] bool, True within `band` pixels of the image border."""
    m = np.zeros((height, width), dtype=bool)
    m[:band], m[-band:], m[:, :band], m[:, -band:] = True, True, True, True
    return m


def background_distance(lab: np.ndarray, band: int, clusters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Distance of every pixel to the nearest background colour sampled on the border.

    Args:
        lab: [H,W,3] float32 CIELAB.
        band: width of the border band, pixels.
        clusters: number of k-means colours fitted to the band.

    Returns:
        dist: [H,W] float32 CIELAB distance (delta E 76).
        band_dist: [M] float32, `dist` of the band pixels (how textured the background is).
    """
    samples = lab[border_band(*lab.shape[:2], band)].reshape(-1, 3)
    cv2.setRNGSeed(0)
    k = min(clusters, len(samples))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    _, labels, centres = cv2.kmeans(samples, k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    share = np.bincount(labels.ravel(), minlength=k) / len(samples)
    # A small cluster on the border is most likely the object touching the frame, not background.
    keep = share >= 0.1 if (share >= 0.1).any() else share == share.max()
    centres = centres[keep]
    flat = lab.reshape(-1, 1, 3)
    dist = np.sqrt(((flat - centres[None]) ** 2).sum(-1)).min(axis=1).reshape(lab.shape[:2])
    dist = dist.astype(np.float32)
    return dist, dist[border_band(*lab.shape[:2], band)]


def grabcut(rgb8: np.ndarray, initial: np.ndarray, sure_bg: np.ndarray, sure_fg: np.ndarray,
            iterations: int) -> np.ndarray:
    """Refine a mask with OpenCV GrabCut.

    Args:
        rgb8: [H,W,3] uint8.
        initial: [H,W] bool, probable foreground.
        sure_bg: [H,W] bool, certain background (never foreground afterwards).
        sure_fg: [H,W] bool, certain foreground (never background afterwards).
        iterations: GrabCut iterations (0 returns `initial` & ~`sure_bg`).

    Returns:
        [H,W] bool foreground.
    """
    fg = initial & ~sure_bg
    if iterations == 0 or fg.all() or not fg.any():
        return fg
    gc = np.where(fg, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    gc[sure_bg] = cv2.GC_BGD
    gc[sure_fg & ~sure_bg] = cv2.GC_FGD
    cv2.setRNGSeed(0)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR), gc, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def clean_mask(mask: np.ndarray, dist: np.ndarray, background_level: float,
               keep_hole_fraction: float = 0.005) -> np.ndarray:
    """Fill holes and keep the largest 8-connected component.

    A hole stays open only if it is at least `keep_hole_fraction` of the object's
    area and its median distance to the background colours is at most
    `background_level` (it looks as much like background as the border does),
    e.g. the inside of a mug's handle; other holes (a highlight, coffee in a cup
    on a brown table) are filled.

    Args:
        mask: [H,W] bool.
        dist: [H,W] float32 distance to the background colours.
        background_level: typical `dist` of true background (75th percentile on the border).

    Returns:
        [H,W] bool.
    """
    obj = largest_part(mask)
    if not obj.any():
        return np.zeros_like(mask)
    filled = ndimage.binary_fill_holes(obj)
    holes, n_holes = ndimage.label(filled & ~obj)
    if n_holes:
        idx = np.arange(1, n_holes + 1)
        area = ndimage.sum_labels(np.ones_like(obj), holes, idx)
        median = ndimage.median(dist, holes, idx)
        reopen = idx[(area >= keep_hole_fraction * obj.sum()) & (median <= background_level)]
        filled &= ~np.isin(holes, reopen)
    return filled


def largest_part(mask: np.ndarray) -> np.ndarray:
    """[H,W] bool: the largest 8-connected part of `mask` (all False when `mask` is empty)."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def largest_component(alpha: np.ndarray, margin: int = 2) -> np.ndarray:
    """Keep the largest 8-connected part of a soft matte ([H,W] float32, object where >= 0.5), with its soft
    edge up to `margin` pixels outside it; everything else becomes 0."""
    solid = alpha >= 0.5
    largest = largest_part(solid)
    if not (solid & ~largest).any():                 # one part (or none): nothing to drop
        return alpha
    return np.where(ndimage.binary_dilation(largest, iterations=margin), alpha, 0.0).astype(np.float32)


def colour_segment(rgb8: np.ndarray, settings: SegmentSettings) -> tuple[np.ndarray, dict[str, Any]]:
    """Segment a photo without alpha by its border colours and GrabCut.

    Args:
        rgb8: [H,W,3] uint8 photo.
        settings: segment settings (work_size, border_fraction, thresholds...).

    Returns:
        alpha: [H,W] float32 0..1, soft at the rim.
        metrics: numbers for the stage record.

    Raises:
        NoObjectFound: a single-colour frame, or nothing that differs from the border.
    """
    h, w = rgb8.shape[:2]
    scale = min(1.0, settings.work_size / max(h, w))
    work = cv2.resize(rgb8, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    lab = to_lab(work)
    if float(lab.reshape(-1, 3).std(axis=0).max()) < 1.0:
        raise NoObjectFound("the whole frame is one colour", _HINT)
    band = max(2, round(settings.border_fraction * max(work.shape[:2])))
    dist, band_dist = background_distance(lab, band)
    spread = float(np.percentile(band_dist, 90))
    threshold = max(settings.color_threshold, 1.5 * spread)
    initial = dist > threshold
    sure_bg = border_band(*work.shape[:2], band) & ~initial
    sure_fg = cv2.erode((dist > 2.0 * threshold).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    _check_area(float(initial.mean()), settings, "differs from the border colours")
    mask = grabcut(work, initial, sure_bg, sure_fg, settings.grabcut_iterations)
    level = max(float(np.percentile(band_dist, 75)), 0.25 * settings.color_threshold)
    mask = clean_mask(mask, dist, level)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    alpha = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR) if scale < 1.0 else soft
    metrics = {"background_threshold": round(threshold, 3), "background_spread": round(spread, 3),
               "colour_mask_fraction": round(float(initial.mean()), 5), "work_scale": round(scale, 5)}
    return np.clip(alpha, 0.0, 1.0), metrics


def check_object(alpha: np.ndarray, settings: SegmentSettings) -> float:
    """Return the object's area fraction ([H,W] alpha >= 0.5); raise NoObjectFound if out of bounds."""
    fraction = float((alpha >= 0.5).mean())
    _check_area(fraction, settings, "is foreground")
    return fraction


def _check_area(fraction: float, settings: SegmentSettings, what: str) -> None:
    if fraction < settings.min_area_fraction:
        raise NoObjectFound(f"only {fraction:.2%} of the frame {what} "
                            f"(at least {settings.min_area_fraction:.2%} is needed)", _HINT)
    if fraction > settings.max_area_fraction:
        raise NoObjectFound(f"{fraction:.2%} of the frame {what} "
                            f"(at most {settings.max_area_fraction:.2%} is allowed; the object must not fill "
                            "the whole frame)", _HINT)


def centre_and_scale(rgb8: np.ndarray, alpha: np.ndarray, size: int, object_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Crop, scale and centre the object in a square on white.

    The bounding box of ``alpha >= 0.5`` is scaled so its long side is
    `object_size` pixels and its centre lands on the square's centre. Colours
    are resized premultiplied by alpha, then composited on white.

    Args:
        rgb8: [H,W,3] uint8 photo.
        alpha: [H,W] float32 0..1 (or uint8).
        size: side of the output square.
        object_size: long side of the object in the output.

    Returns:
        image: [size,size,3] float32 0..1, on white.
        alpha: [size,size] float32 0..1.
    """
    a = alpha.astype(np.float32) / 255.0 if alpha.dtype == np.uint8 else alpha.astype(np.float32)
    ys, xs = np.nonzero(a >= 0.5)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    s = object_size / max(y1 - y0, x1 - x0)
    cx, cy, half = (x0 + x1) / 2.0, (y0 + y1) / 2.0, size / (2.0 * s)
    h, w = a.shape
    cx0, cx1 = max(0, int(np.floor(cx - half)) - 1), min(w, int(np.ceil(cx + half)) + 1)
    cy0, cy1 = max(0, int(np.floor(cy - half)) - 1), min(h, int(np.ceil(cy + half)) + 1)
    crop_a = a[cy0:cy1, cx0:cx1, None]
    crop = np.concatenate([rgb8[cy0:cy1, cx0:cx1].astype(np.float32) / 255.0 * crop_a, crop_a], axis=2)
    rw, rh = max(1, round((cx1 - cx0) * s)), max(1, round((cy1 - cy0) * s))
    resized = cv2.resize(crop, (rw, rh), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    ox = round(size / 2 - (cx - cx0) * rw / (cx1 - cx0))
    oy = round(size / 2 - (cy - cy0) * rh / (cy1 - cy0))
    canvas = np.zeros((size, size, 4), np.float32)
    dx0, dy0 = max(0, ox), max(0, oy)
    dx1, dy1 = min(size, ox + rw), min(size, oy + rh)
    canvas[dy0:dy1, dx0:dx1] = resized[dy0 - oy:dy1 - oy, dx0 - ox:dx1 - ox]
    out_a = np.clip(canvas[..., 3], 0.0, 1.0)
    image = np.clip(canvas[..., :3] + (1.0 - out_a[..., None]), 0.0, 1.0)
    return image, out_a


def quantize8(x: np.ndarray) -> np.ndarray:
    """Round float32 values in 0..1 to the 8-bit grid (so saved and in-memory outputs agree)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8).astype(np.float32) / np.float32(255.0)
