"""The embedded enhance backend `classical`: colour matching to the photo and mild detail enhancement.

Renders of fitted Gaussians come out slightly soft and, away from the photo's side, with
colours that drift from the photo's. Each view's object pixels get the photo's colour
distribution (histogram matching per channel, skimage), then an unsharp mask.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.exposure import match_histograms


def match_colours(image: np.ndarray, mask: np.ndarray, reference: np.ndarray, reference_mask: np.ndarray
                  ) -> np.ndarray:
    """`image` [H,W,3] 0..1 with its object pixels (`mask`) histogram-matched to the reference's object pixels."""
    out = image.copy()
    if mask.any() and reference_mask.any():
        matched = match_histograms(image[mask][None], reference[reference_mask][None], channel_axis=-1)[0]
        out[mask] = matched
    return out


def unsharp(image: np.ndarray, mask: np.ndarray, amount: float, sigma: float = 1.0) -> np.ndarray:
    """Unsharp mask of strength `amount` inside `mask` (0 leaves the image unchanged)."""
    if amount <= 0:
        return image
    blurred = cv2.GaussianBlur(image, (0, 0), sigma)
    sharp = np.clip(image + amount * (image - blurred), 0.0, 1.0)
    return np.where(mask[..., None], sharp, image)


def enhance_classical(image: np.ndarray, alpha: np.ndarray, reference: np.ndarray, reference_alpha: np.ndarray,
                      detail: float) -> np.ndarray:
    """One view on white [H,W,3] 0..1 -> enhanced view on white (colour matched, then sharpened)."""
    mask, ref_mask = alpha >= 0.5, reference_alpha >= 0.5
    return unsharp(match_colours(image, mask, reference, ref_mask), mask, detail).astype(np.float32)
