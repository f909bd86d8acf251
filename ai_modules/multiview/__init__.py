"""The `multiview` stage: the 16 views of SyncDreamer's ring plus the input view (backends `relief`,
`syncdreamer`)."""

from .relief import lift_relief, relief_object, surface_frames
from .stage import MultiviewInputs, MultiviewOutputs, MultiviewStage, Views

__all__ = ["MultiviewInputs", "MultiviewOutputs", "MultiviewStage", "Views", "lift_relief",
           "relief_object", "surface_frames"]
