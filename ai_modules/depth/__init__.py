"""The `depth` stage: cutout -> relief height + confidence (embedded backend `inflation`)."""

from .functional import inflate, poisson_inflation, rim_confidence
from .stage import DepthInputs, DepthOutputs, DepthStage

__all__ = ["DepthInputs", "DepthOutputs", "DepthStage", "inflate", "poisson_inflation", "rim_confidence"]
