"""The `multiview` stage: cutout -> 16 views on SyncDreamer's ring, with their cameras, and the input view.

Backends:
* `relief` (embedded): a closed relief of Gaussians built from the cutout (`relief.relief_object`),
  rendered from the 16 ring cameras; the relief itself is passed on, so `reconstruct` can start from it.
* `syncdreamer` (learned): SyncDreamer's 16 views (`ai_modules.sync_dreamer`).

Either way the photo is passed on as the input view, with the camera it was taken from
(azimuth 0, `input_elevation`): it is the best view there is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ..base import NO_HOOKS, Stage, StageHooks, check_array
from ..cameras import ring_cameras
from ..depth.functional import inflate
from ..errors import FormatError
from ..fileio import write_json
from ..gaussians import Gaussians
from ..imageio import load_rgba, save_png
from ..settings import MultiviewSettings
from ..splatting import render_views
from .relief import relief_object

#: SyncDreamer's ring: 16 views at elevation 30, azimuth 22.5 * i, 256 px, fx = fy = 280, distance 1.5.
RING_AZIMUTHS: tuple[float, ...] = tuple(22.5 * i for i in range(16))
RING_ELEVATION = 30.0
RING_SIZE = 256
RING_DISTANCE = 1.5
#: `relief_size: 0` (auto), by device type: the relief's Gaussians per cutout side. Finer is not better:
#: with the fit's fixed steps, 192 gave higher figures on the GPU than the 256-px cutout (docs/benchmarks.md).
AUTO_RELIEF_SIZE = {"cuda": 192, "cpu": 128}


@dataclass
class MultiviewInputs:
    """The cutout.

    Attributes:
        image: [S,S,3] float32 0..1 on white.
        alpha: [S,S] float32 0..1.
    """

    image: np.ndarray
    alpha: np.ndarray


@dataclass
class Views:
    """Posed views of the object on white.

    Attributes:
        images: [V,H,W,3] float32 0..1, composited on white.
        alphas: [V,H,W] float32 0..1.
        viewmats: [V,4,4] world-to-camera (OpenCV axes); Ks: [V,3,3] pixels.
    """

    images: np.ndarray
    alphas: np.ndarray
    viewmats: np.ndarray
    Ks: np.ndarray  # noqa: N815 - gsplat's name

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class MultiviewOutputs:
    """The ring views, the input view and, from `relief`, the object they were rendered from.

    Attributes:
        ring: the 16 views on SyncDreamer's ring (azimuths `RING_AZIMUTHS`).
        input: the photo's cutout as one view with its own camera.
        gaussians: the relief object (world frame), or None for a generator without 3D.
        metrics: numbers for the stage record.
    """

    ring: Views
    input: Views
    gaussians: Gaussians | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class MultiviewStage(Stage):
    """Produce the views the reconstruction fits (module docstring)."""

    name: ClassVar[str] = "multiview"
    cameras_file: ClassVar[str] = "cameras.json"
    relief_file: ClassVar[str] = "relief.ply"

    def __init__(self, settings: MultiviewSettings, models_dir: Path | None = None) -> None:
        super().__init__(settings, models_dir)
        self._generator: Any = None

    def load(self, device: str) -> None:
        """Load SyncDreamer for the `syncdreamer` backend (raises ModelNotAvailable when its files are missing)."""
        super().load(device)
        if self.backend == "syncdreamer":
            self.require_models()
            from ..sync_dreamer import RunOptions, SyncDreamer

            options = RunOptions(precision=self.settings.precision, low_memory=self.settings.low_memory)
            self._generator = SyncDreamer.from_models_dir(self.models_dir, device=device, options=options)

    def unload(self) -> None:
        """Free the generator's device memory now."""
        if self._generator is not None:
            self._generator.unload()
        self._generator = None

    def check_inputs(self, inputs: MultiviewInputs) -> None:
        """Raise ValueError unless image [S,S,3] and alpha [S,S] float32 agree."""
        check_array("image", inputs.image, 3, np.float32, channels=3)
        check_array("alpha", inputs.alpha, 2, np.float32)
        if inputs.alpha.shape != inputs.image.shape[:2] or inputs.image.shape[0] != inputs.image.shape[1]:
            raise ValueError(f"`image` and `alpha` must be square and agree, got {list(inputs.image.shape)} and "
                             f"{list(inputs.alpha.shape)}")

    def run(self, inputs: MultiviewInputs, hooks: StageHooks = NO_HOOKS) -> MultiviewOutputs:
        """Build the ring views with the chosen backend, plus the input view."""
        self.check_inputs(inputs)
        if self.backend == "syncdreamer":
            return self._syncdreamer(inputs, hooks)
        return self._relief(inputs, hooks)

    def _relief(self, inputs: MultiviewInputs, hooks: StageHooks) -> MultiviewOutputs:
        s = self.settings
        size = inputs.image.shape[0]
        relief_size = min(size, s.relief_size or AUTO_RELIEF_SIZE[torch.device(self.device).type])
        image, alpha = inputs.image, inputs.alpha
        if relief_size != size:
            image = cv2.resize(image, (relief_size, relief_size), interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(alpha, (relief_size, relief_size), interpolation=cv2.INTER_AREA)
        hooks.report(0.05, "inflating the silhouette")
        height = inflate(alpha >= 0.5, s.relief_thickness)
        g, input_view, input_k = relief_object(
            image, alpha, height, elevation=s.input_elevation, distance=RING_DISTANCE,
            extent=s.extent, back_shade=s.back_shade, side_walls=s.side_walls, opacity=s.opacity,
            footprint=s.footprint, flatness=s.flatness)
        input_k[:2] *= size / relief_size                               # the camera of the full-size cutout
        view_size = s.view_size
        viewmats, ks = ring_cameras(RING_AZIMUTHS, RING_ELEVATION, view_size, RING_DISTANCE)
        hooks.check_stop()
        hooks.report(0.3, f"rendering the 16 ring views of {g.num} Gaussians")
        rgb, alpha, _ = render_views(g.to(self.device), viewmats, ks, view_size)
        ring = Views(rgb.clip(0, 1), alpha.clip(0, 1), viewmats.astype(np.float32), ks.astype(np.float32))
        photo = Views(inputs.image[None], inputs.alpha[None], input_view[None].astype(np.float32),
                      input_k[None].astype(np.float32))
        metrics = {"gaussians": g.num, "relief_size": relief_size, "input_focal_px": round(float(input_k[0, 0]), 3),
                   "ring_coverage": [round(float((a >= 0.5).mean()), 4) for a in ring.alphas]}
        return MultiviewOutputs(ring, photo, g, metrics)

    def _syncdreamer(self, inputs: MultiviewInputs, hooks: StageHooks) -> MultiviewOutputs:
        from PIL import Image

        s = self.settings
        hooks.report(0.02, f"SyncDreamer: {s.steps} DDIM steps x 16 views")
        rgba = np.concatenate([inputs.image, inputs.alpha[..., None]], axis=-1)
        rgba = Image.fromarray(np.rint(rgba * 255).astype(np.uint8), "RGBA")

        def on_step(step: int, total: int, *_: Any) -> None:
            hooks.check_stop()                                     # raising here ends the sampling loop
            hooks.report(0.02 + 0.9 * (step + 1) / total, f"DDIM step {step + 1}/{total}")

        views = self._generator.generate(rgba, elevation_deg=s.input_elevation, seed=s.seed, steps=s.steps,
                                         cfg_scale=s.cfg_scale, on_step=on_step)
        images = np.stack([np.asarray(v.convert("RGB"), np.float32) / 255.0 for v in views])
        viewmats, ks = ring_cameras(RING_AZIMUTHS, RING_ELEVATION, RING_SIZE, RING_DISTANCE)
        alphas = foreground_from_white(images)
        ring = Views(images, alphas, viewmats.astype(np.float32), ks.astype(np.float32))
        size = inputs.image.shape[0]
        input_view, input_k = ring_cameras([0.0], s.input_elevation, size, RING_DISTANCE)
        photo = Views(inputs.image[None], inputs.alpha[None], input_view.astype(np.float32),
                      input_k.astype(np.float32))
        return MultiviewOutputs(ring, photo, None, {
            "ring_coverage": [round(float((a >= 0.5).mean()), 4) for a in alphas],
            "batch_view_num": self._generator.batch_view_num, "precision": str(self._generator.dtype)})

    def save(self, outputs: MultiviewOutputs, directory: Path) -> dict[str, str]:
        """Write ``view_00.png`` ... (RGBA), ``input.png``, ``cameras.json`` and, from `relief`, ``relief.ply``."""
        d = Path(directory)
        written = {}
        for i, (image, alpha) in enumerate(zip(outputs.ring.images, outputs.ring.alphas)):
            written[f"view_{i:02d}"] = f"view_{i:02d}.png"
            save_png(d / written[f"view_{i:02d}"], np.concatenate([image, alpha[..., None]], axis=-1))
        save_png(d / "input.png", np.concatenate([outputs.input.images[0], outputs.input.alphas[0][..., None]], -1))
        written["input"] = "input.png"
        cameras = {"ring": _cameras(outputs.ring, RING_AZIMUTHS, RING_ELEVATION),
                   "input": _cameras(outputs.input, (0.0,), self.settings.input_elevation)}
        write_json(d / self.cameras_file, cameras)
        written["cameras"] = self.cameras_file
        if outputs.gaussians is not None:
            outputs.gaussians.save_ply(d / self.relief_file)
            written["relief"] = self.relief_file
        return written

    def load_outputs(self, directory: Path) -> MultiviewOutputs:
        """Read the views, cameras and relief back.

        Raises:
            FormatError: a missing or malformed file.
        """
        d = Path(directory)
        try:
            cameras = json.loads((d / self.cameras_file).read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"{d / self.cameras_file}: unreadable ({exc})") from exc
        ring = _load_views(d, [f"view_{i:02d}.png" for i in range(len(cameras["ring"]["viewmats"]))], cameras["ring"])
        photo = _load_views(d, ["input.png"], cameras["input"])
        relief = Gaussians.load_ply(d / self.relief_file) if (d / self.relief_file).is_file() else None
        return MultiviewOutputs(ring, photo, relief)


def foreground_from_white(images: np.ndarray, threshold: float = 0.04) -> np.ndarray:
    """Alpha [V,H,W] of objects generated on white: 1 where any channel is darker than white by `threshold`,
    softened over one pixel (generators give no alpha)."""
    import cv2

    hard = ((1.0 - images).max(axis=-1) > threshold).astype(np.float32)
    return np.stack([cv2.GaussianBlur(a, (3, 3), 0.5) for a in hard]).clip(0, 1)


def _cameras(views: Views, azimuths: tuple[float, ...], elevation: float) -> dict[str, Any]:
    return {"azimuths": list(azimuths), "elevation": elevation, "viewmats": views.viewmats.tolist(),
            "Ks": views.Ks.tolist(), "width": int(views.images.shape[2]), "height": int(views.images.shape[1])}


def _load_views(d: Path, names: list[str], cameras: dict[str, Any]) -> Views:
    images, alphas = zip(*(load_rgba(d / name) for name in names))
    try:
        viewmats = np.asarray(cameras["viewmats"], np.float32).reshape(len(names), 4, 4)
        ks = np.asarray(cameras["Ks"], np.float32).reshape(len(names), 3, 3)
    except (KeyError, ValueError) as exc:
        raise FormatError(f"{d}: cameras.json does not match the views ({exc})") from exc
    return Views(np.stack(images), np.stack(alphas), viewmats, ks)
