"""Gradients of `ai_modules.splatting.render` (torch backend) w.r.t. every Gaussian tensor."""

from __future__ import annotations

import math

import pytest
import torch

from ai_modules.gaussians import Gaussians
from ai_modules.splatting import render
from ai_modules.splatting.scenes import random_cloud, ring_cameras

PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")


@pytest.fixture(autouse=True)
def _torch_extensions_dir(tmp_path_factory, monkeypatch):
    """Anything that touches gsplat's JIT build writes into a temporary folder."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


@pytest.mark.parametrize("antialiased", [False, True])
def test_gradients_are_finite_and_non_zero_for_all_parameters(antialiased):
    g = random_cloud(150, sh_degree=2, seed=11)
    g.means[:5] = torch.tensor([-3.0, 0.0, 1.5])                               # behind the camera: culled
    tensors = {name: getattr(g, name).clone().requires_grad_() for name in PARAMS}
    views, ks = ring_cameras((0.0, 120.0), size=48)
    out = render(Gaussians(**tensors), views, ks, 48, 48, antialiased=antialiased)
    gen = torch.Generator().manual_seed(0)
    loss = sum((t * torch.rand(t.shape, generator=gen)).sum() for t in (out.rgb, out.alpha, out.depth))
    loss.backward()
    for name, t in tensors.items():
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    assert (tensors["means"].grad[:5] == 0).all()


def tiny_scene() -> tuple[Gaussians, torch.Tensor, torch.Tensor]:
    """3 soft, semi-transparent Gaussians filling an 8x8 image: every alpha in (1/255, 0.999), T >> 1e-4."""
    d = torch.float64
    g = Gaussians(
        means=torch.tensor([[0.05, -0.03, 2.5], [-0.1, 0.08, 2.0], [0.12, 0.1, 3.0]], dtype=d),
        quats=torch.tensor([[1.0, 0.1, -0.2, 0.3], [0.8, -0.3, 0.2, 0.1], [0.9, 0.2, 0.4, -0.1]], dtype=d),
        log_scales=torch.log(torch.tensor([[0.45, 0.35, 0.3], [0.3, 0.4, 0.35], [0.5, 0.4, 0.45]], dtype=d)),
        opacity_logits=torch.logit(torch.tensor([0.35, 0.3, 0.4], dtype=d)),
        sh_dc=torch.tensor([[0.5, -0.2, 0.1], [-0.3, 0.4, 0.2], [0.1, 0.1, -0.4]], dtype=d),
        sh_rest=0.1 * torch.sin(torch.arange(27, dtype=d)).reshape(3, 3, 3))
    views = torch.eye(4, dtype=d)[None]
    ks = torch.tensor([[[20.0, 0.0, 4.0], [0.0, 20.0, 4.0], [0.0, 0.0, 1.0]]], dtype=d)
    return g, views, ks


@pytest.mark.parametrize("antialiased", [False, True])
def test_gradcheck_float64_tiny_scene(antialiased):
    g, views, ks = tiny_scene()

    def fn(*tensors: torch.Tensor) -> torch.Tensor:
        out = render(Gaussians(*tensors), views, ks, 8, 8, background=(0.2, 0.3, 0.4), antialiased=antialiased)
        return torch.cat([out.rgb.flatten(), out.alpha.flatten(), out.depth.flatten()])

    inputs = tuple(getattr(g, name).clone().requires_grad_() for name in PARAMS)
    alpha = render(g, views, ks, 8, 8).alpha
    assert alpha.min() > 0.2 and alpha.max() < 0.9                           # smooth regime: no cut-offs in play
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_gradient_of_one_gaussian_mean_points_towards_the_target():
    """Moving a blob right (+x camera = +u) raises alpha in the right columns: d(-alpha_right)/dx < 0."""
    g, views, ks = tiny_scene()
    g = g.select(torch.tensor([True, False, False]))
    means = g.means.clone().requires_grad_()
    out = render(Gaussians(means, g.quats, g.log_scales, g.opacity_logits, g.sh_dc, g.sh_rest), views, ks, 8, 8)
    (-out.alpha[0, :, 6:].sum()).backward()
    assert means.grad[0, 0] < 0 and math.isfinite(float(means.grad.abs().sum()))
