"""How well fitted Gaussians reproduce the views they came from (the pipeline's quality figures).

* `input_view_quality`: seen from the photo's camera, PSNR inside the silhouette against the
  cutout, and the silhouette IoU.
* `ring_closure`: seen from the ring cameras, how much of the silhouette the multiview stage
  predicted is covered (alpha >= 0.5: no holes), and how much coverage lies outside it (floaters).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..gaussians import Gaussians
from ..multiview.stage import Views
from ..splatting import render_views


def input_view_quality(g: Gaussians, photo: Views) -> dict[str, float]:
    """How well the Gaussians reproduce the photo from its own camera: PSNR inside the silhouette and the
    silhouette IoU (alpha >= 0.5)."""
    rgbs, alphas, _ = render_views(g, photo.viewmats, photo.Ks, photo.alphas.shape[1])
    rgb, alpha = rgbs[0].clip(0, 1), alphas[0]
    mask = photo.alphas[0] >= 0.5
    mse = float(((rgb[mask] - photo.images[0][mask]) ** 2).mean()) if mask.any() else 1.0
    union = float(((alpha >= 0.5) | mask).sum())
    return {"input_view_psnr": round(10 * math.log10(1 / max(mse, 1e-10)), 3),
            "input_view_iou": round(float(((alpha >= 0.5) & mask).sum()) / max(union, 1.0), 4)}


def ring_closure(g: Gaussians, predicted: Views, tolerance_px: int = 2) -> dict[str, float]:
    """Coverage of the predicted silhouettes (fraction of their pixels the Gaussians cover with alpha >= 0.5,
    worst view and mean) and floaters (fraction of covered pixels farther than `tolerance_px` outside them)."""
    _, alphas, _ = render_views(g, predicted.viewmats, predicted.Ks, predicted.alphas.shape[1])
    covered = alphas >= 0.5
    silhouettes = predicted.alphas >= 0.5
    grown = np.stack([ndimage.binary_dilation(s, iterations=tolerance_px) for s in silhouettes])
    coverage = [float(c[s].mean()) if s.any() else 1.0 for c, s in zip(covered, silhouettes)]
    floaters = float((covered & ~grown).sum()) / max(float(covered.sum()), 1.0)
    return {"ring_coverage_min": round(min(coverage), 4), "ring_coverage_mean": round(float(np.mean(coverage)), 4),
            "ring_floaters": round(floaters, 5)}
