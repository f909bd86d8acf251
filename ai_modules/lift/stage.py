"""The `lift` stage: cutout + relief -> closed 3D Gaussians (embedded backend `relief`).

The embedded stand-in for the blueprint's `multiview` + `reconstruct` stages:
later learned backends (SyncDreamer views + fitting) replace it behind the same
outputs (a `Gaussians` container in the world frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import NO_HOOKS, Stage, StageHooks, check_array
from ..fileio import map_files
from ..gaussians import Gaussians
from ..settings import LiftSettings
from .functional import lift_relief


@dataclass
class LiftInputs:
    """The cutout and its depth.

    Attributes:
        image: [S,S,3] float32 0..1 on white.
        alpha: [S,S] float32 0..1.
        depth: [S,S] float32 >= 0, front height above the mid-plane, pixels (see `DepthOutputs`).
    """

    image: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


@dataclass
class LiftOutputs:
    """The Gaussians (world frame, CPU, SH degree 0) and numbers for the stage record."""

    gaussians: Gaussians
    metrics: dict[str, Any] = field(default_factory=dict)


class LiftStage(Stage):
    """Lift the cutout into a closed relief of Gaussians (see `ai_modules.lift.functional`)."""

    name: ClassVar[str] = "lift"
    artifact: ClassVar[str] = "gaussians.ply"

    def __init__(self, settings: LiftSettings) -> None:
        super().__init__(settings)

    def check_inputs(self, inputs: LiftInputs) -> None:
        """Raise ValueError unless image [S,S,3], alpha [S,S] and depth [S,S] float32 agree."""
        check_array("image", inputs.image, 3, np.float32, channels=3)
        check_array("alpha", inputs.alpha, 2, np.float32)
        check_array("depth", inputs.depth, 2, np.float32)
        for name in ("alpha", "depth"):
            if getattr(inputs, name).shape != inputs.image.shape[:2]:
                raise ValueError(f"`{name}` must be {list(inputs.image.shape[:2])}, "
                                 f"got {list(getattr(inputs, name).shape)}")
        if not np.isfinite(inputs.depth).all() or (inputs.depth < 0).any():
            raise ValueError("`depth` must be finite and >= 0")

    def run(self, inputs: LiftInputs, hooks: StageHooks = NO_HOOKS) -> LiftOutputs:
        """Build the front, back and rim-wall Gaussians."""
        self.check_inputs(inputs)
        s = self.settings
        g = lift_relief(inputs.image, inputs.alpha, inputs.depth, extent=s.extent, back_shade=s.back_shade,
                        side_walls=s.side_walls, opacity=s.opacity, footprint=s.footprint, flatness=s.flatness)
        front = int((inputs.alpha >= 0.5).sum())
        lo, hi = g.means.min(dim=0).values.tolist(), g.means.max(dim=0).values.tolist()
        metrics = {"gaussians": g.num, "front": front, "back": front, "walls": g.num - 2 * front,
                   "bounds_min": [round(v, 5) for v in lo], "bounds_max": [round(v, 5) for v in hi]}
        return LiftOutputs(g, metrics)

    def save(self, outputs: LiftOutputs, directory: Path) -> dict[str, str]:
        """Write ``gaussians.ply`` (world frame, the container's own degree)."""
        outputs.gaussians.save_ply(Path(directory) / self.artifact)
        return {"gaussians": self.artifact}

    def load_outputs(self, directory: Path) -> LiftOutputs:
        """Read ``gaussians.ply`` back (strict reader; raises FormatError)."""
        path = map_files(Path(directory), {"gaussians": self.artifact})["gaussians"]
        return LiftOutputs(Gaussians.load_ply(path))
