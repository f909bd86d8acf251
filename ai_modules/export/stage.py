"""The `export` stage: Gaussians -> .ply (Inria), .splat and a preview contact sheet (backend `inria`)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import NO_HOOKS, Stage, StageHooks
from ..errors import FormatError, InputError
from ..fileio import map_files, write_bytes
from ..imageio import load_image, save_png
from ..gaussians import Gaussians
from ..settings import ExportSettings
from .functional import splat_bytes, to_file_frame
from .preview import contact_sheet

log = logging.getLogger(__name__)


@dataclass
class ExportInputs:
    """What to export.

    Attributes:
        gaussians: Gaussians in the world frame.
    """

    gaussians: Gaussians


@dataclass
class ExportOutputs:
    """What the export writes (only the formats asked for are set).

    Attributes:
        file_gaussians: Gaussians in the viewers' file frame at `ply_sh_degree` (for .ply), or None.
        splat: .splat content, N * 32 bytes, or None.
        preview: [rows*T, cols*T, 3] uint8 contact sheet, or None.
        metrics: numbers for the stage record.
    """

    file_gaussians: Gaussians | None = None
    splat: bytes | None = None
    preview: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class ExportStage(Stage):
    """Convert to the viewers' frame and encode the requested formats."""

    name: ClassVar[str] = "export"
    files: ClassVar[dict[str, str]] = {"ply": "model.ply", "splat": "model.splat", "preview": "preview.png"}

    def __init__(self, settings: ExportSettings) -> None:
        super().__init__(settings)

    def check_inputs(self, inputs: ExportInputs) -> None:
        """Raise ValueError unless a non-empty `Gaussians` is given."""
        if not isinstance(inputs.gaussians, Gaussians):
            raise ValueError(f"`gaussians` must be a Gaussians, got {type(inputs.gaussians).__name__}")
        if inputs.gaussians.num == 0:
            raise ValueError("`gaussians` must hold at least one Gaussian, got 0")

    def run(self, inputs: ExportInputs, hooks: StageHooks = NO_HOOKS) -> ExportOutputs:
        """Sanitize, convert and encode.

        Raises:
            ValueError: non-finite values with ``on_nonfinite: error``, or none left after dropping them.
        """
        self.check_inputs(inputs)
        s = self.settings
        g, dropped = inputs.gaussians.to("cpu").sanitize()
        if dropped:
            message = f"{dropped} of {inputs.gaussians.num} Gaussians have non-finite values"
            if s.on_nonfinite == "error":
                raise ValueError(f"{message} (`pipeline.export.on_nonfinite` is `error`)")
            warnings.warn(f"{message}; dropped them", RuntimeWarning, stacklevel=2)
            log.warning("nonfinite_gaussians_dropped count=%d", dropped)
        if g.num == 0:
            raise ValueError("no finite Gaussians left to export")
        out = ExportOutputs(metrics={"gaussians": g.num, "dropped_nonfinite": dropped})
        if "ply" in s.formats or "splat" in s.formats:
            file_g = to_file_frame(g)
            if "ply" in s.formats:
                out.file_gaussians = file_g.with_sh_degree(s.ply_sh_degree)
            if "splat" in s.formats:
                out.splat = splat_bytes(file_g)
        if "preview" in s.formats:
            hooks.report(0.5, "rendering the preview")
            out.preview = contact_sheet(g, s.preview_azimuths, s.preview_elevation, s.preview_size)
        return out

    def save(self, outputs: ExportOutputs, directory: Path) -> dict[str, str]:
        """Write model.ply / model.splat / preview.png (those present)."""
        d = Path(directory)
        written = {}
        if outputs.file_gaussians is not None:
            outputs.file_gaussians.save_ply(d / self.files["ply"])
            written["ply"] = self.files["ply"]
        if outputs.splat is not None:
            write_bytes(d / self.files["splat"], outputs.splat)
            written["splat"] = self.files["splat"]
        if outputs.preview is not None:
            save_png(d / self.files["preview"], outputs.preview)
            written["preview"] = self.files["preview"]
        return written

    def load_outputs(self, directory: Path) -> ExportOutputs:
        """Read back whichever of the files exist.

        Raises:
            FormatError: none exists, or one is malformed.
        """
        present = {k: v for k, v in self.files.items() if (Path(directory) / v).is_file()}
        if not present:
            raise FormatError(f"{directory}: no exported files")
        paths = map_files(Path(directory), present)
        out = ExportOutputs()
        if "ply" in paths:
            out.file_gaussians = Gaussians.load_ply(paths["ply"])
        if "splat" in paths:
            out.splat = paths["splat"].read_bytes()
            if len(out.splat) % 32:
                raise FormatError(f"{paths['splat']}: size {len(out.splat)} is not a multiple of 32")
        if "preview" in paths:
            try:
                out.preview = load_image(paths["preview"])[0]
            except InputError as exc:
                raise FormatError(f"{paths['preview']}: not a readable PNG") from exc
        return out
