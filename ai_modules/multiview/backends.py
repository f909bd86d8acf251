"""The `multiview` stage's backends: the cutout -> posed views on SyncDreamer's ring, with their cameras.

Each returns its own cameras (`Views.viewmats`/`Ks`): the relief the ring it rendered, SyncDreamer the
checkpoint's own 16 cameras (`SyncDreamer.cameras()`). Nothing downstream rebuilds them.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from ..base import NO_HOOKS, Backend, StageHooks
from ..cameras import SYNCDREAMER_RING, Ring
from ..depth.functional import inflate
from ..residency import module_bytes
from ..splatting import render_views
from .relief import relief_object
from .stage import MultiviewInputs, MultiviewOutputs, Views

#: `relief_size: 0` (auto), by device type: the relief's Gaussians per cutout side. Finer is not better:
#: with the fit's fixed steps, 192 gave higher figures on the GPU than the 256-px cutout (docs/benchmarks.md).
AUTO_RELIEF_SIZE = {"cuda": 192, "cpu": 128}


def input_camera(elevation: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The photo's camera as SyncDreamer assumes it: azimuth 0 at `elevation`, on the ring's distance and field
    of view; viewmats [1,4,4], Ks [1,3,3] for a cutout of side `size`."""
    ring = SYNCDREAMER_RING
    return Ring((0.0,), elevation, ring.distance, ring.size, ring.focal).cameras(size)


def ring_coverage(alphas: np.ndarray) -> list[float]:
    return [round(float((a >= 0.5).mean()), 4) for a in alphas]


class Relief(Backend):
    """Embedded: a closed relief of Gaussians built from the cutout (`relief.relief_object`), rendered on the
    ring; the relief itself is passed on, so `reconstruct` can start from it."""

    def run(self, inputs: MultiviewInputs, hooks: StageHooks = NO_HOOKS) -> MultiviewOutputs:
        """Lift the cutout and render the ring views."""
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
            image, alpha, height, elevation=s.input_elevation, distance=SYNCDREAMER_RING.distance,
            extent=s.extent, back_shade=s.back_shade, side_walls=s.side_walls, opacity=s.opacity,
            footprint=s.footprint, flatness=s.flatness)
        input_k[:2] *= size / relief_size                               # the camera of the full-size cutout
        viewmats, ks = SYNCDREAMER_RING.cameras(s.view_size)
        hooks.check_stop()
        hooks.report(0.3, f"rendering the 16 ring views of {g.num} Gaussians")
        rgb, alpha, _ = render_views(g.to(self.device), viewmats, ks, s.view_size)
        ring = Views(rgb.clip(0, 1), alpha.clip(0, 1), viewmats, ks)
        photo = Views(inputs.image[None], inputs.alpha[None], input_view[None].astype(np.float32),
                      input_k[None].astype(np.float32))
        metrics = {"gaussians": g.num, "relief_size": relief_size, "input_focal_px": round(float(input_k[0, 0]), 3),
                   "ring_coverage": ring_coverage(ring.alphas)}
        return MultiviewOutputs(ring, photo, g, metrics)


class SyncDreamerViews(Backend):
    """Learned: SyncDreamer's 16 views (`ai_modules.sync_dreamer`); the loaded network is the cached model.

    Low-memory form: 2-view chunks, CLIP and the VAE on the GPU only while they run (`RunOptions.low_memory`);
    switching form re-places the loaded network, it does not read the checkpoint again.
    """

    def _options(self) -> Any:
        from ..sync_dreamer import RunOptions

        return RunOptions(precision=self.settings.precision, low_memory=self.low_memory)

    def precision(self) -> str:
        """`multiview.precision` as resolved on the device (bf16 on CUDA for `auto`)."""
        from ..sync_dreamer.speed import resolve_dtype

        return str(resolve_dtype(self.settings.precision, torch.device(self.device)))

    def load_model(self) -> Any:
        """Read the checkpoint (memory-mapped into a meta-built network) onto the device."""
        from ..sync_dreamer import SyncDreamer

        return SyncDreamer.from_models_dir(self.models_dir, device=self.device, options=self._options())

    def prepare(self, device: str, low_memory: bool = False) -> None:
        """Load or reuse the network, then place it for the requested form."""
        super().prepare(device, low_memory)
        if self.model.options.low_memory != low_memory:
            self._place(device)

    def _place(self, device: str) -> None:
        from ..sync_dreamer import SyncDreamer

        self.cache.replace(SyncDreamer(self.model.model, device, self._options()))

    def model_bytes(self, model: Any) -> int:
        """The whole network's parameters and buffers."""
        return module_bytes(model.model)

    def move(self, device: str) -> None:
        """To the CPU: `SyncDreamer.unload`; back: placed again for the current form."""
        if device == "cpu":
            self.model.unload()
        else:
            self._place(device)

    def run(self, inputs: MultiviewInputs, hooks: StageHooks = NO_HOOKS) -> MultiviewOutputs:
        """Generate the 16 views; their cameras are the checkpoint's."""
        from PIL import Image

        from .stage import foreground_from_white

        s, generator = self.settings, self.model
        hooks.report(0.02, f"SyncDreamer: {s.steps} DDIM steps x 16 views")
        rgba = np.concatenate([inputs.image, inputs.alpha[..., None]], axis=-1)
        rgba = Image.fromarray(np.rint(rgba * 255).astype(np.uint8), "RGBA")

        def on_step(step: int, total: int, *_: Any) -> None:
            hooks.check_stop()                                     # raising here ends the sampling loop
            hooks.report(0.02 + 0.9 * (step + 1) / total, f"DDIM step {step + 1}/{total}")

        views = generator.generate(rgba, elevation_deg=s.input_elevation, seed=s.seed, steps=s.steps,
                                   cfg_scale=s.cfg_scale, on_step=on_step)
        images = np.stack([np.asarray(v.convert("RGB"), np.float32) / 255.0 for v in views])
        viewmats, ks = (t.numpy().astype(np.float32) for t in generator.cameras())
        ks = ks * np.array([[images.shape[2] / 256.0], [images.shape[1] / 256.0], [1.0]], np.float32)
        alphas = foreground_from_white(images)
        ring = Views(images, alphas, viewmats, ks)
        input_view, input_k = input_camera(s.input_elevation, inputs.image.shape[0])
        photo = Views(inputs.image[None], inputs.alpha[None], input_view, input_k)
        return MultiviewOutputs(ring, photo, None, {
            "ring_coverage": ring_coverage(alphas), "batch_view_num": generator.batch_view_num,
            "precision": str(generator.dtype), "low_memory": self.low_memory})
