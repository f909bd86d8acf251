"""The `segment` stage: photo -> centred square RGBA cutout (embedded backend `alpha_grabcut`)."""

from .stage import SegmentInputs, SegmentOutputs, SegmentStage

__all__ = ["SegmentInputs", "SegmentOutputs", "SegmentStage"]
