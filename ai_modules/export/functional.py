"""Pure functions of the export stage: frame conversion and the .splat layout.

Viewer frame
------------
SuperSplat, splat-transform and other PlayCanvas viewers (Y up) read .ply/.splat
files in the Inria/COLMAP habit (Y down) and roll every splat 180 degrees about
Z on load: file (x, y, z) is shown at viewer (-x, -y, z). We want viewer up =
world +Z, and the viewer's default camera side (+Z in PlayCanvas) to see the
front of the object (world +X, where the photo was taken from), with the
photo's right (world +Y) on the screen's right (viewer +X). So viewer =
(Y, Z, X) and therefore file = (-Y, -Z, X)::

    [x_f]   [0 -1  0] [X]
    [y_f] = [0  0 -1] [Y]          det = +1 (a proper rotation: 120 degrees
    [z_f]   [1  0  0] [Z]                    about (1, -1, 1)/sqrt(3))

The object's top (world +Z) lands at file -Y, as in a COLMAP capture. Means
rotate by this matrix, quaternions are left-multiplied by its quaternion, and
higher SH bands are rotated with it; log-scales, opacity and SH DC do not change.

The .splat layout (antimatter15/splat)
--------------------------------------
32 bytes per splat, little-endian: position 3 x float32, linear scale 3 x
float32 (exp of the log-scales), RGBA 4 x uint8 (colour = clip(0.5 + SH_C0 * dc,
0, 1) * 255 and alpha = sigmoid(opacity) * 255, rounded to nearest), rotation
4 x uint8 (q/|q| * 128 + 128, rounded, clipped to 0..255; order w, x, y, z).
Splats are sorted by descending exp(sum of log-scales) * sigmoid(opacity)
(stable, so ties keep their order), as the reference converter does.
"""

from __future__ import annotations

import numpy as np

from ..gaussians import SH_C0, Gaussians

WORLD_TO_FILE = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])

SPLAT_DTYPE = np.dtype([("position", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])


def to_file_frame(g: Gaussians, rotation: np.ndarray = WORLD_TO_FILE) -> Gaussians:
    """Rotate Gaussians from the world frame into the viewers' file frame (module docstring).

    Raises:
        ValueError: `rotation` is not a proper rotation.
    """
    return g.rotated(rotation)


def splat_order(log_scales: np.ndarray, opacity_logits: np.ndarray) -> np.ndarray:
    """Indices [N] sorting by descending exp(sum(log_scales)) * sigmoid(opacity), stable."""
    key = np.exp(log_scales.astype(np.float64).sum(axis=1)) / (1.0 + np.exp(-opacity_logits.astype(np.float64)))
    return np.argsort(-key, kind="stable")


def splat_records(g: Gaussians) -> np.ndarray:
    """Encode Gaussians (already in the file frame) as sorted .splat records.

    Returns:
        [N] structured array of `SPLAT_DTYPE` (32 bytes each).
    """
    means = g.means.detach().cpu().double().numpy()
    log_scales = g.log_scales.detach().cpu().double().numpy()
    opacity = g.opacity_logits.detach().cpu().double().numpy()
    order = splat_order(log_scales, opacity)
    rgb = np.clip(0.5 + SH_C0 * g.sh_dc.detach().cpu().double().numpy(), 0.0, 1.0)
    alpha = 1.0 / (1.0 + np.exp(-opacity))
    quats = g.quats.detach().cpu().double().numpy()
    quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    out = np.empty(g.num, dtype=SPLAT_DTYPE)
    out["position"] = means[order]
    out["scale"] = np.exp(log_scales[order])
    out["rgba"] = np.rint(np.concatenate([rgb, alpha[:, None]], axis=1)[order] * 255.0).astype(np.uint8)
    out["rot"] = np.clip(np.rint(quats[order] * 128.0 + 128.0), 0, 255).astype(np.uint8)
    return out


def splat_bytes(g: Gaussians) -> bytes:
    """The .splat file content (N * 32 bytes) of Gaussians already in the file frame."""
    return splat_records(g).tobytes()
