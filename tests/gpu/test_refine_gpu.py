"""MVCRM on CUDA: the back-projection through gsplat gives the CPU renderer's answer, and the backend with
both learned gates (tiny DINOv2 and DPT, fp16) refines on the card."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ai_modules.cameras import SYNCDREAMER_RING, intrinsics, orbit_camera
from ai_modules.enhance.stage import EnhanceOutputs
from ai_modules.multiview.stage import MultiviewOutputs, Views
from ai_modules.refine.backends import MVCRM
from ai_modules.refine.mvcrm import BackProjection, Targets, back_project
from ai_modules.refine.stage import RefineInputs
from ai_modules.settings import parse_settings
from ai_modules.splatting import render, render_views
from tests.gaussian_scenes import textured_ball

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _extensions_dir(tmp_path_factory):
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def test_one_round_through_gsplat_matches_the_cpu_renderer():
    truth, coarse = textured_ball(), textured_ball()
    coarse.sh_dc *= 0.5
    viewmats, ks = (torch.as_tensor(a, dtype=torch.float32) for a in SYNCDREAMER_RING.cameras(64))
    target = render(truth, viewmats, ks, 64, 64).rgb
    weights = (render(coarse, viewmats, ks, 64, 64).alpha[..., 0] >= 0.5).float()
    config = BackProjection(opacity_lr=0.0, scale_lr=0.0)
    cpu = coarse.clone()
    back_project(cpu, [Targets(target, weights, viewmats, ks)], config, (1, 1, 1), None)
    gpu = coarse.to("cuda")
    back_project(gpu, [Targets(target.cuda(), weights.cuda(), viewmats.cuda(), ks.cuda())], config, (1, 1, 1), None)
    moved = (cpu.sh_dc - coarse.sh_dc).abs().sum(-1) > 1e-3
    assert int(moved.sum()) > 100
    err = (gpu.sh_dc.detach().cpu() - cpu.sh_dc.detach())[moved].abs()
    assert float(err.median()) < 0.02 * float((cpu.sh_dc - coarse.sh_dc)[moved].abs().median())


def test_mvcrm_with_both_learned_gates_refines_on_the_card(tmp_path):
    from tests.tiny_models import save_snapshot, tiny_dinov2, tiny_dpt

    tiny_dinov2(tmp_path)
    save_snapshot(tmp_path, tiny_dpt())
    truth = textured_ball()
    coarse = textured_ball()
    coarse.sh_dc *= 0.5
    viewmats, ks = (a.astype(np.float32) for a in SYNCDREAMER_RING.cameras(64))
    rgb, _, _ = render_views(truth.to("cuda"), viewmats, ks, 64)
    _, alpha, depth = render_views(coarse.to("cuda"), viewmats, ks, 64)
    views = Views(rgb.clip(0, 1), alpha, viewmats, ks)
    settings = parse_settings({"refine": {"backend": "mvcrm", "rounds": 6, "feature_threshold": -1.0,
                                          "depth_tolerance": 1.0}}).refine
    backend = MVCRM("mvcrm", settings, tmp_path)
    backend.prepare("cuda")
    assert next(backend.model.features.parameters()).dtype == torch.float16
    out = backend.run(RefineInputs(coarse, EnhanceOutputs(views, depth), MultiviewOutputs(views, Views(
        rgb[:1].clip(0, 1), alpha[:1], viewmats[:1], ks[:1]))))
    gates = out.metrics["gates"]
    assert gates["features"]["on"] and gates["depth"]["on"] and out.metrics["rounds"] > 0
    side = orbit_camera(11.25, 10.0, 1.5)[None], intrinsics(SYNCDREAMER_RING.focal / 4, 64, 64)[None]
    err = [float(np.abs(render_views(g.to("cuda"), *side, 64)[0] - render_views(truth.to("cuda"), *side, 64)[0]).mean())
           for g in (coarse, out.gaussians)]
    assert err[1] < 0.8 * err[0]
