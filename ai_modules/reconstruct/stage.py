"""The `reconstruct` stage: the ring views + the input view (+ depth) -> fitted Gaussians (backend `fit`).

It runs the Gaussian core's `fit` over the 16 ring views and the photo's own view (which
counts `input_weight` times: it is the only real one). It starts from the object when the
multiview stage built one (the relief, or TRELLIS's Gaussians: a few hundred steps then suffice, and the photo's
weight pulls the object towards the photo), else from the visible part of the views' visual hull
(`init.from_visible_hull`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import torch

from ..base import NO_HOOKS, Backend, Stage, StageHooks
from ..depth.stage import DepthOutputs
from ..gaussians import Gaussians
from ..multiview.stage import MultiviewOutputs, Views
from .fit import PRESETS, fit
from .init import from_visible_hull
from .quality import input_view_quality

#: Steps on CUDA when starting from the relief with `iterations: 0` (auto), and views per step there
#: with `views_per_step: 0` (a small step is mostly launch overhead: 4 views cost little more than one).
RELIEF_ITERATIONS_CUDA = 150
RELIEF_VIEWS_PER_STEP_CUDA = 4
#: On the CPU a step costs roughly in proportion to the Gaussians, so `auto` spends a fixed budget of
#: Gaussian-steps within these bounds: small objects get more steps (15-25 s on 2 cores for 512-px photos;
#: a step also has a fixed part, so the smallest objects take the longest).
RELIEF_GAUSSIAN_STEPS_CPU = 1_000_000
RELIEF_ITERATIONS_CPU = (60, 250)
#: Depth pixels below this confidence are left out of the depth term.
MIN_DEPTH_CONFIDENCE = 0.3


@dataclass
class ReconstructInputs:
    """The views and their depth."""

    views: MultiviewOutputs
    depth: DepthOutputs


@dataclass
class ReconstructOutputs:
    """The fitted Gaussians (world frame, CPU) and where they started from."""

    gaussians: Gaussians
    initial: Gaussians
    metrics: dict[str, Any] = field(default_factory=dict)


class ReconstructStage(Stage):
    """Fit Gaussians to the views (module docstring)."""

    name: ClassVar[str] = "reconstruct"
    files: ClassVar[dict[str, str]] = {"gaussians": "gaussians.ply", "initial": "gaussians_init.ply"}

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> ReconstructInputs:
        """The multiview stage's views and the depth stage's depth."""
        return ReconstructInputs(outputs["multiview"], outputs["depth"])

    def check_inputs(self, inputs: ReconstructInputs) -> None:
        """Raise ValueError unless the views and depths agree."""
        v = inputs.views
        if not isinstance(v, MultiviewOutputs) or not isinstance(inputs.depth, DepthOutputs):
            raise ValueError("`inputs` must hold the multiview and depth stages' outputs")
        if inputs.depth.depth.size and inputs.depth.depth.shape != v.ring.alphas.shape:
            raise ValueError(f"depth {list(inputs.depth.depth.shape)} must match the ring views "
                             f"{list(v.ring.alphas.shape)}")

    def save(self, outputs: ReconstructOutputs, directory: Path) -> dict[str, str]:
        """Write ``gaussians.ply`` (fitted) and ``gaussians_init.ply`` (where the fit started)."""
        d = Path(directory)
        outputs.gaussians.save_ply(d / self.files["gaussians"])
        outputs.initial.save_ply(d / self.files["initial"])
        return dict(self.files)

    def load_outputs(self, directory: Path) -> ReconstructOutputs:
        """Read both .ply files back (strict reader; raises FormatError)."""
        d = Path(directory)
        return ReconstructOutputs(Gaussians.load_ply(d / self.files["gaussians"]),
                                  Gaussians.load_ply(d / self.files["initial"]))


class Fit(Backend):
    """The Gaussian core's `fit` (gsplat on CUDA, our rasterizer on the CPU). Low-memory form: one view per step."""

    def run(self, inputs: ReconstructInputs, hooks: StageHooks = NO_HOOKS) -> ReconstructOutputs:
        """Fit; report progress every 50 steps; a stop request ends the fit and raises PipelineStopped."""
        s, kind, size = self.settings, torch.device(self.device).type, self.settings.size
        d = inputs.depth
        with_depth = bool(d.depth.size) and s.depth_weight > 0
        ring = resized(inputs.views.ring, d.depth if with_depth else None, d.confidence, size)
        photo = resized(inputs.views.input, d.input_depth[None] if with_depth else None, d.input_confidence[None],
                         size)
        parts = [ring] + [photo] * s.input_weight
        images, masks, depths, viewmats, ks = (torch.from_numpy(np.concatenate([p[i] for p in parts]))
                                               for i in range(5))
        obj = inputs.views.gaussians                     # the relief or TRELLIS's object, when there is one
        initial = obj if obj is not None else from_visible_hull(
            images, masks, viewmats, ks, PRESETS[s.preset].init_points, generator=torch.Generator().manual_seed(0))
        iterations = s.iterations or (relief_iterations(kind, obj.num) if obj is not None
                                      else PRESETS[s.preset].iterations)
        densify = s.densify if s.densify != "auto" else ("none" if obj is not None else PRESETS[s.preset].densify)
        batch = 1 if self.low_memory else s.views_per_step or (
            RELIEF_VIEWS_PER_STEP_CUDA if obj is not None and kind == "cuda" else 1)
        preset = dataclasses.replace(PRESETS[s.preset], iterations=iterations, densify=densify,
                                     depth_lambda=s.depth_weight, views_per_step=batch)
        hooks.report(0.02, f"fitting {initial.num} Gaussians to {len(images)} views at {size} px, "
                           f"{iterations} steps of {batch} view(s)")
        fitted, metrics = fit(images, viewmats, ks, masks=masks, depths=depths if with_depth else None,
                              init=initial, preset=preset, device=self.device, should_stop=hooks.should_stop,
                              train_metrics=False,
                              on_step=lambda step, m: hooks.report(0.02 + 0.9 * step / iterations,
                                                                   f"step {step}/{iterations}, "
                                                                   f"{m['num_gaussians']} Gaussians"))
        hooks.check_stop()
        metrics.update(input_view_quality(fitted, inputs.views.input))
        metrics.update(size=size, views_per_step=batch, initial_gaussians=initial.num, depth_term=with_depth,
                       initial_from="multiview object" if obj is not None else "visible hull")
        return ReconstructOutputs(fitted.to("cpu"), initial, metrics)


