"""The views of the orientation tests: what the input photo's camera sees and what a viewer shows by default.

The photo's camera sits on world +X looking at the origin: screen right = world +Y, screen up = world +Z. Viewers
look from +Z toward -Z with Y up and X right (three.js and model-viewer for .glb as written; SuperSplat and
splat-transform for .ply/.splat after their 180-degree roll about Z). Both are orthographic point splats with a
z-buffer, so a picture depends only on where the points are and their colours.
"""

from __future__ import annotations

import numpy as np

RED, GREEN, BLUE, GREY = (1.0, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 1.0), (0.5, 0.5, 0.5)
SIZE = 48


def splat(right: np.ndarray, up: np.ndarray, depth: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Orthographic z-buffer point splat: the nearest point (largest `depth`) wins each pixel."""
    img = np.ones((SIZE, SIZE, 3))
    zbuf = np.full((SIZE, SIZE), -np.inf)
    cols = np.clip(((right + 0.5) * SIZE).astype(int), 0, SIZE - 1)
    rows = np.clip(((0.5 - up) * SIZE).astype(int), 0, SIZE - 1)
    for r, c, d, col in zip(rows, cols, depth, colours):
        if d > zbuf[r, c]:
            zbuf[r, c], img[r, c] = d, col
    return img


def input_view(pts: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The photo camera's picture of world points."""
    return splat(pts[:, 1], pts[:, 2], pts[:, 0], colours)       # right = +Y, up = +Z, nearer = larger X


def viewer_view(pts: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """A viewer's default picture of points in its file's frame."""
    return splat(pts[:, 0], pts[:, 1], pts[:, 2], colours)       # right = +X, up = +Y, nearer = larger Z


def agree(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of pixels filled in either picture whose colours agree within 0.15."""
    filled = (a < 0.99).any(-1) | (b < 0.99).any(-1)
    return float((np.abs(a - b).max(-1)[filled] < 0.15).mean())
