"""EWA projection of `ai_modules.splatting` against gsplat's pure-torch reference (`gsplat.cuda._torch_impl`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

from ai_modules.cameras import look_at
from ai_modules.splatting import project
from ai_modules.splatting.projection import ALPHA_THRESHOLD, BOX_EXTEND, covariances

W, H = 96, 64


@pytest.fixture(autouse=True)
def _torch_extensions_dir(tmp_path_factory, monkeypatch):
    """Anything that touches gsplat's JIT build writes into a temporary folder."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def random_scene(dtype: torch.dtype, n: int = 400, seed: int = 0):
    """Gaussians around the origin (some behind or beside the cameras) and 3 cameras with off-centre K."""
    gen = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1) * 1.2
    quats = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    scales = torch.exp(torch.randn(n, 3, generator=gen, dtype=torch.float64) * 0.8 - 3.5)
    eyes = [np.array([1.5, 0.3, 0.6]), np.array([-0.4, 1.1, 0.2]), np.array([0.2, -0.3, 1.3])]
    views = torch.tensor(np.stack([look_at(e) for e in eyes]))
    ks = torch.tensor([[[70.0, 0, 40.0], [0, 75.0, 35.0], [0, 0, 1]],
                       [[120.0, 0, 48.0], [0, 120.0, 32.0], [0, 0, 1]],
                       [[50.0, 0, 55.0], [0, 45.0, 28.0], [0, 0, 1]]], dtype=torch.float64)
    return [t.to(dtype) for t in (means, quats, scales, views, ks)]


def gsplat_reference(means, quats, scales, views, ks, antialiased: bool):
    covars, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    return _fully_fused_projection(means, covars, views, ks, W, H, eps2d=0.3, near_plane=0.01, far_plane=1e10,
                                   calc_compensations=antialiased)


def test_covariances_equal_gsplat():
    _, quats, scales, _, _ = random_scene(torch.float64)
    ref, _ = _quat_scale_to_covar_preci(quats, scales, True, False, triu=False)
    torch.testing.assert_close(covariances(quats, scales), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("antialiased", [False, True])
def test_projection_equals_gsplat_torch_reference_float64(antialiased):
    means, quats, scales, views, ks = random_scene(torch.float64)
    radii, means2d, depths, conics, comps = gsplat_reference(means, quats, scales, views, ks, antialiased)
    ours = project(means, quats, scales, views, ks, W, H, antialiased=antialiased)
    assert torch.equal(ours.radii, radii)
    vis = (radii > 0).all(-1)
    assert 0.2 < vis.float().mean() < 0.95                                  # culling really happens
    torch.testing.assert_close(ours.means2d[vis], means2d[vis], rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ours.conics[vis], conics[vis], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ours.depths, depths, rtol=1e-12, atol=1e-12)
    if antialiased:
        torch.testing.assert_close(ours.compensations[vis], comps[vis], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ours.opacities[vis], comps[vis], rtol=1e-10, atol=1e-12)
    else:
        assert ours.compensations is None


def test_projection_equals_gsplat_torch_reference_float32():
    means, quats, scales, views, ks = random_scene(torch.float32, seed=1)
    radii, means2d, depths, conics, comps = gsplat_reference(means, quats, scales, views, ks, True)
    ours = project(means, quats, scales, views, ks, W, H, antialiased=True)
    assert (ours.radii - radii).abs().max() <= 1                           # ceil() at a rounding boundary
    assert (ours.radii == radii).float().mean() > 0.99
    vis = (radii > 0).all(-1) & (ours.radii > 0).all(-1)
    torch.testing.assert_close(ours.means2d[vis], means2d[vis], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(ours.conics[vis], conics[vis], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ours.depths, depths, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours.compensations[vis], comps[vis], rtol=1e-4, atol=1e-5)


def test_projection_gradients_equal_gsplat_torch_reference():
    means, quats, scales, views, ks = random_scene(torch.float64, n=200, seed=2)
    radii = gsplat_reference(means, quats, scales, views, ks, True)[0]
    vis = (radii > 0).all(-1)
    gen = torch.Generator().manual_seed(3)
    w2, w3, w1 = torch.randn(*vis.shape, 2, generator=gen, dtype=torch.float64), \
        torch.randn(*vis.shape, 3, generator=gen, dtype=torch.float64), torch.randn(*vis.shape, generator=gen,
                                                                                     dtype=torch.float64)

    def grads(fn):
        inputs = [t.clone().requires_grad_() for t in (means, quats, scales)]
        m2, d, c, comp = fn(*inputs)
        loss = (m2 * w2)[vis].sum() + (c * w3)[vis].sum() + (d * w1)[vis].sum() + (comp * w1)[vis].sum()
        return torch.autograd.grad(loss, inputs)

    def ref(m, q, s):
        _, m2, d, c, comp = gsplat_reference(m, q, s, views, ks, True)
        return m2, d, c, comp

    def ours(m, q, s):
        p = project(m, q, s, views, ks, W, H, antialiased=True)
        return p.means2d, p.depths, p.conics, p.compensations

    for got, want in zip(grads(ours), grads(ref)):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


def test_culling_near_far_and_off_image():
    means = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [0.0, 0.0, 0.005], [0.0, 0.0, 50.0],
                          [5.0, 0.0, 1.0]])
    quats = torch.tensor([[1.0, 0, 0, 0]]).expand(5, 4)
    scales = torch.full((5, 3), 0.01)
    views, ks = torch.eye(4)[None], torch.tensor([[[50.0, 0, 16], [0, 50.0, 16], [0, 0, 1]]])
    p = project(means, quats, scales, views, ks, 32, 32, near=0.01, far=10.0)
    assert p.visible[0].tolist() == [True, False, False, False, False]
    assert torch.isfinite(p.means2d).all() and torch.isfinite(p.conics).all()


def test_opacity_aware_box_is_tighter_and_culls_faint_gaussians():
    means, quats, scales, views, ks = random_scene(torch.float64, seed=4)
    opac = torch.linspace(0.001, 1.0, means.shape[0], dtype=torch.float64)
    loose = project(means, quats, scales, views, ks, W, H)
    tight = project(means, quats, scales, views, ks, W, H, opacities=opac)
    assert (tight.radii <= loose.radii).all()
    assert not tight.visible[:, opac < ALPHA_THRESHOLD].any()
    # The box is ceil(extend * std) along each axis, extend = min(3.33, sqrt(2 ln(opacity / (1/255)))).
    vis = tight.visible
    qa, qb, qc = tight.conics.unbind(-1)
    det = qa * qc - qb * qb
    std_x, std_y = torch.sqrt(qc / det), torch.sqrt(qa / det)                     # from the inverse of the conic
    extend = torch.clamp(torch.sqrt(2 * torch.log(opac / ALPHA_THRESHOLD)), max=BOX_EXTEND).expand_as(qa)
    torch.testing.assert_close(tight.radii[..., 0][vis].double(), torch.ceil(extend * std_x)[vis], rtol=0, atol=0)
    torch.testing.assert_close(tight.radii[..., 1][vis].double(), torch.ceil(extend * std_y)[vis], rtol=0, atol=0)
