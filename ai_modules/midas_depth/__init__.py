"""Learned depth backend `dpt`: MiDaS/DPT (``Intel/dpt-hybrid-midas``) through transformers.

Library calls usable without a daemon (the seed API)::

    estimate_depth(image) -> [H,W] float32         relative inverse depth, larger = nearer
    estimate_depth_confidence(image, depth, mask=...) -> [H,W] float32 0..1

Both load the model once per (snapshot dir, device) and keep it in a small
cache; `DepthEstimator` is the explicit object for batches and for callers
that manage model lifetime themselves. Missing weights raise `ModelNotAvailable`
(library calls never fall back; only the pipeline does).

**What the depth means.** MiDaS predicts *affine-invariant inverse depth*:
``depth = a / z + b`` for the true camera distance ``z``, with a scale ``a > 0``
and shift ``b`` that are unknown and differ from image to image. Only the order
(larger = nearer) and ratios of differences are meaningful; a consumer aligns
``a, b`` (e.g. by least squares against another depth source) before using it
as geometry. It is not the embedded `ai_modules.depth` stage's height in pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .estimator import DepthEstimator, cached_estimator, clear_cache, find_snapshot
from .functional import ImageLike, flip_confidence

__all__ = ["DepthEstimator", "clear_cache", "estimate_depth", "estimate_depth_confidence", "find_snapshot",
           "flip_confidence"]


def estimate_depth(image: ImageLike, *, models_dir: str | Path | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Relative inverse depth of a photo with MiDaS/DPT.

    The image goes through the snapshot's `DPTImageProcessor` (its resize and
    normalisation), then `DPTForDepthEstimation`; the prediction is upsampled
    back to the input's resolution with bicubic interpolation (align_corners
    False), as in the MiDaS reference ``run.py``. Bicubic overshoot may leave
    values slightly below 0 next to sharp edges.

    Args:
        image: PIL image, or [H,W,3] / [H,W,4] numpy array, uint8 or float in 0..1.
            Transparent pixels are composited on white (SyncDreamer's background).
        models_dir: root of the model files (default: ``$GLIMPSED_MODELS_DIR``, else
            ``~/.cache/glimpsed/models``); the snapshot is ``<models_dir>/depth/dpt-hybrid-midas``.
        device: torch device; fp16 on CUDA, fp32 on CPU.

    Returns:
        [H,W] float32: affine-invariant inverse depth (unknown scale > 0 and shift),
        larger = nearer the camera.

    Raises:
        ModelNotAvailable: no snapshot at ``<models_dir>/depth/dpt-hybrid-midas``.
        FormatError: the snapshot is incomplete or unreadable (names the file).
        ValueError: `image` is not an image of the kinds above.

    Example:
        >>> photo = Image.open("mug.jpg")                                  # doctest: +SKIP
        >>> depth = estimate_depth(photo, device="cuda")                   # doctest: +SKIP
        >>> depth.shape == (photo.height, photo.width)                     # doctest: +SKIP
        True
    """
    return cached_estimator(models_dir, device).predict(image)  # type: ignore[return-value]


def estimate_depth_confidence(image: ImageLike, depth: np.ndarray | None = None, *, mask: np.ndarray | None = None,
                              models_dir: str | Path | None = None, device: str | torch.device = "cpu") -> np.ndarray:
    """Per-pixel confidence of `estimate_depth`'s prediction, for weighting a depth loss.

    Definition (see `functional.flip_confidence`)::

        confidence = agreement * discontinuity * mask
        agreement     = exp(-1/2 (|s * flip(D(flip(I))) + t - D(I)| / (0.05 S))^2)
        discontinuity = exp(-1/2 (localrange(D(I)) / (0.10 S))^2)

    with ``D(I)`` the prediction on the image (or `depth` when given), ``S`` its
    2-98 percentile range inside the mask, ``s, t`` the least-squares scale and
    shift aligning the flipped-back prediction to ``D(I)`` inside the mask, and
    ``localrange`` max minus min over a window of 2% of the image's long side.

    Why: the photo's content does not change under a mirror, so a reliable
    prediction must mirror with it; where the network's two answers disagree
    (after removing the per-prediction scale and shift that affine-invariant
    depth leaves free), it is guessing. At depth discontinuities the upsampled
    prediction blends foreground and background, and a loss there pulls
    surfaces across the gap, so confidence falls where the local depth range
    is large. Outside the object's mask the depth is of the background: 0.
    Every threshold is relative to ``S``, so the result does not depend on the
    unknown scale and shift.

    Args:
        image: as for `estimate_depth`.
        depth: [H,W] float, the prediction for this image when already computed; it is reused
            (only the flipped image is predicted).
        mask: [H,W] bool, or float 0..1 (``>= 0.5`` inside); None for the whole image.
        models_dir: as for `estimate_depth`.
        device: as for `estimate_depth`.

    Returns:
        [H,W] float32 in 0..1; 0 outside `mask`.

    Raises:
        ModelNotAvailable, FormatError: as for `estimate_depth`.
        ValueError: `image`, `depth` or `mask` has the wrong kind or shape.

    Example:
        >>> depth = estimate_depth(cutout)                                       # doctest: +SKIP
        >>> weight = estimate_depth_confidence(cutout, depth, mask=alpha >= 0.5)  # doctest: +SKIP
    """
    return cached_estimator(models_dir, device).confidence(image, depth, mask=mask)
