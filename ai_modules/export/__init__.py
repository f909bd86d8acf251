"""The `export` stage: Gaussians -> .ply (Inria layout), .splat, mesh .glb, splat .glb, preview and turntable
(backend `inria`)."""

from .functional import WORLD_TO_FILE, splat_bytes, splat_records, to_file_frame
from .preview import animated_webp, contact_sheet, mesh_cameras, render_views, turntable_frames
from .stage import ExportInputs, ExportOutputs, ExportStage, gaussians_to_mesh
from .texture import bake_texture

__all__ = ["WORLD_TO_FILE", "ExportInputs", "ExportOutputs", "ExportStage", "animated_webp", "bake_texture", "contact_sheet",
           "gaussians_to_mesh", "mesh_cameras", "render_views", "splat_bytes", "splat_records", "to_file_frame",
           "turntable_frames"]
