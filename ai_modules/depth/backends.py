"""The `depth` stage's backends: one view -> relative depth (larger = nearer) + confidence.

They share `DepthBackend.run` (every ring view, then the input view, with progress and stop checks) and
differ in `estimate`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import NO_HOOKS, Backend, StageHooks
from ..multiview.stage import MultiviewOutputs
from ..residency import module_bytes
from . import functional as F
from .stage import DepthOutputs


class DepthBackend(Backend):
    """Depth of every view; subclasses estimate one."""

    def estimate(self, image: np.ndarray, alpha: np.ndarray, mask: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - overridden or not used
        """(depth, confidence) [H,W] float32 of one view whose object `mask` is not empty."""
        raise NotImplementedError

    def estimate_all(self, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]], hooks: StageHooks
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(depth, confidence) of each ``(image, alpha, mask)``: view by view, with progress and stop checks;
        a learned backend may batch them instead."""
        out = []
        for i, (image, alpha, mask) in enumerate(views):
            hooks.check_stop()
            hooks.report((i + 1) / (len(views) + 1), f"view {i + 1}/{len(views)}")
            out.append(self.estimate(image, alpha, mask))
        return out

    def run(self, inputs: MultiviewOutputs, hooks: StageHooks = NO_HOOKS) -> DepthOutputs:
        """Estimate depth and confidence of every view with an object (zeros for an empty view)."""
        views = [(img, a) for img, a in zip(inputs.ring.images, inputs.ring.alphas)]
        views.append((inputs.input.images[0], inputs.input.alphas[0]))
        masks = [alpha >= 0.5 for _, alpha in views]
        found = [i for i, m in enumerate(masks) if m.any()]
        estimates = dict(zip(found, self.estimate_all([(*views[i], masks[i]) for i in found], hooks)))
        depths, confidences = [], []
        for i, (_, alpha) in enumerate(views):
            depth, confidence = estimates.get(i, (np.zeros_like(alpha), np.zeros_like(alpha)))
            depths.append(depth)
            confidences.append(confidence)
        ring_depth, ring_conf = np.stack(depths[:-1]), np.stack(confidences[:-1])
        metrics = {"views": len(views), "mean_confidence": round(float(np.mean(
            [c[a >= 0.5].mean() if (a >= 0.5).any() else 0.0 for (_, a), c in zip(views, confidences)])), 4)}
        return DepthOutputs(ring_depth, ring_conf, depths[-1], confidences[-1], metrics)


class Inflation(DepthBackend):
    """Embedded: silhouette inflation of the view's mask, optionally shaded; confidence from the rim."""

    def estimate(self, image: np.ndarray, alpha: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inflate the mask (`functional.inflate`); confidence ramps up from the silhouette."""
        ys, xs = np.nonzero(mask)
        long_side = float(max(np.ptp(ys), np.ptp(xs)) + 1)
        height = F.shade(F.inflate(mask, self.settings.thickness), image, mask, self.settings.shading)
        return height, F.rim_confidence(mask, self.settings.confidence_ramp * long_side)


#: DPT's batch (views per forward pass): on CUDA all 17 views and their mirror images in three passes.
BATCH = {True: 12, False: 4}


class DPT(DepthBackend):
    """Learned: MiDaS/DPT (`ai_modules.midas_depth`); the estimator is the cached model."""

    def load_model(self) -> Any:
        """Read the snapshot onto the device (fp16 on CUDA)."""
        from ..midas_depth import DepthEstimator

        return DepthEstimator(self.models_dir, device=self.device, batch_size=BATCH[self.device.startswith("cuda")])

    def model_bytes(self, model: Any) -> int:
        """The network's parameters and buffers."""
        return module_bytes(model.model)

    def move(self, device: str) -> None:
        """Move the network (the estimator feeds it on its `device`)."""
        import torch

        self.model.model.to(device)
        self.model.device = torch.device(device)

    def estimate_all(self, views: list[tuple[np.ndarray, np.ndarray, np.ndarray]], hooks: StageHooks
                     ) -> list[tuple[np.ndarray, np.ndarray]]:
        """All views and their mirror images in batches (`predict_with_confidence`): inverse depth inside
        each mask, and its confidence."""
        hooks.check_stop()
        hooks.report(0.1, f"{len(views)} views and their mirror images in batches of {self.model.batch_size}")
        out = self.model.predict_with_confidence([v[0] for v in views], [v[2] for v in views])
        return [(np.where(mask, depth, 0.0).astype(np.float32), conf.astype(np.float32))
                for (_, _, mask), (depth, conf) in zip(views, out)]
