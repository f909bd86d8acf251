"""MVCRM (the refine stage's `mvcrm`): the back-projection's known answers, each gate on constructed cases,
the backend's record, and the stage inside a pipeline run (record, resume)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules import run
from ai_modules.cameras import SYNCDREAMER_RING, intrinsics, orbit_camera
from ai_modules.enhance.stage import EnhanceOutputs
from ai_modules.gaussians import SH_C0, Gaussians
from ai_modules.multiview.stage import MultiviewOutputs, Views
from ai_modules.refine import gates
from ai_modules.refine.backends import MVCRM
from ai_modules.refine.mvcrm import BackProjection, Targets, back_project
from ai_modules.refine.stage import RefineInputs
from ai_modules.settings import parse_settings
from ai_modules.splatting import render, render_views
from tests.gaussian_scenes import textured_ball

ONLY_COLOUR = BackProjection(relaxation=1.0, prior=0.0, opacity_lr=0.0, scale_lr=0.0, max_update=1.0)


def lone_gaussian(colour: float) -> Gaussians:
    """One opaque Gaussian in front of the camera, of grey `colour`."""
    return Gaussians(means=torch.zeros(1, 3), quats=torch.tensor([[1.0, 0, 0, 0]]),
                     log_scales=torch.full((1, 3), np.log(0.05)), opacity_logits=torch.tensor([2.0]),
                     sh_dc=torch.full((1, 3), (colour - 0.5) / SH_C0), sh_rest=torch.zeros(1, 0, 3))


def one_camera(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    view = torch.tensor(orbit_camera(0.0, 0.0, 1.0), dtype=torch.float32)[None]
    return view, torch.tensor(intrinsics(40.0, size, size), dtype=torch.float32)[None]


def colour_of(g: Gaussians) -> np.ndarray:
    return (g.sh_dc * SH_C0 + 0.5).detach().numpy()[0]


def test_one_round_gives_a_lone_gaussian_the_colour_of_the_pixels_it_drew():
    view, k = one_camera()
    target = render(lone_gaussian(0.8), view, k, 32, 32)              # what the Gaussian would look like at 0.8
    g = lone_gaussian(0.3)
    alpha = render(g, view, k, 32, 32).alpha[..., 0]
    back_project(g, [Targets(target.rgb, (alpha > 0.3).float(), view, k)], ONLY_COLOUR, (1.0, 1.0, 1.0), None)
    np.testing.assert_allclose(colour_of(g), 0.8, atol=2e-3)           # SART with lambda 1: exact in one round


def test_the_prior_halves_the_step_of_a_gaussian_of_median_contribution_and_relaxation_scales_it():
    view, k = one_camera()
    target = render(lone_gaussian(0.8), view, k, 32, 32)
    alpha = render(lone_gaussian(0.3), view, k, 32, 32).alpha[..., 0]
    t = Targets(target.rgb, (alpha > 0.3).float(), view, k)
    g = lone_gaussian(0.3)
    back_project(g, [t], BackProjection(relaxation=1.0, prior=1.0, opacity_lr=0.0, scale_lr=0.0, max_update=1.0), (1, 1, 1), None)
    np.testing.assert_allclose(colour_of(g), 0.55, atol=2e-3)          # its own contribution is the median
    g = lone_gaussian(0.3)
    back_project(g, [t], BackProjection(relaxation=0.5, prior=0.0, opacity_lr=0.0, scale_lr=0.0, max_update=1.0), (1, 1, 1), None)
    np.testing.assert_allclose(colour_of(g), 0.55, atol=2e-3)


def test_untrusted_pixels_move_nothing_and_a_gaussian_outside_the_trusted_pixels_keeps_its_colour():
    view, k = one_camera()
    g = lone_gaussian(0.3)
    far = Gaussians(means=torch.tensor([[0.0, 0.3, 0.0]]), quats=g.quats, log_scales=g.log_scales,
                    opacity_logits=g.opacity_logits, sh_dc=g.sh_dc.clone(), sh_rest=g.sh_rest)
    pair = Gaussians(*(torch.cat([a, b]) for a, b in zip(vars(g).values(), vars(far).values())))
    target = torch.full((1, 32, 32, 3), 0.9)
    weights = torch.zeros(1, 32, 32)
    before = pair.sh_dc.clone()
    back_project(pair, [Targets(target, weights, view, k)], ONLY_COLOUR, (1, 1, 1), None)
    assert torch.equal(pair.sh_dc, before)
    centre = render(lone_gaussian(0.3), view, k, 32, 32).alpha[0, ..., 0] > 0.5   # only the first one's pixels
    back_project(pair, [Targets(target, centre[None].float(), view, k)], ONLY_COLOUR, (1, 1, 1), None)
    assert (pair.sh_dc[0] > before[0]).all() and torch.allclose(pair.sh_dc[1], before[1], atol=1e-6)


# --------------------------------------------------------------------------------------------------- gates

def test_coverage_keeps_covered_pixels_away_from_the_edge_and_inside_the_object():
    alpha = torch.zeros(1, 12, 12)
    alpha[0, 2:10, 2:10] = 1.0
    mask = gates.coverage(alpha)
    assert mask[0, 3:9, 3:9].all() and mask.sum() == 36
    obj = torch.ones(1, 12, 12)
    obj[0, :, 6:] = 0
    assert gates.coverage(alpha, obj).sum() == 6 * 2                  # columns 3..4 only (eroded at 6 too)


def _depth_plane(size: int = 40) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return 1.0 + 0.5 * xs + 0.3 * ys


def test_the_depth_gate_aligns_inverse_depth_and_rejects_a_wrong_part_and_a_reversed_view():
    depth = _depth_plane()
    valid = torch.ones_like(depth, dtype=torch.bool)
    inverse = 3.0 / depth + 7.0                                        # what MiDaS gives: affine in 1/z
    kept, fit = gates.depth_agreement(inverse, depth, valid, 0.05)
    assert kept.all() and fit.scale == pytest.approx(1 / 3, rel=1e-4) and fit.shift == pytest.approx(-7 / 3, rel=1e-4)
    wrong = inverse.clone()
    wrong[:15, :15] = float(inverse.max()) * 1.5                       # a part the model saw much nearer
    kept, _ = gates.depth_agreement(wrong, depth, valid, 0.05)
    assert not kept[:15, :15].any() and kept[20:, 20:].all()
    kept, fit = gates.depth_agreement(-inverse, depth, valid, 0.05)    # near read as far
    assert not kept.any() and fit.scale < 0
    kept, fit = gates.depth_agreement(inverse, depth, torch.zeros_like(valid), 0.05)
    assert not kept.any() and fit is None


def test_comparing_depth_directly_to_inverse_depth_would_not_align():
    depth = _depth_plane()
    inverse = 1.0 / depth
    aligned, _ = gates.align_inverse_depth(inverse, depth, torch.ones_like(depth, dtype=torch.bool))
    assert torch.allclose(aligned, depth, rtol=1e-4)                   # the fit is in inverse depth, judged in depth


def test_the_feature_gate_keeps_similar_patches_only():
    sim = torch.tensor([[[0.9, 0.2], [0.7, 0.61]]])
    valid = torch.tensor([[[True, True], [False, True]]])
    assert gates.feature_agreement(sim, valid, 0.6).tolist() == [[[True, False], [False, True]]]


@pytest.fixture(scope="module")
def ball_views():
    """The ball rendered at 64 px from the 16 ring cameras: (Gaussians, viewmats, Ks, rgb, alpha, depth)."""
    g = textured_ball()
    viewmats, ks = SYNCDREAMER_RING.cameras(64)
    viewmats, ks = viewmats.astype(np.float32), ks.astype(np.float32)
    rgb, alpha, depth = render_views(g, viewmats, ks, 64)
    return g, viewmats, ks, rgb.clip(0, 1), alpha, depth


def test_the_multiview_gate_keeps_consistent_views_and_rejects_independent_inventions(ball_views):
    _, viewmats, ks, rgb, alpha, depth = ball_views
    valid = gates.coverage(torch.as_tensor(alpha))
    args = (torch.as_tensor(depth), valid, torch.as_tensor(viewmats), torch.as_tensor(ks))
    agree, seen = gates.multiview_agreement(torch.as_tensor(rgb), *args, neighbour_count=2, tolerance=0.05)
    share = float(agree.sum() / valid.sum())
    rng = np.random.default_rng(0)
    invented = np.clip(rgb + rng.normal(0, 0.15, rgb.shape) * (alpha[..., None] > 0.5), 0, 1).astype(np.float32)
    bad, _ = gates.multiview_agreement(torch.as_tensor(invented), *args, neighbour_count=2, tolerance=0.05)
    assert share > 0.8 and float(bad.sum() / valid.sum()) < 0.2
    assert float(seen.sum() / valid.sum()) > 0.9


def test_neighbours_are_the_nearest_ring_cameras():
    viewmats, _ = SYNCDREAMER_RING.cameras(32)
    near = gates.neighbours(torch.as_tensor(viewmats), 2)
    assert sorted(near[0]) == [1, 15] and sorted(near[5]) == [4, 6]


# --------------------------------------------------------------------------------------------------- backend

def backend(models_dir: Path | None = None, **refine_settings) -> MVCRM:
    settings = parse_settings({"refine": {"backend": "mvcrm", **refine_settings}}).refine
    b = MVCRM("mvcrm", settings, models_dir)
    b.prepare("cpu")
    return b


def blurred(g: Gaussians) -> Gaussians:
    """The ball with every colour pulled halfway to grey: a coarse fit that lost its texture."""
    c = g.clone()
    c.sh_dc *= 0.5
    return c


def inputs(coarse: Gaussians, images: np.ndarray, ball_views, photo: bool = True) -> RefineInputs:
    _, viewmats, ks, _, alpha, depth = ball_views
    _, c_alpha, c_depth = render_views(coarse, viewmats, ks, 64)
    views = Views(images.astype(np.float32), c_alpha, viewmats, ks)
    first = Views(images[:1], alpha[:1], viewmats[:1], ks[:1])
    mv = MultiviewOutputs(views, first) if photo else None
    return RefineInputs(coarse, EnhanceOutputs(views, c_depth), mv)


def test_true_views_restore_the_texture_and_inventions_are_skipped_with_their_reason(ball_views):
    g, viewmats, ks, rgb, alpha, _ = ball_views
    coarse = blurred(g)
    b = backend(rounds=8)
    out = b.run(inputs(coarse, rgb, ball_views))
    m = out.metrics
    assert m["rounds"] > 0 and m["changed_gaussians"] > 0 and m["views_skipped"] == {}
    assert m["validation_psnr"][m["rounds"]] > m["validation_psnr"][0] + 1.0
    side = SYNCDREAMER_RING.cameras(64)[1][:1], orbit_camera(11.25, 10.0, 1.5)[None]   # a camera refine never saw
    err = lambda x: float(np.abs(render_views(x, side[1], side[0], 64)[0] - render_views(g, side[1], side[0], 64)[0]
                                 ).mean())  # noqa: E731
    assert err(out.gaussians) < 0.7 * err(coarse)
    assert m["gates"]["depth"]["on"] is False and "dpt-hybrid-midas not found" in m["gates"]["depth"]["why"]
    assert m["gates"]["features"]["on"] is False and "models pull dinov2" in m["gates"]["features"]["why"]
    rng = np.random.default_rng(1)
    cur, _, _ = render_views(coarse, viewmats, ks, 64)
    invented = np.clip(cur + rng.normal(0, 0.2, cur.shape) * (alpha[..., None] > 0.5), 0, 1)
    out = b.run(inputs(coarse, invented, ball_views))
    assert out.gaussians is coarse or torch.equal(out.gaussians.sh_dc, coarse.sh_dc)
    assert len(out.metrics.get("views_skipped", out.metrics.get("gates", {}))) > 0
    reasons = out.metrics["gates"]["trusted"]
    assert max(reasons) < 0.3


def test_identity_views_change_nothing(ball_views):
    _, viewmats, ks, _, _, _ = ball_views
    coarse = blurred(ball_views[0])
    cur, _, _ = render_views(coarse, viewmats, ks, 64)
    out = backend(rounds=6).run(inputs(coarse, cur.clip(0, 1), ball_views))
    assert out.metrics["rounds"] == 0 and "no round improved" in out.metrics["kept"]
    assert torch.equal(out.gaussians.sh_dc, coarse.sh_dc)


def test_without_enhanced_views_refine_passes_the_gaussians_on(ball_views):
    g = ball_views[0]
    out = backend().run(RefineInputs(g, EnhanceOutputs(), None))
    assert out.gaussians is g and "enhance.backend is none" in out.metrics["reason"]


def test_learned_gates_switch_on_when_their_files_are_present(tmp_path, ball_views):
    from tests.tiny_models import save_snapshot, tiny_dinov2, tiny_dpt

    tiny_dinov2(tmp_path)
    save_snapshot(tmp_path, tiny_dpt())
    b = backend(tmp_path, rounds=2, feature_threshold=-1.0, depth_tolerance=1.0)
    assert set(b.model_names()) == {"dinov2", "dpt-hybrid-midas"}
    out = b.run(inputs(blurred(ball_views[0]), ball_views[3], ball_views))
    record = out.metrics["gates"]
    assert record["features"]["on"] and record["depth"]["on"] and len(record["depth"]["scale"]) == 16
    assert backend(tmp_path, feature_gate=False).model_names() == ("dpt-hybrid-midas",)


def test_syncdreamer_still_builds_after_the_refine_gates_loaded(tmp_path):
    from ai_modules.sync_dreamer.generate import SyncDreamer
    from tests.tiny_models import save_snapshot, tiny_dinov2, tiny_dpt, write_tiny_syncdreamer

    tiny_dinov2(tmp_path)
    save_snapshot(tmp_path, tiny_dpt())
    backend(tmp_path)                                    # timm and transformers load torch's Python meta kernels
    write_tiny_syncdreamer(tmp_path)
    assert SyncDreamer.from_models_dir(tmp_path, "cpu").model.betas.device.type == "cpu"


# --------------------------------------------------------------------------------------------------- pipeline

def test_refine_runs_in_the_pipeline_records_its_gates_and_resumes(disc_png, tmp_path, small_settings):
    settings = {**small_settings, "multiview": {**small_settings["multiview"], "relief_size": 32},
                "enhance": {"backend": "classical", "size": 64}, "refine": {"backend": "mvcrm", "rounds": 2}, "export": {**small_settings["export"], "formats": ["ply"]}}
    workdir = tmp_path / "job"
    first = run(disc_png, settings, workdir)
    record = first.stages[5]
    assert record.backend == "mvcrm" and record.reason == "requested by `pipeline.refine.backend`"
    assert {"rounds", "gates", "validation_psnr", "views_skipped", "seconds"} <= set(record.metrics)
    assert record.metrics["gates"]["multiview"]["on"] and len(record.metrics["gates"]["trusted"]) == 16
    assert first.stages[4].backend == "classical"
    done = json.loads((workdir / "refine" / "done.json").read_text())
    assert done["record"]["metrics"]["rounds"] == record.metrics["rounds"]
    (workdir / "refine" / "done.json").unlink()                       # refine again from the saved views
    second = run(disc_png, settings, workdir)
    assert [s.resumed for s in second.stages] == [True] * 5 + [False, False]
    assert second.stages[5].metrics["rounds"] == record.metrics["rounds"]
