"""The `depth` stage: cutout -> relief height + confidence (embedded backend `inflation`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import NO_HOOKS, Stage, StageHooks, check_array
from ..errors import FormatError
from ..fileio import map_files
from ..imageio import load_npy, save_npy, save_png
from ..settings import DepthSettings
from . import functional as F


@dataclass
class DepthInputs:
    """The cutout.

    Attributes:
        image: [S,S,3] float32 0..1 on white (unused by `inflation`; learned backends read it).
        alpha: [S,S] float32 0..1; the silhouette is ``alpha >= 0.5``.
    """

    image: np.ndarray
    alpha: np.ndarray


@dataclass
class DepthOutputs:
    """Depth of the view.

    Attributes:
        depth: [S,S] float32 >= 0, the front surface's height above the object's
            mid-plane toward the camera, in cutout pixels (larger = nearer the
            camera); 0 outside the silhouette.
        confidence: [S,S] float32 0..1 (0 outside and at the rim, 1 deep inside).
        metrics: numbers for the stage record.
    """

    depth: np.ndarray
    confidence: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


class DepthStage(Stage):
    """Estimate a relief for the cutout by silhouette inflation (see `functional`).

    Example:
        >>> out = DepthStage(DepthSettings()).run(DepthInputs(image, alpha))   # doctest: +SKIP
    """

    name: ClassVar[str] = "depth"
    files: ClassVar[dict[str, str]] = {"depth": "depth.npy", "confidence": "confidence.npy",
                                       "depth_preview": "depth.png"}

    def __init__(self, settings: DepthSettings) -> None:
        super().__init__(settings)

    def check_inputs(self, inputs: DepthInputs) -> None:
        """Raise ValueError unless image [S,S,3] and alpha [S,S] float32 are given."""
        check_array("image", inputs.image, 3, np.float32, channels=3)
        check_array("alpha", inputs.alpha, 2, np.float32)
        if inputs.alpha.shape != inputs.image.shape[:2]:
            raise ValueError(f"`alpha` must be {list(inputs.image.shape[:2])}, got {list(inputs.alpha.shape)}")

    def run(self, inputs: DepthInputs, hooks: StageHooks = NO_HOOKS) -> DepthOutputs:
        """Inflate the silhouette; the confidence ramp is a fraction of the object's long side."""
        self.check_inputs(inputs)
        mask = inputs.alpha >= 0.5
        ys, xs = np.nonzero(mask)
        long_side = float(max(np.ptp(ys), np.ptp(xs)) + 1) if len(ys) else 1.0
        hooks.report(0.1, "solving the Poisson equation")
        depth = F.inflate(mask, self.settings.thickness)
        confidence = F.rim_confidence(mask, self.settings.confidence_ramp * long_side)
        metrics = {"max_depth_px": round(float(depth.max()), 4), "object_long_side_px": long_side,
                   "mean_confidence": round(float(confidence[mask].mean()) if mask.any() else 0.0, 4)}
        return DepthOutputs(depth, confidence, metrics)

    def save(self, outputs: DepthOutputs, directory: Path) -> dict[str, str]:
        """Write ``depth.npy``, ``confidence.npy`` and the visualisation ``depth.png``."""
        d = Path(directory)
        save_npy(d / self.files["depth"], outputs.depth)
        save_npy(d / self.files["confidence"], outputs.confidence)
        save_png(d / self.files["depth_preview"], F.depth_preview(outputs.depth, outputs.depth > 0))
        return dict(self.files)

    def load_outputs(self, directory: Path) -> DepthOutputs:
        """Read ``depth.npy`` and ``confidence.npy`` back.

        Raises:
            FormatError: missing files or mismatched shapes.
        """
        paths = map_files(Path(directory), self.files)
        depth = load_npy(paths["depth"], 2)
        confidence = load_npy(paths["confidence"], 2)
        if depth.shape != confidence.shape:
            raise FormatError(f"{directory}: depth {depth.shape} and confidence {confidence.shape} differ")
        return DepthOutputs(depth, confidence)
