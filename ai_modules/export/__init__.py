"""The `export` stage: Gaussians -> .ply (Inria layout), .splat and a preview (backend `inria`)."""

from .functional import WORLD_TO_FILE, splat_bytes, splat_records, to_file_frame
from .preview import contact_sheet, render_points
from .stage import ExportInputs, ExportOutputs, ExportStage

__all__ = ["WORLD_TO_FILE", "ExportInputs", "ExportOutputs", "ExportStage", "contact_sheet", "render_points",
           "splat_bytes", "splat_records", "to_file_frame"]
