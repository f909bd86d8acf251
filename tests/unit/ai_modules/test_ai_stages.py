"""The staged pipeline's middle: multiview (relief), reconstruct, enhance, refine, and backend choice."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules.base import resolve_backend
from ai_modules.cameras import project
from ai_modules.depth import inflate
from ai_modules.depth.stage import DepthStage
from ai_modules.enhance import EnhanceInputs, EnhanceStage, match_colours
from ai_modules.errors import ModelNotAvailable
from ai_modules.multiview import MultiviewInputs, MultiviewStage, relief_object
from ai_modules.cameras import SYNCDREAMER_RING
from ai_modules.pipeline import Pipeline
from ai_modules.reconstruct.quality import input_view_quality, ring_closure
from ai_modules.reconstruct.stage import ReconstructInputs, ReconstructStage, relief_iterations
from ai_modules.refine import RefineInputs, RefineStage
from ai_modules.settings import parse_settings
from ai_modules.splatting import render

S = 96


def striped_cutout() -> tuple[np.ndarray, np.ndarray]:
    """An upright ellipse (taller than wide) with horizontal colour bands, on white: ([S,S,3], [S,S])."""
    yy, xx = np.mgrid[:S, :S] + 0.5
    mask = ((xx - S / 2) / 24) ** 2 + ((yy - S / 2) / 36) ** 2 < 1
    bands = np.array([[0.9, 0.2, 0.1], [0.1, 0.6, 0.2], [0.2, 0.3, 0.9]], np.float32)[(yy // 8 % 3).astype(int)]
    image = np.where(mask[..., None], bands, 1.0).astype(np.float32)
    return image, mask.astype(np.float32)


def settings(**sections: dict) -> object:
    return parse_settings({"device": "cpu", "multiview": {"view_size": 64}, **sections})


@pytest.fixture(scope="module")
def relief_views():
    image, alpha = striped_cutout()
    stage = MultiviewStage(settings().multiview)
    stage.load("cpu")
    return stage, stage.run(MultiviewInputs(image, alpha))


@pytest.mark.parametrize("elevation", [0.0, 30.0])
def test_relief_seen_from_the_photos_camera_is_the_cutout(elevation: float):
    image, alpha = striped_cutout()
    g, viewmat, k = relief_object(image, alpha, inflate(alpha >= 0.5, 0.5), elevation=elevation)
    quality = input_view_quality(g, _views(image, alpha, viewmat, k))
    # the rim stays where the cutout has it (the renderer's 0.3 px^2 blur would add a 1-px halo: IoU 0.87)
    assert quality["input_view_iou"] > 0.95 and quality["input_view_psnr"] > 22, quality
    top = g.means[g.means[:, 2].argmax()].numpy()               # the band at the top of the photo is on top
    uv, _ = project(top[None].astype(np.float64), viewmat, k)
    assert uv[0, 1] < S / 2 - 30
    assert float(g.means.abs().max()) <= 0.49 + 1e-6


def test_relief_stands_upright_whatever_the_photos_elevation():
    image, alpha = striped_cutout()
    level, _, _ = relief_object(image, alpha, inflate(alpha >= 0.5, 0.5), elevation=0.0, extent=0.5)
    above, view, _ = relief_object(image, alpha, inflate(alpha >= 0.5, 0.5), elevation=30.0, extent=0.5)
    axis = lambda g: torch.linalg.svd(g.means - g.means.mean(0), full_matrices=False)[2][0].abs()  # noqa: E731
    assert float(axis(level)[2]) > 0.99 and float(axis(above)[2]) > 0.99    # the long axis stays vertical
    stretch = float(np.ptp(above.means[:, 2].numpy()) / np.ptp(level.means[:, 2].numpy()))
    assert 1.1 < stretch < 1.3               # what foreshortening hid: 1/cos(30) at the centre, more below it
    centre = -view[:3, :3].T @ view[:3, 3]
    assert np.allclose(centre / np.linalg.norm(centre), [math.cos(math.radians(30)), 0, math.sin(math.radians(30))])


def test_multiview_relief_renders_the_ring_and_round_trips(relief_views, tmp_path: Path):
    stage, out = relief_views
    assert stage.backend == "relief" and len(out.ring) == 16 and out.ring.images.shape == (16, 64, 64, 3)
    assert out.input.images.shape == (1, S, S, 3) and out.gaussians is not None
    coverage = (out.ring.alphas >= 0.5).mean(axis=(1, 2))
    assert (coverage > 0.05).all()                               # the object is in every view, closed all round
    assert coverage[4] < coverage[0] and coverage[12] < coverage[0]   # seen from the side it is thinner
    files = stage.save(out, tmp_path)
    assert {"view_00", "view_15", "input", "cameras", "object"} <= set(files)
    back = stage.load_outputs(tmp_path)
    assert np.abs(back.ring.images - out.ring.images).max() <= 1 / 255 + 1e-6
    assert np.allclose(back.ring.viewmats, out.ring.viewmats) and np.allclose(back.input.Ks, out.input.Ks)
    assert torch.equal(back.gaussians.means, out.gaussians.means)


def test_reconstruct_from_the_relief_keeps_the_photo_and_writes_both_plys(relief_views, tmp_path: Path):
    _, views = relief_views
    depth = DepthStage(settings().depth).run(views)
    stage = ReconstructStage(settings(reconstruct={"iterations": 30, "size": 64}).reconstruct)
    stage.load("cpu")
    out = stage.run(ReconstructInputs(views, depth))
    assert out.metrics["initial_from"] == "multiview object" and out.metrics["iterations"] == 30
    assert out.metrics["densify"] == "none" and out.gaussians.num == out.initial.num
    assert out.metrics["input_view_iou"] > 0.9
    assert not torch.equal(out.gaussians.means, out.initial.means)
    closure = ring_closure(out.gaussians, views.ring)                  # closed all round, no floaters
    assert closure["ring_coverage_min"] > 0.95 and closure["ring_floaters"] < 0.02, closure
    assert set(stage.save(out, tmp_path)) == {"gaussians", "initial"}
    assert stage.load_outputs(tmp_path).gaussians.num == out.gaussians.num


def test_auto_iterations_from_the_relief_spend_a_fixed_budget_on_the_cpu():
    assert relief_iterations("cuda", 5_000) == relief_iterations("cuda", 60_000) == 150
    assert relief_iterations("cpu", 10_000) == 100                       # 1e6 Gaussian-steps
    assert relief_iterations("cpu", 1_000) == 250 and relief_iterations("cpu", 100_000) == 60    # the bounds


def test_reconstruct_without_a_relief_starts_from_the_visual_hull(relief_views):
    _, views = relief_views
    depth = DepthStage(settings().depth).run(views)
    hull_views = type(views)(views.ring, views.input, None)
    stage = ReconstructStage(settings(reconstruct={"iterations": 10, "size": 48}).reconstruct)
    stage.load("cpu")
    out = stage.run(ReconstructInputs(hull_views, depth))
    assert out.metrics["initial_from"] == "visible hull" and out.metrics["densify"] == "default"


def test_classical_enhance_pulls_colours_toward_the_photo(relief_views):
    _, views = relief_views
    dull = views.gaussians.clone()
    dull.sh_dc = dull.sh_dc * 0.4                                # washed-out colours
    stage = EnhanceStage(settings(enhance={"backend": "classical", "size": 64}).enhance)
    stage.load("cpu")
    out = stage.run(EnhanceInputs(dull, views))
    with torch.no_grad():
        before = render(dull, torch.from_numpy(out.views.viewmats), torch.from_numpy(out.views.Ks), 64, 64,
                        background=(1.0, 1.0, 1.0)).rgb.numpy()
    mask = out.views.alphas >= 0.5
    photo = views.input.images[0][views.input.alphas[0] >= 0.5]
    spread = lambda x: x.std(axis=0).mean()                      # noqa: E731
    assert abs(spread(out.views.images[mask]) - spread(photo)) < 0.5 * abs(spread(before[mask]) - spread(photo))
    assert out.depths.shape == (16, 64, 64) and (out.depths[mask] > 0).all()
    assert out.metrics["views"] == 16


def test_match_colours_only_touches_the_object():
    rng = np.random.default_rng(0)
    image = rng.random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[8:24, 8:24] = True
    reference = np.full((32, 32, 3), 0.2, np.float32)
    out = match_colours(image, mask, reference, np.ones((32, 32), bool))
    assert np.array_equal(out[~mask], image[~mask]) and np.allclose(out[mask], 0.2)


def test_enhance_and_refine_auto_are_off_on_the_relief_path_and_refine_none_passes_through(relief_views):
    _, views = relief_views
    pipeline = Pipeline(settings(), "cpu")
    pipeline.choose()
    stage = pipeline.stage("enhance")
    assert stage.backend == "none" and "refine does not run" in stage.reason
    assert pipeline.stage("refine").backend == "none"
    assert "bench_refine measured a held-out gain only with" in pipeline.stage("refine").reason
    assert "this job has multiview relief, enhance classical" in pipeline.stage("refine").reason
    out = stage.run(EnhanceInputs(views.gaussians, views))
    assert out.views is None and stage.save(out, Path("/nonexistent")) == {}
    refine = RefineStage(settings(refine={"backend": "none"}).refine)
    assert refine.run(RefineInputs(views.gaussians, out)).gaussians is views.gaussians


def test_auto_takes_a_learned_backend_only_when_all_its_files_are_present(tmp_path: Path):
    backend, reason = resolve_backend("multiview", "auto", tmp_path)
    assert backend == "relief" and "syncdreamer weights not found" in reason
    assert str(tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt") in reason
    (tmp_path / "syncdreamer").mkdir()
    (tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt").write_bytes(b"x")         # not a torch archive
    assert resolve_backend("multiview", "auto", tmp_path)[0] == "relief"
    torch.save({}, tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt")
    assert resolve_backend("multiview", "auto", tmp_path)[0] == "relief"                 # not SyncDreamer's tensors
    torch.save({"state_dict": {"cc_projection.weight": torch.zeros(1),
                               "model.diffusion_model.time_embed.0.weight": torch.zeros(1)}},
               tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt")
    backend, reason = resolve_backend("multiview", "auto", tmp_path)
    assert backend == "syncdreamer" and str(tmp_path / "syncdreamer") in reason
    (tmp_path / "enhance" / "sdxl-base").mkdir(parents=True)
    (tmp_path / "enhance" / "sdxl-base" / "model_index.json").write_text("{}")
    assert resolve_backend("enhance", "auto", tmp_path)[0] == "classical"        # two of its three are missing
    assert resolve_backend("depth", "inflation", tmp_path) == ("inflation", "requested by `pipeline.depth.backend`")


def test_a_requested_learned_backend_without_its_files_fails_with_the_path(tmp_path: Path):
    stage = DepthStage(settings(depth={"backend": "dpt"}).depth, tmp_path)
    with pytest.raises(ModelNotAvailable, match="glimpsed models pull dpt") as info:
        stage.load("cpu")
    assert str(tmp_path / "depth" / "dpt-hybrid-midas") in str(info.value)


def _views(image: np.ndarray, alpha: np.ndarray, viewmat: np.ndarray, k: np.ndarray):
    from ai_modules.multiview import Views

    return Views(image[None], alpha[None], viewmat[None].astype(np.float32), k[None].astype(np.float32))


def test_ring_azimuths_are_syncdreamers():
    assert SYNCDREAMER_RING.azimuths == tuple(22.5 * i for i in range(16))
