"""The `export` stage: Gaussians -> .ply, .splat, mesh .glb, splat .glb, preview and turntable (backend `inria`).

`run` computes each requested format in memory (cheap ones first, then the
rendered ones: preview, glb, turntable), reporting progress and checking for a
stop request between formats; `save` encodes and writes the files. Rendering
uses `ai_modules.splatting.render` on the stage's device (`load(device)`).
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import trimesh
from PIL import Image, ImageSequence

from ..base import NO_HOOKS, Backend, Stage, StageHooks
from ..errors import FormatError, InputError
from ..fileio import map_files, write_bytes
from ..imageio import load_image, save_png
from ..gaussians import Gaussians
from .functional import splat_bytes, to_file_frame
from .gltf import WORLD_TO_GLTF, gaussians_glb_bytes, read_glb
from .mesh import extract_mesh, mesh_to_glb
from .preview import animated_webp, contact_sheet, mesh_cameras, render_views, turntable_frames
from .texture import bake_texture
from .tsdf import BOX_SIZE, fuse_tsdf

log = logging.getLogger(__name__)

#: The order in which `ExportStage.run` computes the formats: cheap ones first, then the rendered ones.
FORMAT_ORDER: tuple[str, ...] = ("ply", "splat", "splat_glb", "preview", "glb", "turntable")


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
        mesh: triangle mesh in the world frame with RGBA uint8 vertex colours (for the mesh .glb), or None.
        splat_glb: KHR_gaussian_splatting .glb content, or None.
        preview: [rows*T, cols*T, 3] uint8 contact sheet, or None.
        turntable: [F,S,S,3] uint8 frames of one turn, or None.
        metrics: numbers for the stage record.
    """

    file_gaussians: Gaussians | None = None
    splat: bytes | None = None
    mesh: trimesh.Trimesh | None = None
    splat_glb: bytes | None = None
    preview: np.ndarray | None = None
    turntable: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def gaussians_to_mesh(g: Gaussians, *, views: int = 8, size: int = 128, voxels: int = 128,
                      max_faces: int = 50_000, texture_size: int | None = None,
                      texture_view_size: int = 256) -> trimesh.Trimesh:
    """Render the Gaussians from `preview.mesh_cameras`, fuse a TSDF, extract a coloured mesh.

    Views are rendered over black and divided by alpha, so the fused colours are not
    lightened by the background at the silhouettes.

    Args:
        g: Gaussians in the world frame, on the device to render on.
        views: cameras in the 30 deg ring (plus views // 2 at -30 deg).
        size: side of the rendered views, pixels.
        voxels: TSDF cells per axis over [-0.5, 0.5]^3.
        max_faces: face budget after decimation.
        texture_size: when given, bake a texture of this side (`texture.bake_texture`) from the same
            cameras rendered at `texture_view_size`; else the mesh keeps vertex colours.
        texture_view_size: side of the views the texture is baked from, pixels.

    Returns:
        Mesh in the world frame with RGBA uint8 vertex colours, or with UVs and a texture.

    Raises:
        ValueError: no surface (nothing renders opaque enough, alpha >= 0.5, in the views).

    Example:
        >>> mesh_to_glb(gaussians_to_mesh(Gaussians.load_ply(Path("g.ply"))), Path("model.glb"))  # doctest: +SKIP
    """
    viewmats, ks = mesh_cameras(views, size)
    colour, alpha, depth = _unblended_views(g, viewmats, ks, size)
    tsdf, colours = fuse_tsdf(colour, depth, alpha, viewmats, ks, voxels=voxels, device=g.device)
    try:
        mesh = extract_mesh(tsdf, colours, max_faces=max_faces)
    except ValueError as exc:
        raise ValueError(f"cannot build the .glb mesh from {g.num} Gaussians: {exc}") from exc
    if texture_size is None:
        return mesh
    viewmats, ks = mesh_cameras(views, texture_view_size)
    colour, alpha, depth = _unblended_views(g, viewmats, ks, texture_view_size)
    return bake_texture(mesh, colour, depth, alpha, viewmats, ks, size=texture_size,
                        depth_tolerance=2.0 * BOX_SIZE / voxels)


