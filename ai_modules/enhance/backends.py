"""The `enhance` stage's backends: one render of the fitted Gaussians -> a better image of that view.

They share `EnhanceBackend.run` (render the ring's views from the cameras the multiview stage returned,
then enhance them, one by one or in batches) and differ in `enhance_view(s)`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import NO_HOOKS, Backend, StageHooks
from ..multiview.stage import Views
from ..residency import module_bytes
from ..splatting import render_views
from .classical import enhance_classical
from .stage import EnhanceInputs, EnhanceOutputs


class EnhanceBackend(Backend):
    """Render the ring views of the fitted Gaussians and enhance each; subclasses enhance one."""

    def enhance_view(self, rgb: np.ndarray, alpha: np.ndarray, depth: np.ndarray,
                     inputs: EnhanceInputs) -> np.ndarray:  # pragma: no cover - overridden
        """[H,W,3] float32 0..1 enhanced image of one render (rgb on white, alpha, camera z depth)."""
        raise NotImplementedError

    def enhance_views(self, rgbs: np.ndarray, alphas: np.ndarray, depths: np.ndarray, inputs: EnhanceInputs,
                      hooks: StageHooks) -> list[np.ndarray]:
        """Every render enhanced, one by one (progress and stop checks between views); a learned backend may
        batch them."""
        out = []
        for i, (rgb, alpha, depth) in enumerate(zip(rgbs, alphas, depths)):
            hooks.check_stop()
            hooks.report(0.1 + 0.9 * i / len(rgbs), f"view {i + 1}/{len(rgbs)}")
            out.append(self.enhance_view(rgb, alpha, depth, inputs))
        return out

    def run(self, inputs: EnhanceInputs, hooks: StageHooks = NO_HOOKS) -> EnhanceOutputs:
        """Render the ring's views at `size` on their own cameras, then enhance them (progress and stop checks)."""
        size, ring = self.settings.size, inputs.views.ring
        ks = ring.Ks.copy()
        ks[:, 0] *= size / ring.images.shape[2]
        ks[:, 1] *= size / ring.images.shape[1]
        viewmats = ring.viewmats.astype(np.float32)
        rgbs, alphas, depths = render_views(inputs.gaussians.to(self.device), viewmats, ks, size)
        rgbs, alphas = rgbs.clip(0, 1), alphas.clip(0, 1)
        depths = np.where(alphas > 0.05, depths, 0.0).astype(np.float32)
        enhanced = self.enhance_views(rgbs, alphas, depths, inputs, hooks)
        views = Views(np.stack(enhanced), alphas.astype(np.float32), viewmats, ks.astype(np.float32))
        change = float(np.abs(views.images - rgbs).mean())
        return EnhanceOutputs(views, depths, {"views": len(enhanced), "mean_abs_change": round(change, 5)})


class Classical(EnhanceBackend):
    """Embedded: colour matching to the photo and an unsharp mask (`classical.py`)."""

    def enhance_view(self, rgb: np.ndarray, alpha: np.ndarray, depth: np.ndarray,
                     inputs: EnhanceInputs) -> np.ndarray:
        """`enhance_classical` against the input photo."""
        photo = inputs.views.input
        return enhance_classical(rgb, alpha, photo.images[0], photo.alphas[0], self.settings.detail)


#: SDXL-Lightning views per pass on CUDA, and the free memory one more view in a pass needs (1024 px, fp16).
MAX_BATCH = 4
BATCH_BYTES = 6 * 2**30


class SDXLLightning(EnhanceBackend):
    """Learned: depth-guided SDXL-Lightning + ControlNet (`ai_modules.diffusion.EnhanceService`), the service
    being the cached model. Low-memory form: sequential CPU offload with VAE slicing and tiling."""

    def precision(self) -> str:
        """fp16 on CUDA; the low-memory form loads differently (offload hooks), so it is part of the key."""
        return super().precision() + ("+offload" if self.low_memory else "")

    def load_model(self) -> Any:
        """Read the three models (UNet, ControlNet, SDXL base) onto the device."""
        from ..diffusion import EnhanceService

        return EnhanceService(device=self.device, models_dir=self.models_dir, resolution=self.settings.resolution,
                              low_memory=self.low_memory).load()

    def model_bytes(self, model: Any) -> int:
        """Every component's weights (0 with offload: the hooks keep one model on the GPU at a time)."""
        if model.low_memory:
            return 0
        pipe = model.pipeline
        return module_bytes(*(getattr(pipe, n, None) for n in ("unet", "controlnet", "vae", "text_encoder",
                                                                "text_encoder_2")))

    def move(self, device: str) -> None:
        """Move the whole diffusers pipeline (not in the offload form, which places itself)."""
        if not self.model.low_memory:
            self.model.pipeline.to(device)

    def release(self) -> None:
        """Remove offload hooks and drop the pipeline."""
        if self.model is not None:
            self.model.unload()
        super().release()

    def batch_size(self) -> int:
        """Views per pass: 1 in the low-memory form and on the CPU; on CUDA up to `MAX_BATCH`, as many as
        `BATCH_BYTES` each fit in the card's free memory."""
        if self.low_memory or not self.device.startswith("cuda"):
            return 1
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(self.device))
        return int(max(1, min(MAX_BATCH, free // BATCH_BYTES)))

    def enhance_views(self, rgbs: np.ndarray, alphas: np.ndarray, depths: np.ndarray, inputs: EnhanceInputs,
                      hooks: StageHooks) -> list[np.ndarray]:
        """img2img from each render at `strength`, guided by its nearness map, `batch_size()` views per pass;
        outside the object the render."""
        from PIL import Image

        s, batch = self.settings, self.batch_size()
        out: list[np.ndarray] = []
        for start in range(0, len(rgbs), batch):
            hooks.check_stop()
            hooks.report(0.1 + 0.9 * start / len(rgbs), f"views {start + 1}-{min(start + batch, len(rgbs))}"
                                                         f"/{len(rgbs)}")
            chunk = range(start, min(start + batch, len(rgbs)))
            nearness = [np.where(alphas[i] > 0.05, 1.0 / np.maximum(depths[i], 1e-3), 0.0) for i in chunk]
            results = self.model.enhance_many([Image.fromarray(np.rint(rgbs[i] * 255).astype(np.uint8)) for i in chunk],
                                              nearness, s.prompt, strength=s.strength, seed=s.seed, batch_size=batch)
            for i, result in zip(chunk, results):
                enhanced = np.asarray(result.convert("RGB"), dtype=np.float32) / 255.0
                out.append(np.where(alphas[i][..., None] >= 0.5, enhanced, rgbs[i]).astype(np.float32))
        return out
