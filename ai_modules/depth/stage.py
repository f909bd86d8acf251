"""The `depth` stage: every view (the ring and the input) -> relative depth + confidence.

Backends (`backends.py`):
* `inflation` (embedded): silhouette inflation of each view's mask (`functional.inflate`);
  confidence from the distance to the silhouette.
* `dpt` (learned): MiDaS/DPT (`ai_modules.midas_depth`) and its confidence.
* `none`: no depth. `auto` is `none` when the views come from the relief: they carry the relief's
  own geometry and `reconstruct` starts from the relief itself (the record says so).

Either way the depth is *relative*: larger = nearer the camera, with an unknown scale and
shift per view, which is how `reconstruct` compares it (scale- and shift-invariant).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import Stage
from ..errors import FormatError
from ..fileio import atomic_path
from ..imageio import save_png
from ..multiview.stage import MultiviewOutputs
from . import functional as F


@dataclass
class DepthOutputs:
    """Depth of every view: the 16 ring views first, then the input view.

    Attributes:
        depth: [V,H,W] float32 relative depth (larger = nearer, unknown scale and shift per view);
            0 outside the silhouettes.
        confidence: [V,H,W] float32 0..1 (0 outside the silhouettes).
        input_depth, input_confidence: [S,S] the same for the input view (its own size).
        metrics: numbers for the stage record.
    """

    depth: np.ndarray
    confidence: np.ndarray
    input_depth: np.ndarray
    input_confidence: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


class DepthStage(Stage):
    """Estimate a relative depth for every view (module docstring)."""

    name: ClassVar[str] = "depth"
    files: ClassVar[dict[str, str]] = {"depth": "depth.npz", "depth_preview": "depth.png"}

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> MultiviewOutputs:
        """The multiview stage's views."""
        return outputs["multiview"]

    def check_inputs(self, inputs: MultiviewOutputs) -> None:
        """Raise ValueError unless the multiview outputs hold views."""
        if not isinstance(inputs, MultiviewOutputs) or len(inputs.ring) == 0 or len(inputs.input) != 1:
            raise ValueError("`inputs` must be the multiview stage's outputs with ring views and one input view")

    def skip(self, inputs: MultiviewOutputs) -> DepthOutputs:
        """`none`: empty arrays."""
        return _no_depth({"views": 0})

    def save(self, outputs: DepthOutputs, directory: Path) -> dict[str, str]:
        """Write ``depth.npz`` (all arrays) and the contact sheet ``depth.png`` (bright = near); nothing for `none`."""
        if outputs.depth.size == 0:
            return {}
        d = Path(directory)
        with atomic_path(d / self.files["depth"]) as tmp, open(tmp, "wb") as f:
            np.savez(f, depth=outputs.depth, confidence=outputs.confidence, input_depth=outputs.input_depth,
                     input_confidence=outputs.input_confidence)
        tiles = [F.depth_preview(_normalised(x), x != 0) for x in outputs.depth]
        rows = [np.concatenate(tiles[i:i + 8], axis=1) for i in range(0, len(tiles) - len(tiles) % 8, 8)]
        save_png(d / self.files["depth_preview"], np.concatenate(rows or tiles[:1], axis=0))
        return dict(self.files)

    def load_outputs(self, directory: Path) -> DepthOutputs:
        """Read ``depth.npz`` back.

        Raises:
            FormatError: missing, unreadable, or mismatched arrays.
        """
        path = Path(directory) / self.files["depth"]
        if self.backend == "none":
            return _no_depth()
        try:
            with np.load(path) as data:
                arrays = {k: data[k].astype(np.float32) for k in
                          ("depth", "confidence", "input_depth", "input_confidence")}
        except (OSError, ValueError, KeyError) as exc:
            raise FormatError(f"{path}: unreadable depth arrays ({exc})") from exc
        if arrays["depth"].shape != arrays["confidence"].shape or arrays["depth"].ndim != 3:
            raise FormatError(f"{path}: depth {arrays['depth'].shape} and confidence "
                              f"{arrays['confidence'].shape} must be equal [V,H,W]")
        return DepthOutputs(**arrays)


def _no_depth(metrics: dict[str, Any] | None = None) -> DepthOutputs:
    """The outputs of `none`: empty arrays."""
    views, view = np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32)
    return DepthOutputs(views, views, view, view, metrics or {})


def _normalised(depth: np.ndarray) -> np.ndarray:
    """Depth shifted so the silhouette's farthest point is 0 (for the preview)."""
    inside = depth != 0
    if not inside.any():
        return depth
    return np.where(inside, depth - depth[inside].min() + 1e-3, 0.0)
