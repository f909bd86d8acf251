"""The `refine` stage: the fitted Gaussians + enhanced views (+ the photo) -> the Gaussians to export.

Backends: `mvcrm` (`backends.py`: trusted differences between the enhanced views and the renders
back-projected into the Gaussians, `mvcrm.py`, through the gates of `gates.py`) and `none` (the fitted
Gaussians as they are).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..base import Stage
from ..enhance.stage import EnhanceOutputs
from ..gaussians import Gaussians
from ..multiview.stage import MultiviewOutputs


@dataclass
class RefineInputs:
    """The fitted Gaussians, the enhanced views and the multiview stage's outputs (for the photo)."""

    gaussians: Gaussians
    enhanced: EnhanceOutputs
    views: MultiviewOutputs | None = None


@dataclass
class RefineOutputs:
    """The Gaussians to export."""

    gaussians: Gaussians
    metrics: dict[str, Any] = field(default_factory=dict)


class RefineStage(Stage):
    """Refine the fitted Gaussians from the enhanced views (module docstring)."""

    name: ClassVar[str] = "refine"
    artifact: ClassVar[str] = "gaussians.ply"

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> RefineInputs:
        """The reconstruct stage's Gaussians, the enhanced views and the multiview outputs."""
        return RefineInputs(outputs["reconstruct"].gaussians, outputs["enhance"], outputs.get("multiview"))

    def check_inputs(self, inputs: RefineInputs) -> None:
        """Raise ValueError unless Gaussians are given."""
        if not isinstance(inputs.gaussians, Gaussians):
            raise ValueError(f"`gaussians` must be a Gaussians, got {type(inputs.gaussians).__name__}")

    def skip(self, inputs: RefineInputs) -> RefineOutputs:
        """`none`: the Gaussians unchanged."""
        return RefineOutputs(inputs.gaussians, {"skipped": True, "gaussians": inputs.gaussians.num})

    def save(self, outputs: RefineOutputs, directory: Path) -> dict[str, str]:
        """Write ``gaussians.ply`` (so a later stage resumes from here alone)."""
        outputs.gaussians.save_ply(Path(directory) / self.artifact)
        return {"gaussians": self.artifact}

    def load_outputs(self, directory: Path) -> RefineOutputs:
        """Read ``gaussians.ply`` back (raises FormatError)."""
        return RefineOutputs(Gaussians.load_ply(Path(directory) / self.artifact))
