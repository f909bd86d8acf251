"""Fitting on the CPU at toy sizes: it improves on its start, honours budgets and stops."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from ai_modules.reconstruct import FitBudget, FitPreset, fit, from_depths, from_visual_hull  # noqa: E402
from tests.scenes import dataset  # noqa: E402


@pytest.fixture(scope="module")
def data():
    return {k: torch.from_numpy(v).float() for k, v in dataset(size=40, train=6).items()}


def test_init_from_depths_lies_on_the_surface(data):
    g = from_depths(data["images"], data["masks"], data["depths"], data["viewmats"], data["Ks"], max_points=2000)
    assert 1000 < g.num <= 2000
    assert g.means.abs().max() < 0.5  # the scene sits inside the object box
    sphere = (g.means - torch.tensor([0.0, 0.0, 0.08])).norm(dim=-1)
    on_sphere = sphere[g.means[:, 2] > -0.1]
    assert (on_sphere - 0.24).abs().median() < 0.02


def test_visual_hull_init_stays_inside_the_silhouettes(data):
    g = from_visual_hull(data["images"], data["masks"], data["viewmats"], data["Ks"], num_points=1500,
                         generator=torch.Generator().manual_seed(0))
    assert 0 < g.num <= 1500 and g.means.abs().max() <= 0.5


def test_fit_improves_on_its_start(data):
    preset = FitPreset(iterations=40, sh_degree=0, densify="none", init_points=1500)
    _, before = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], depths=data["depths"],
                    preset=preset, budget=FitBudget(iterations=1))
    g, after = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], depths=data["depths"],
                   preset=preset, heldout=(data["heldout_images"], data["heldout_viewmats"], data["heldout_Ks"]))
    assert after["iterations"] == 40 and after["train_psnr"] > before["train_psnr"] + 1.0
    assert {"heldout_psnr", "heldout_ssim", "train_ssim", "seconds", "num_gaussians"} <= set(after)
    assert torch.isfinite(g.means).all() and not g.means.requires_grad


def test_densify_default_runs_on_the_cpu(data):
    preset = FitPreset(iterations=60, sh_degree=1, densify="default", init_points=800)
    g, metrics = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], preset=preset)
    assert metrics["densify"] == "default" and g.num > 0 and g.sh_degree == 1


@pytest.mark.parametrize("densify", ["none", "default"])
def test_several_views_per_step_fit_better_in_the_same_steps(data, densify: str):
    # the same steps, each averaging the loss over 4 views instead of taking one
    one = FitPreset(iterations=30, sh_degree=0, densify=densify, init_points=1500)
    four = FitPreset(iterations=30, sh_degree=0, densify=densify, init_points=1500, views_per_step=4)
    args = (data["images"], data["viewmats"], data["Ks"])
    _, start = fit(*args, masks=data["masks"], depths=data["depths"], preset=one, budget=FitBudget(iterations=1))
    _, a = fit(*args, masks=data["masks"], depths=data["depths"], preset=one)
    g, b = fit(*args, masks=data["masks"], depths=data["depths"], preset=four)
    assert b["iterations"] == 30 and b["train_psnr"] > start["train_psnr"] + 1.0
    assert b["train_psnr"] > a["train_psnr"] and torch.isfinite(g.means).all()


def test_budgets_and_stop(data):
    steps = []
    preset = FitPreset(iterations=500, sh_degree=0, densify="none", init_points=500)
    _, m = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], preset=preset,
               budget=FitBudget(seconds=0.0))
    assert m["iterations"] <= 1
    _, m = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], preset=preset,
               should_stop=lambda: len(steps) > 0, on_step=lambda s, info: steps.append(s))
    assert m["iterations"] <= 2


def test_bad_arguments(data):
    with pytest.raises(ValueError, match="`preset`"):
        fit(data["images"], data["viewmats"], data["Ks"], preset="ultra")
    with pytest.raises(ValueError, match="mcmc"):
        fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"],
            preset=FitPreset(iterations=2, densify="mcmc", init_points=100))
    with pytest.raises(ValueError, match="`viewmats`"):
        fit(data["images"], data["viewmats"][:2], data["Ks"], masks=data["masks"])
