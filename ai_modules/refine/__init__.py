"""The `refine` stage: enhanced views back-projected into the Gaussians (MVCRM, in its own issue; now `none`)."""

from .stage import RefineInputs, RefineOutputs, RefineStage

__all__ = ["RefineInputs", "RefineOutputs", "RefineStage"]