def _unblended_views(g: Gaussians, viewmats: np.ndarray, ks: np.ndarray, size: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colour (rendered over black, divided by alpha), alpha and depth of the views."""
    rgb, alpha, depth = render_views(g, viewmats, ks, size, background=(0.0, 0.0, 0.0))
    return np.clip(rgb / np.maximum(alpha, 1e-6)[..., None], 0.0, 1.0), alpha, depth


class _Steps:
    """Progress, stop checks and timing around the formats of one `ExportStage.run`, in `order`."""

    def __init__(self, order: list[str], hooks: StageHooks) -> None:
        self.order, self.hooks = order, hooks
        self.seconds: dict[str, float] = {}

    @contextmanager
    def run(self, name: str) -> Iterator[None]:
        """Time the body as `name`; before it, unless it is the first format, check for a stop and report.

        (The first format needs neither: the pipeline has just reported the stage's start, 0.0.)
        """
        i = self.order.index(name)
        if i:
            self.hooks.check_stop()
            self.hooks.report(i / len(self.order), f"computing {name}")
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


class ExportStage(Stage):
    """Convert to the viewers' frame and encode the requested formats."""

    name: ClassVar[str] = "export"
    files: ClassVar[dict[str, str]] = {"ply": "model.ply", "splat": "model.splat", "glb": "model.glb",
                                       "splat_glb": "model.splats.glb", "preview": "preview.png",
                                       "turntable": "turntable.webp"}

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> ExportInputs:
        """The refine stage's Gaussians."""
        return ExportInputs(outputs["refine"].gaussians)

    def check_inputs(self, inputs: ExportInputs) -> None:
        """Raise ValueError unless a non-empty `Gaussians` is given."""
        if not isinstance(inputs.gaussians, Gaussians):
            raise ValueError(f"`gaussians` must be a Gaussians, got {type(inputs.gaussians).__name__}")
        if inputs.gaussians.num == 0:
            raise ValueError("`gaussians` must hold at least one Gaussian, got 0")

    def save(self, outputs: ExportOutputs, directory: Path) -> dict[str, str]:
        """Encode and write the formats present (`files` names them); return kind -> file name."""
        d = Path(directory)
        written = {}
        if outputs.file_gaussians is not None:
            outputs.file_gaussians.save_ply(d / self.files["ply"])
            written["ply"] = self.files["ply"]
        if outputs.splat is not None:
            write_bytes(d / self.files["splat"], outputs.splat)
            written["splat"] = self.files["splat"]
        if outputs.mesh is not None:
            mesh_to_glb(outputs.mesh, d / self.files["glb"])
            written["glb"] = self.files["glb"]
        if outputs.splat_glb is not None:
            write_bytes(d / self.files["splat_glb"], outputs.splat_glb)
            written["splat_glb"] = self.files["splat_glb"]
        if outputs.preview is not None:
            save_png(d / self.files["preview"], outputs.preview)
            written["preview"] = self.files["preview"]
        if outputs.turntable is not None:
            write_bytes(d / self.files["turntable"], animated_webp(outputs.turntable))
            written["turntable"] = self.files["turntable"]
        return written

    def load_outputs(self, directory: Path) -> ExportOutputs:
        """Read back whichever of the files exist (the mesh in the world frame, the turntable as decoded frames).

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
        if "glb" in paths:
            out.mesh = _load_mesh_glb(paths["glb"])
        if "splat_glb" in paths:
            out.splat_glb = paths["splat_glb"].read_bytes()
            _check_glb(paths["splat_glb"], out.splat_glb)
        if "preview" in paths:
            try:
                out.preview = load_image(paths["preview"])[0]
            except InputError as exc:
                raise FormatError(f"{paths['preview']}: not a readable PNG") from exc
        if "turntable" in paths:
            out.turntable = _load_frames(paths["turntable"])
        return out


class Inria(Backend):
    """The formats of the Inria 3DGS family (.ply, .splat, KHR_gaussian_splatting .glb), the mesh .glb and the
    previews."""

    def run(self, inputs: ExportInputs, hooks: StageHooks = NO_HOOKS) -> ExportOutputs:
        """Sanitize, convert and compute the requested formats (progress and a stop check between formats).

        Raises:
            ValueError: non-finite values with ``on_nonfinite: error``, or none left after dropping them;
                no surface for the mesh .glb.
            PipelineStopped: `hooks` asked to stop between two formats.
        """
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
        on_device = g.to(self.device)                    # what the renderer sees ("auto": gsplat on CUDA)
        steps = _Steps([f for f in FORMAT_ORDER if f in s.formats], hooks)
        file_g = to_file_frame(g) if "ply" in s.formats or "splat" in s.formats else None
        if "ply" in s.formats:
            with steps.run("ply"):
                out.file_gaussians = file_g.with_sh_degree(s.ply_sh_degree)
        if "splat" in s.formats:
            with steps.run("splat"):
                out.splat = splat_bytes(file_g)
        if "splat_glb" in s.formats:
            with steps.run("splat_glb"):
                out.splat_glb = gaussians_glb_bytes(g)
        if "preview" in s.formats:
            with steps.run("preview"):
                out.preview = contact_sheet(on_device, s.preview_azimuths, s.preview_elevation, s.preview_size)
        if "glb" in s.formats:
            with steps.run("glb"):
                textured = s.mesh_colours == "texture"
                out.mesh = gaussians_to_mesh(
                    on_device, views=s.mesh_views, size=s.mesh_view_size, voxels=s.mesh_voxels,
                    max_faces=min(s.mesh_max_faces, s.texture_max_faces) if textured else s.mesh_max_faces,
                    texture_size=s.texture_size if textured else None, texture_view_size=s.texture_view_size)
            out.metrics.update(mesh_vertices=len(out.mesh.vertices), mesh_faces=len(out.mesh.faces))
        if "turntable" in s.formats:
            with steps.run("turntable"):
                out.turntable = turntable_frames(on_device, s.turntable_frames, s.turntable_elevation,
                                                 s.turntable_size)
        out.metrics["render_device"] = str(on_device.device)
        out.metrics["seconds"] = steps.seconds
        return out


def _check_glb(path: Path, data: bytes) -> None:
    """Raise FormatError, naming `path`, unless `data` is a GLB 2.0 container."""
    try:
        read_glb(data)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc


def _load_mesh_glb(path: Path) -> trimesh.Trimesh:
    """Read a mesh .glb written by `mesh_to_glb` back into the world frame (vertex colours or texture kept).

    Raises:
        FormatError: not a GLB, or no triangles in it.
    """
    data = path.read_bytes()
    _check_glb(path, data)
    gltf, _ = read_glb(data)
    textured = any("TEXCOORD_0" in p["attributes"] for m in gltf.get("meshes", []) for p in m["primitives"])
    try:
        mesh = trimesh.load(path, file_type="glb", force="mesh", skip_materials=not textured, process=False)
    except Exception as exc:  # trimesh raises many kinds for broken content (re-raised as FormatError)
        raise FormatError(f"{path}: not a readable mesh .glb ({exc})") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise FormatError(f"{path}: no triangles")
    transform = np.eye(4)
    transform[:3, :3] = WORLD_TO_GLTF.T
    mesh.apply_transform(transform)
    return mesh


def _load_frames(path: Path) -> np.ndarray:
    """Decode an animated image into [F,H,W,3] uint8 frames.

    Raises:
        FormatError: not a readable image.
    """
    try:
        with Image.open(path) as image:
            return np.stack([np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)])
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable animated image ({exc})") from exc
