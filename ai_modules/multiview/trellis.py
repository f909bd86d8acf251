"""The `multiview` stage's `trellis` backend: the cutout -> TRELLIS-image-large's 3D Gaussians, rendered on the ring.

Why a multiview backend and not a `reconstruct` one: TRELLIS gives the object itself, as the `relief` does, and the
stages after it already know what to do with an object (`MultiviewOutputs.gaussians`): `depth` stays off, the
ring views are its renders for `enhance` and `refine`, and `reconstruct` starts from it and runs a short fit in
which the photo's own view counts `input_weight` times, so the result stays faithful to the photo. As a
`reconstruct` backend it would have needed SyncDreamer's views first, which it does not use.

TRELLIS builds the object in its canonical pose, not the photo's, so the photo's camera is searched for
(`photo_pose.search_pose`) and the object turned so the photo's azimuth is 0, the world convention (ARCHITECTURE.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..base import NO_HOOKS, Backend, StageHooks
from ..cameras import SYNCDREAMER_RING
from ..geometry import yaw_matrix
from ..residency import module_bytes
from ..splatting import render_views
from .backends import ring_coverage
from .photo_pose import search_pose
from .stage import MultiviewInputs, MultiviewOutputs, Views

if TYPE_CHECKING:                                  # torch-heavy modules are imported when the backend loads
    from ..trellis.pipeline import TrellisModels, TrellisSettings

#: The two model entries (ai_modules.models) this backend reads.
PIPELINE_MODEL, DINOV2_MODEL = "trellis-image-large", "dinov2-vitl14-reg"


@dataclass
class LoadedTrellis:
    """The five networks (on the backend's device, or on the CPU in the low-memory form), the settings of the
    published pipeline.json, and the precision they were built in."""

    models: TrellisModels
    settings: TrellisSettings
    precision: str


class Trellis(Backend):
    """Learned: TRELLIS-image-large (`ai_modules.trellis`), image -> sparse structure -> structured latent -> 32
    Gaussians per occupied voxel, then the ring views rendered from them (module docstring).

    Low-memory form: the networks stay in CPU memory and each is on the GPU only while it runs."""

    def precision(self) -> str:
        """`multiview.precision` on this device: `auto` is the published fp16 torso on CUDA and fp32 on the CPU;
        `bf16` runs fp32 weights under bf16 autocast."""
        p = self.settings.precision
        if p == "auto":
            return "fp16" if self.device.startswith("cuda") else "fp32"
        return p

    def load_model(self) -> LoadedTrellis:
        """Read pipeline.json, the four checkpoints and DINOv2 (meta-built, strict), onto the device."""
        from ..trellis.loading import load_trellis

        paths = {m.name: m.path for m in self.require_models()}
        precision = self.precision()
        models, settings = load_trellis(paths[PIPELINE_MODEL], paths[DINOV2_MODEL], fp16=precision == "fp16")
        loaded = LoadedTrellis(models, settings, precision)
        self._place(loaded, "cpu" if self.low_memory else self.device)
        return loaded

    @staticmethod
    def _place(loaded: LoadedTrellis, device: str) -> None:
        for module in loaded.models.modules():
            module.to(device)

    def prepare(self, device: str, low_memory: bool = False) -> None:
        """Load or reuse the networks, then place them for the requested form (no file is read again)."""
        super().prepare(device, low_memory)
        self._place(self.model, "cpu" if low_memory else device)

    def model_bytes(self, model: LoadedTrellis) -> int:
        """All five networks' parameters and buffers (0 in the low-memory form: they place themselves)."""
        return 0 if self.low_memory else sum(module_bytes(m) for m in model.models.modules())

    def move(self, device: str) -> None:
        """Move the networks (the low-memory form keeps them in CPU memory anyway)."""
        self._place(self.model, "cpu" if self.low_memory else device)

    def run(self, inputs: MultiviewInputs, hooks: StageHooks = NO_HOOKS) -> MultiviewOutputs:
        """Generate the object, find the photo's camera, turn the object to the world convention, render the ring."""
        from PIL import Image

        from ..trellis.gs_decoder import to_world
        from ..trellis.pipeline import run as trellis_run

        s, loaded = self.settings, self.model
        settings = loaded.settings
        if s.trellis_steps:
            settings = replace(settings, ss_sampler=replace(settings.ss_sampler, steps=s.trellis_steps),
                               slat_sampler=replace(settings.slat_sampler, steps=s.trellis_steps))
        settings = replace(settings, seed=s.seed)
        total = settings.ss_sampler.steps + settings.slat_sampler.steps
        done = {"sparse structure": 0, "structured latent": settings.ss_sampler.steps}

        def on_step(phase: str, step: int, steps: int) -> None:
            hooks.check_stop()                                    # raising here ends the sampling loop
            hooks.report(0.02 + 0.78 * (done[phase] + step) / total, f"TRELLIS {phase}: step {step}/{steps}")

        rgba = np.concatenate([inputs.image, inputs.alpha[..., None]], axis=-1)
        rgba = Image.fromarray(np.rint(rgba * 255).astype(np.uint8), "RGBA")
        device_type = torch.device(self.device).type
        autocast = (torch.autocast(device_type, dtype=torch.bfloat16) if loaded.precision == "bf16"
                    else contextlib.nullcontext())
        hooks.report(0.02, f"TRELLIS: {settings.ss_sampler.steps} + {settings.slat_sampler.steps} flow steps "
                           f"({loaded.precision})")
        with autocast:
            result = trellis_run(loaded.models, rgba, settings, self.device, on_step=on_step,
                                 offload=self.low_memory)
        g = to_world(result.gaussians).to(self.device)
        hooks.check_stop()
        hooks.report(0.82, f"finding the photo's camera for {g.num} Gaussians")
        ring = SYNCDREAMER_RING
        pose = search_pose(g, inputs.image, inputs.alpha, ring.distance)
        g = g.rotated(yaw_matrix(-pose.azimuth)) if pose.azimuth else g
        photo_view = _turned(pose.viewmat, pose.azimuth)
        hooks.report(0.9, f"rendering the 16 ring views of {g.num} Gaussians")
        viewmats, ks = ring.cameras(s.view_size)
        rgb, alpha, _ = render_views(g, viewmats, ks, s.view_size)
        photo = Views(inputs.image[None], inputs.alpha[None], photo_view[None], pose.K[None])
        metrics = {"gaussians": g.num, "voxels": int(result.coords.shape[0]), "precision": loaded.precision,
                   "low_memory": self.low_memory, "steps": [settings.ss_sampler.steps, settings.slat_sampler.steps],
                   "photo_azimuth": pose.azimuth, "photo_elevation": pose.elevation,
                   "photo_silhouette_iou": round(pose.iou, 4), "input_focal_px": round(float(pose.K[0, 0]), 3),
                   "ring_coverage": ring_coverage(alpha)}
        return MultiviewOutputs(Views(rgb.clip(0, 1), alpha.clip(0, 1), viewmats, ks), photo, g.to("cpu"), metrics)


def _turned(viewmat: np.ndarray, azimuth: float) -> np.ndarray:
    """The world-to-camera matrix of the same camera after the world turned by -`azimuth` about Z (so a camera
    found at `azimuth` ends at azimuth 0)."""
    turn = np.eye(4)
    turn[:3, :3] = yaw_matrix(-azimuth).numpy()
    return (viewmat.astype(np.float64) @ np.linalg.inv(turn)).astype(np.float32)