def relief_iterations(device_type: str, num_gaussians: int) -> int:
    """Fitting steps from the relief for `iterations: 0` (auto): fixed on CUDA; on the CPU a budget of
    Gaussian-steps, so the fit takes about the same time whatever the object's size."""
    if device_type == "cuda":
        return RELIEF_ITERATIONS_CUDA
    low, high = RELIEF_ITERATIONS_CPU
    return int(min(max(round(RELIEF_GAUSSIAN_STEPS_CPU / max(num_gaussians, 1)), low), high))


def resized(views: Views, depth: np.ndarray | None, confidence: np.ndarray, size: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images, masks, depths with NaN where not confident (all NaN without depth), viewmats, Ks) at `size`."""
    scale = size / views.images.shape[2]
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR

    def rs(a: np.ndarray) -> np.ndarray:
        return a if a.shape[1] == size else cv2.resize(a, (size, size), interpolation=interp)

    images = np.stack([rs(x) for x in views.images]).astype(np.float32)
    masks = np.stack([rs(x) for x in views.alphas]).astype(np.float32)
    if depth is None:
        depths = np.full(masks.shape, np.nan, np.float32)
    else:
        conf = np.stack([rs(x) for x in confidence])
        depths = np.stack([rs(x) for x in depth]).astype(np.float32)
        depths = np.where(conf >= MIN_DEPTH_CONFIDENCE, depths, np.nan).astype(np.float32)
    ks = views.Ks.copy()
    ks[:, :2] *= scale
    return images, masks, depths, views.viewmats.astype(np.float32), ks.astype(np.float32)
