"""The `enhance` stage: enhanced renders of the fitted Gaussians (backends `classical`, `sdxl_lightning`, `none`)."""

from .classical import enhance_classical, match_colours, unsharp
from .stage import EnhanceInputs, EnhanceOutputs, EnhanceStage

__all__ = ["EnhanceInputs", "EnhanceOutputs", "EnhanceStage", "enhance_classical", "match_colours", "unsharp"]
