"""The `depth` stage: every view (the ring and the input) -> relative depth + confidence.

Backends:
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

from ..base import NO_HOOKS, Stage, StageHooks
from ..errors import FormatError
from ..fileio import atomic_path
from ..imageio import save_png
from ..multiview.stage import MultiviewOutputs
from ..settings import DepthSettings
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

    def __init__(self, settings: DepthSettings, models_dir: Path | None = None, unused: str | None = None) -> None:
        super().__init__(settings, models_dir, unused)
        self._estimator: Any = None

    def load(self, device: str) -> None:
        """Load DPT for the `dpt` backend (raises ModelNotAvailable when its files are missing)."""
        super().load(device)
        if self.backend == "dpt":
            self.require_models()
            from ..midas_depth import DepthEstimator

            self._estimator = DepthEstimator(self.models_dir, device=device)

    def unload(self) -> None:
        """Drop the estimator."""
        self._estimator = None

    def check_inputs(self, inputs: MultiviewOutputs) -> None:
        """Raise ValueError unless the multiview outputs hold views."""
        if not isinstance(inputs, MultiviewOutputs) or len(inputs.ring) == 0 or len(inputs.input) != 1:
            raise ValueError("`inputs` must be the multiview stage's outputs with ring views and one input view")

    def run(self, inputs: MultiviewOutputs, hooks: StageHooks = NO_HOOKS) -> DepthOutputs:
        """Estimate depth and confidence view by view (progress per view, stop checks between views)."""
        self.check_inputs(inputs)
        if self.backend == "none":
            return _no_depth({"views": 0})
        views = [(img, a) for img, a in zip(inputs.ring.images, inputs.ring.alphas)]
        views.append((inputs.input.images[0], inputs.input.alphas[0]))
        depths, confidences = [], []
        for i, (image, alpha) in enumerate(views):
            hooks.check_stop()
            hooks.report((i + 1) / (len(views) + 1), f"view {i + 1}/{len(views)}")
            depth, confidence = self._one(image, alpha)
            depths.append(depth)
            confidences.append(confidence)
        ring_depth, ring_conf = np.stack(depths[:-1]), np.stack(confidences[:-1])
        metrics = {"views": len(views), "mean_confidence": round(float(np.mean(
            [c[a >= 0.5].mean() if (a >= 0.5).any() else 0.0 for (_, a), c in zip(views, confidences)])), 4)}
        return DepthOutputs(ring_depth, ring_conf, depths[-1], confidences[-1], metrics)

    def _one(self, image: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mask = alpha >= 0.5
        if not mask.any():
            return np.zeros_like(alpha), np.zeros_like(alpha)
        if self.backend == "dpt":
            depth = self._estimator.predict(image)
            confidence = self._estimator.confidence(image, depth, mask=mask)
            return np.where(mask, depth, 0.0).astype(np.float32), confidence.astype(np.float32)
        ys, xs = np.nonzero(mask)
        long_side = float(max(np.ptp(ys), np.ptp(xs)) + 1)
        height = F.shade(F.inflate(mask, self.settings.thickness), image, mask, self.settings.shading)
        return height, F.rim_confidence(mask, self.settings.confidence_ramp * long_side)

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
