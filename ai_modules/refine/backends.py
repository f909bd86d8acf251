"""The `refine` stage's backend `mvcrm`: gate the enhanced views, then back-project what is trusted.

Per enhanced view, the trusted pixels are those every gate that can run keeps (`gates.py`):
coverage (always), multi-view agreement (always, unless `agreement_neighbours: 0`), depth (with the
DPT files), features (with the DINOv2 files). A gate that cannot run is off and the record says why.
A view whose gates keep less than `min_view_share` of its covered pixels is skipped, with the reason.
The photo is trusted wherever it and the render both show the object, at `input_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..base import NO_HOOKS, Backend, StageHooks
from ..models import model_status
from ..multiview.stage import Views
from ..reconstruct.stage import resized
from ..residency import module_bytes
from ..splatting import render_views
from . import gates
from .mvcrm import BackProjection, Targets, refine
from .stage import RefineInputs, RefineOutputs


@dataclass
class GateModels:
    """The learned gates' models, each None when its files are absent or its gate is switched off."""

    features: Any = None
    depth: Any = None


class MVCRM(Backend):
    """Multi-view consistency refinement (module docstring); its model is the learned gates' `GateModels`."""

    def model_names(self) -> tuple[str, ...]:
        """The optional files it will use: those present whose gate is on (the cache key follows them, so a
        newly pulled DINOv2 is picked up by the next job)."""
        wanted = {"dinov2": self.settings.feature_gate, "dpt-hybrid-midas": self.settings.depth_gate}
        return tuple(name for name, on in wanted.items() if on and model_status(name, self.models_dir).present)

    def load_model(self) -> GateModels:
        """DINOv2 (through timm) and DPT, those of `model_names`."""
        names = self.model_names()
        models = GateModels()
        if "dinov2" in names:
            from .features import load_dinov2

            models.features = load_dinov2(model_status("dinov2", self.models_dir).path, self.device)
        if "dpt-hybrid-midas" in names:
            from ..midas_depth import DepthEstimator

            models.depth = DepthEstimator(self.models_dir, device=self.device,
                                          batch_size=16 if self.device.startswith("cuda") else 4)
        return models

    def model_bytes(self, model: GateModels) -> int:
        """Both networks' parameters and buffers."""
        return module_bytes(*(m for m in (model.features, model.depth and model.depth.model) if m is not None))

    def move(self, device: str) -> None:
        """Move both networks."""
        if self.model.features is not None:
            self.model.features.to(device)
        if self.model.depth is not None:
            self.model.depth.model.to(device)
            self.model.depth.device = torch.device(device)

    def run(self, inputs: RefineInputs, hooks: StageHooks = NO_HOOKS) -> RefineOutputs:
        """Gate the enhanced views, back-project them with the photo, keep the rounds that help."""
        views = inputs.enhanced.views
        if views is None:
            return RefineOutputs(inputs.gaussians, {"skipped": True, "gaussians": inputs.gaussians.num,
                                                    "reason": "no enhanced views (enhance.backend is none)"})
        s, dev = self.settings, self.device
        hooks.report(0.02, f"gating {len(views)} enhanced views")
        g = inputs.gaussians.to(dev)
        size = views.images.shape[1]
        viewmats = torch.as_tensor(views.viewmats, dtype=torch.float32, device=dev)
        ks = torch.as_tensor(views.Ks, dtype=torch.float32, device=dev)
        rgb, alpha, depth = (torch.as_tensor(a, device=dev) for a in render_views(g, views.viewmats, views.Ks, size))
        enhanced = torch.as_tensor(views.images, dtype=torch.float32, device=dev)
        trusted, record = self.gate(enhanced, rgb.clamp(0, 1), alpha, depth, viewmats, ks)
        hooks.check_stop()
        train, validation, skipped = self.split(enhanced, trusted, viewmats, ks, record)
        photo = self.photo_targets(g, inputs.views, size) if inputs.views is not None else None
        if photo is not None:
            train.append(photo)
        if all(float(t.weights.sum()) == 0 for t in train):
            return RefineOutputs(inputs.gaussians, {"skipped": True, "gaussians": inputs.gaussians.num,
                                                    "reason": "the gates trusted no view", "gates": record})
        config = BackProjection(relaxation=s.relaxation, prior=s.prior, opacity_lr=s.opacity_lr, scale_lr=s.scale_lr,
                                scale_trust=s.scale_trust,
                                chunk=len(views) if dev.startswith("cuda") else 4)
        refined, result = refine(g, train, validation if s.validation_every else None, rounds=s.rounds, config=config,
                                 min_gain=s.min_gain, should_stop=hooks.should_stop,
                                 on_round=lambda k, n: hooks.report(0.1 + 0.88 * k / max(n, 1), f"round {k}/{n}"))
        hooks.check_stop()
        metrics = {"gaussians": refined.num, "rounds": result.rounds, "rounds_max": s.rounds,
                   "validation_psnr": result.validation_psnr, "changed_gaussians": result.changed,
                   "mean_colour_change": result.mean_colour_change, "seconds": result.seconds,
                   "views_used": len(views) - len(skipped), "views_skipped": skipped, "gates": record,
                   "photo": photo is not None}
        if result.rounds == 0:
            metrics["kept"] = ("the fitted Gaussians: no round improved the left-out views by min_gain"
                               if result.validation_psnr else "the fitted Gaussians: no trusted view was left out "
                                                               "to check a gain on")
        return RefineOutputs(refined.to("cpu"), metrics)

    def gate(self, enhanced: torch.Tensor, rendered: torch.Tensor, alpha: torch.Tensor, depth: torch.Tensor,
             viewmats: torch.Tensor, ks: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """The trusted pixels [V,H,W] and, per gate, whether it ran (or why not) and the share it kept."""
        s = self.settings
        covered = gates.coverage(alpha)
        trusted = covered.clone()
        record: dict[str, Any] = {"coverage": {"on": True, "pixels": [int(c.sum()) for c in covered]}}

        def keep(name: str, mask: torch.Tensor, **extra: Any) -> None:
            nonlocal trusted
            trusted = trusted & mask
            record[name] = {"on": True, "kept": [round(_share(m, covered[i]), 3) for i, m in enumerate(mask)], **extra}

        if s.agreement_neighbours > 0 and len(enhanced) > 1:
            agree, seen = gates.multiview_agreement(enhanced, depth, covered, viewmats, ks,
                                                    neighbour_count=s.agreement_neighbours,
                                                    tolerance=s.agreement_tolerance)
            keep("multiview", agree, seen=[round(_share(m, covered[i]), 3) for i, m in enumerate(seen)])
        else:
            record["multiview"] = {"on": False, "why": "agreement_neighbours is 0" if len(enhanced) > 1
                                   else "one view has no neighbours"}
        model = self.model
        if model is not None and model.depth is not None:
            predicted = model.depth.predict([np.rint(e * 255).astype(np.uint8) for e in enhanced.cpu().numpy()])
            masks, fits = [], []
            for i, inv in enumerate(predicted):
                m, fit = gates.depth_agreement(torch.as_tensor(inv, device=depth.device), depth[i], covered[i],
                                               s.depth_tolerance)
                masks.append(m)
                fits.append(None if fit is None else round(fit.scale, 4))
            keep("depth", torch.stack(masks), scale=fits)
        else:
            record["depth"] = {"on": False, "why": self._off_reason("depth_gate", "dpt-hybrid-midas")}
        if model is not None and model.features is not None:
            from .features import feature_similarity, patch_features

            similarity = feature_similarity(patch_features(model.features, enhanced),
                                            patch_features(model.features, rendered), enhanced.shape[1:3])
            keep("features", gates.feature_agreement(similarity.to(covered.device), covered, s.feature_threshold))
        else:
            record["features"] = {"on": False, "why": self._off_reason("feature_gate", "dinov2")}
        record["trusted"] = [round(_share(t, covered[i]), 3) for i, t in enumerate(trusted)]
        return trusted, record

    def _off_reason(self, setting: str, model: str) -> str:
        if not getattr(self.settings, setting):
            return f"refine.{setting} is false"
        status = model_status(model, self.models_dir)
        return f"{model} not found at {status.path} (`glimpsed models pull {model}`)"

    def split(self, enhanced: torch.Tensor, trusted: torch.Tensor, viewmats: torch.Tensor, ks: torch.Tensor,
              record: dict[str, Any]) -> tuple[list[Targets], list[Targets], dict[int, str]]:
        """Training and left-out targets of the enhanced views; skipped views (index -> why) get no weight."""
        s = self.settings
        covered = record["coverage"]["pixels"]
        skipped: dict[int, str] = {}
        weights = trusted.float()
        for i, share in enumerate(record["trusted"]):
            if covered[i] == 0:
                skipped[i] = "the Gaussians cover nothing in this view"
            elif share < s.min_view_share:
                worst = min((n for n in ("multiview", "depth", "features") if record[n]["on"]),
                            key=lambda n: record[n]["kept"][i], default="coverage")
                skipped[i] = (f"gates kept {share:.0%} of its covered pixels (< {s.min_view_share:.0%}); the "
                              f"{worst} gate kept {record[worst]['kept'][i]:.0%}" if worst != "coverage" else
                              f"gates kept {share:.0%} of its covered pixels")
            if i in skipped:
                weights[i] = 0.0
        every = s.validation_every
        held = [i for i in range(len(enhanced)) if every and len(enhanced) >= 2 * every and i % every == every // 2
                and i not in skipped]
        rest = [i for i in range(len(enhanced)) if i not in held]
        targets = Targets(enhanced, weights, viewmats, ks)
        return [targets.select(rest)], [targets.select(held)] if held else [], skipped

    def photo_targets(self, g: Any, views: Any, size: int) -> Targets | None:
        """The photo at `size`, trusted where it and the render both show the object, weighted `input_weight`."""
        if self.settings.input_weight <= 0:
            return None
        photo: Views = views.input
        images, masks, _, viewmats, ks = resized(photo, None, np.zeros_like(photo.alphas), size)
        _, alpha, _ = render_views(g, viewmats, ks, size)
        covered = gates.coverage(torch.as_tensor(alpha), torch.as_tensor(masks))
        dev = self.device
        return Targets(torch.as_tensor(images, device=dev), covered.float().to(dev) * self.settings.input_weight,
                       torch.as_tensor(viewmats, device=dev), torch.as_tensor(ks, device=dev))


def _share(mask: torch.Tensor, of: torch.Tensor) -> float:
    total = int(of.sum())
    return float((mask & of).sum()) / total if total else 0.0
