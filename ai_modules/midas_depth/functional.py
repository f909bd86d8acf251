"""Pure functions of the learned depth backend (numpy + OpenCV, no torch).

Input normalisation (`as_rgb`, `as_mask`) and the flip-consistency confidence
(`flip_confidence` and its parts). The predictions these functions score are
*affine-invariant inverse depth* (MiDaS): ``d = a / z + b`` with an unknown
scale ``a > 0`` and shift ``b`` per prediction, so every comparison here first
removes scale and shift, and every threshold is relative to the depth's own
spread. The results do not change when the inputs are replaced by
``a * d + b`` (``a > 0``).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from PIL import Image

ImageLike = Image.Image | np.ndarray

AGREEMENT_TOLERANCE = 0.05       # flip residual (fraction of the depth span) where agreement is exp(-1/2)
EDGE_WINDOW = 0.02               # side of the discontinuity window, fraction of the image's long side
EDGE_TOLERANCE = 0.10            # local depth range (fraction of the span) where the edge term is exp(-1/2)


def as_rgb(image: Any) -> np.ndarray:
    """An RGB array from a PIL image or an [H,W,3|4] uint8 / float 0..1 array.

    Transparent images (RGBA, LA, P with transparency) are composited on white.
    uint8 input stays uint8 (so it is preprocessed exactly as transformers would
    preprocess the PIL image); float input stays float32 0..1 (no quantisation).

    Args:
        image: PIL image; or [H,W,3] / [H,W,4] numpy array, uint8 or float in 0..1.

    Returns:
        [H,W,3] uint8, or [H,W,3] float32 0..1; a new C-contiguous array.

    Raises:
        ValueError: not an image of that kind (wrong type, rank, channels, dtype or range).
    """
    if isinstance(image, Image.Image):
        transparent = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
            image.mode == "P" and "transparency" in image.info)
        image = np.asarray(image.convert("RGBA" if transparent else "RGB"))
    shaped = isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] in (3, 4)
    if not shaped or min(image.shape[:2]) < 1:
        got = f"{type(image).__name__} {getattr(image, 'dtype', '')} {list(getattr(image, 'shape', []))}"
        raise ValueError(f"`image` must be a PIL image or an [H,W,3] / [H,W,4] numpy array, got {got}")
    if image.dtype == np.uint8:
        if image.shape[2] == 3:
            return np.array(image, order="C")          # a writable copy (torch.from_numpy warns otherwise)
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"`image` must be uint8 or float in 0..1, got dtype {image.dtype}")
    lo, hi = (float(image.min()), float(image.max())) if image.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= 0.0 and hi <= 1.0):
        raise ValueError(f"`image` must be float in 0..1, got values in [{lo}, {hi}]")
    image = np.array(image, dtype=np.float32, order="C")
    if image.shape[2] == 4:
        alpha = image[..., 3:]
        image = np.ascontiguousarray(image[..., :3] * alpha + (1.0 - alpha))
    return image


def as_mask(mask: Any, shape: tuple[int, int]) -> np.ndarray:
    """A boolean [H,W] mask from a bool array or a float 0..1 array (``>= 0.5``, like the cutout's alpha).

    Raises:
        ValueError: wrong type, dtype or shape.
    """
    if not isinstance(mask, np.ndarray) or mask.shape != tuple(shape) or not (
            mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.floating)):
        got = f"{type(mask).__name__} {getattr(mask, 'dtype', '')} {list(getattr(mask, 'shape', []))}"
        raise ValueError(f"`mask` must be a bool or float 0..1 array of shape {list(shape)}, got {got}")
    return mask if mask.dtype == np.bool_ else mask >= 0.5


def align_scale_shift(source: np.ndarray, target: np.ndarray, region: np.ndarray) -> tuple[float, float]:
    """Least-squares ``s, t`` minimising ``sum((s * source + t - target)^2)`` over `region`.

    Args:
        source, target: [H,W] float.
        region: [H,W] bool, at least one pixel.

    Returns:
        (s, t); for a constant `source`, ``s = 0`` and ``t`` = mean of `target`.
    """
    x = source[region].astype(np.float64)
    y = target[region].astype(np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    var = float(xc @ xc)
    s = float(xc @ yc) / var if var > 1e-300 else 0.0
    return s, float(y.mean() - s * x.mean())


def depth_span(depth: np.ndarray, region: np.ndarray) -> float:
    """Robust spread of `depth` in `region`: 98th minus 2nd percentile.

    Floored at 1e-3 of the largest magnitude (plus a tiny constant) so a flat
    prediction does not turn float noise into large relative errors.
    """
    values = depth[region].astype(np.float64)
    lo, hi = np.percentile(values, [2.0, 98.0])
    return max(float(hi - lo), 1e-3 * float(np.abs(values).max()), 1e-12)


def flip_agreement(depth: np.ndarray, flipped_back: np.ndarray, region: np.ndarray,
                   span: float, tolerance: float = AGREEMENT_TOLERANCE) -> np.ndarray:
    """Agreement of two predictions after aligning `flipped_back` to `depth` by scale and shift.

    ``exp(-1/2 (r / (tolerance * span))^2)`` with ``r = |s * flipped_back + t - depth|``.

    Returns:
        [H,W] float64 in 0..1 (1 where the two agree exactly).
    """
    s, t = align_scale_shift(flipped_back, depth, region)
    residual = np.abs(s * flipped_back.astype(np.float64) + t - depth)
    return np.exp(-0.5 * (residual / (tolerance * span)) ** 2)


def discontinuity_term(depth: np.ndarray, span: float, window: float = EDGE_WINDOW,
                       tolerance: float = EDGE_TOLERANCE) -> np.ndarray:
    """A term that falls near depth discontinuities.

    The local depth range (max minus min, i.e. the morphological gradient) in a
    square window of side ``window * long side`` (odd, >= 3 px), relative to the
    span: ``exp(-1/2 (range / (tolerance * span))^2)``. A window that is a fixed
    fraction of the image, not a pixel count, makes the term independent of the
    resolution the prediction was upsampled to.

    Returns:
        [H,W] float64 in 0..1 (1 on flat depth, near 0 across a jump of 30% of the span).
    """
    k = max(3, round(window * max(depth.shape)) | 1)
    kernel = np.ones((k, k), np.uint8)
    d = depth.astype(np.float32)
    local = cv2.dilate(d, kernel, borderType=cv2.BORDER_REPLICATE) - cv2.erode(d, kernel,
                                                                                borderType=cv2.BORDER_REPLICATE)
    return np.exp(-0.5 * (local.astype(np.float64) / (tolerance * span)) ** 2)


def flip_confidence(depth: np.ndarray, flipped_back: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel confidence of a relative depth map (see `estimate_depth_confidence` for the why).

    ``confidence = agreement * discontinuity * mask`` where, with the span ``S``
    (2-98 percentile range of `depth` in the mask) and the flip prediction
    aligned by least-squares scale ``s`` and shift ``t`` over the mask,

    - ``agreement = exp(-1/2 (|s * flipped_back + t - depth| / (0.05 S))^2)``
    - ``discontinuity = exp(-1/2 (localrange(depth) / (0.10 S))^2)``, localrange over a
      window of 2% of the image's long side;
    - ``mask``: 1 inside, 0 outside (all pixels when None).

    Args:
        depth: [H,W] float, the prediction on the image.
        flipped_back: [H,W] float, the prediction on the horizontally flipped image, flipped back.
        mask: [H,W] bool, or None for the whole image.

    Returns:
        [H,W] float32 in 0..1; 0 outside `mask` (all 0 when the mask is empty).
    """
    region = np.ones(depth.shape, bool) if mask is None else mask
    if not region.any():
        return np.zeros(depth.shape, np.float32)
    span = depth_span(depth, region)
    conf = flip_agreement(depth, flipped_back, region, span) * discontinuity_term(depth, span)
    return np.where(region, np.clip(conf, 0.0, 1.0), 0.0).astype(np.float32)
