"""View-dependent colour of the renderer against gsplat's torch SH reference (`_spherical_harmonics`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _spherical_harmonics

from ai_modules.cameras import intrinsics, look_at
from ai_modules.gaussians import SH_C0, Gaussians
from ai_modules.splatting import render, sh_colors
from ai_modules.splatting.scenes import random_cloud, ring_cameras
from ai_modules.splatting.tiles import ALPHA_MAX


@pytest.fixture(autouse=True)
def _torch_extensions_dir(tmp_path_factory, monkeypatch):
    """Anything that touches gsplat's JIT build writes into a temporary folder."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def gsplat_colors(g: Gaussians, campos: torch.Tensor, degree: int) -> torch.Tensor:
    """[C,N,3] as gsplat.rasterization computes them from SH coefficients."""
    coeffs = torch.cat([g.sh_dc[:, None], g.sh_rest], 1)                       # [N,K,3] dc first
    dirs = g.means[None] - campos[:, None]                                     # not normalised: gsplat does it
    sh = _spherical_harmonics(degree, dirs, coeffs[None].expand(len(campos), -1, -1, -1))
    return torch.clamp_min(sh + 0.5, 0.0)


def test_degree_zero_is_c0_times_dc_plus_half():
    g = random_cloud(50, sh_degree=0, seed=1)
    got = sh_colors(g, torch.tensor([[2.0, 0.0, 0.0]]), 0)
    torch.testing.assert_close(got[0], torch.clamp_min(0.28209479 * g.sh_dc + 0.5, 0.0), rtol=1e-6, atol=1e-7)
    assert SH_C0 == pytest.approx(0.28209479, abs=1e-8)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_higher_degrees_equal_gsplat_reference(degree):
    g = random_cloud(300, sh_degree=3, seed=degree)                             # bands above `degree` unused
    g.sh_rest *= 5                                                              # make the view terms matter
    campos = torch.tensor([[1.5, 0.2, 0.7], [-0.3, -1.2, 0.4], [0.1, 0.1, -2.0]])
    got = sh_colors(g, campos, degree)
    torch.testing.assert_close(got, gsplat_colors(g, campos, degree), rtol=1e-5, atol=1e-5)
    assert (got[0] - got[1]).abs().max() > 0.1                                 # depends on the view


def test_render_uses_view_dependent_colour_from_the_camera_centre():
    g = random_cloud(1, sh_degree=3, seed=4)
    g.means.zero_()
    g.log_scales.fill_(np.log(0.05))
    g.opacity_logits.fill_(10.0)                                                # alpha = 0.999 at the centre
    eyes = [np.array([1.0, 0.5, 0.3]), np.array([-0.4, 0.9, -0.6])]
    views = torch.tensor(np.stack([look_at(e) for e in eyes]), dtype=torch.float32)
    ks = torch.tensor(np.stack([intrinsics(60.0, 31, 31)] * 2), dtype=torch.float32)
    out = render(g, views, ks, 31, 31, background=(0.0, 0.0, 0.0))
    want = gsplat_colors(g, torch.tensor(np.stack(eyes), dtype=torch.float32), 3)[:, 0] * ALPHA_MAX   # [2,3]
    torch.testing.assert_close(out.rgb[:, 15, 15], want, rtol=1e-5, atol=1e-5)
    assert (want[0] - want[1]).abs().max() > 0.05


def test_lower_sh_degree_ignores_higher_bands():
    g = random_cloud(200, sh_degree=3, seed=5)
    views, ks = ring_cameras((30.0,), size=32)
    for degree in (0, 1, 2):
        a = render(g, views, ks, 32, 32, sh_degree=degree)
        b = render(g.with_sh_degree(degree), views, ks, 32, 32)
        assert torch.equal(a.rgb, b.rgb)
