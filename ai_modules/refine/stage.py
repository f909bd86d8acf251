"""The `refine` stage. MVCRM (back-projecting enhanced pixels into the Gaussians) comes in its own
issue; until then the only backend is `none`, which passes the fitted Gaussians on unchanged and
says so in the stage record."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..base import Stage
from ..enhance.stage import EnhanceOutputs
from ..gaussians import Gaussians


@dataclass
class RefineInputs:
    """The fitted Gaussians and the enhanced views."""

    gaussians: Gaussians
    enhanced: EnhanceOutputs


@dataclass
class RefineOutputs:
    """The Gaussians to export."""

    gaussians: Gaussians
    metrics: dict[str, Any] = field(default_factory=dict)


class RefineStage(Stage):
    """Pass the Gaussians on (`none`)."""

    name: ClassVar[str] = "refine"
    artifact: ClassVar[str] = "gaussians.ply"

    def choose(self, unused: str | None = None) -> None:
        """`none` is the only backend so far; the record says why."""
        super().choose(unused)
        self.reason = "skipped: MVCRM is not implemented yet; the reconstructed Gaussians are exported as they are"

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> RefineInputs:
        """The reconstruct stage's Gaussians and the enhanced views."""
        return RefineInputs(outputs["reconstruct"].gaussians, outputs["enhance"])

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
