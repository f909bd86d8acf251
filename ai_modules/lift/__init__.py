"""The `lift` stage: cutout + relief -> closed 3D Gaussians (embedded backend `relief`)."""

from .functional import lift_relief
from .stage import LiftInputs, LiftOutputs, LiftStage

__all__ = ["LiftInputs", "LiftOutputs", "LiftStage", "lift_relief"]
