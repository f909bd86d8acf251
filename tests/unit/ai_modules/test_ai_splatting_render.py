"""`ai_modules.splatting.render` on the CPU: compositing against naive loops, analytic cases, input checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

from ai_modules.gaussians import SH_C0, Gaussians, rgb_to_sh_dc
from ai_modules.splatting import RenderOptions, render
from ai_modules.splatting.scenes import random_cloud, ring_cameras
from ai_modules.splatting.tiles import ALPHA_MAX, rasterize

EYE = torch.eye(4)[None]                                                   # camera at the origin looking down +z


@pytest.fixture(autouse=True)
def _torch_extensions_dir(tmp_path_factory, monkeypatch):
    """Anything that touches gsplat's JIT build writes into a temporary folder."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def k_matrix(f: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]]])


def blobs(means, scale=0.05, opacity=0.7, rgb=(0.2, 0.6, 0.9), dtype=torch.float32) -> Gaussians:
    """Isotropic Gaussians of SH degree 0 at `means` ([n,3])."""
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    n = means.shape[0]
    opacity = torch.as_tensor(opacity, dtype=dtype).expand(n)
    rgb = torch.as_tensor(rgb, dtype=dtype).reshape(-1, 3).expand(n, 3)
    return Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0], dtype=dtype).expand(n, 4).clone(),
                     log_scales=torch.full((n, 3), math.log(scale), dtype=dtype),
                     opacity_logits=torch.logit(opacity), sh_dc=rgb_to_sh_dc(rgb), sh_rest=torch.zeros(n, 0, 3,
                                                                                                     dtype=dtype))


def reference_inputs(g: Gaussians, views, ks, width, height, antialiased=False):
    """Projection and colours from gsplat's torch reference (camera 0)."""
    covars, _ = _quat_scale_to_covar_preci(g.quats, torch.exp(g.log_scales), True, False)
    radii, means2d, depths, conics, comps = _fully_fused_projection(
        g.means, covars, views, ks, width, height, eps2d=0.3, calc_compensations=antialiased)
    opac = torch.sigmoid(g.opacity_logits)[None] * (comps if antialiased else 1.0)
    campos = torch.inverse(views)[:, :3, 3]
    coeffs = torch.cat([g.sh_dc[:, None], g.sh_rest], 1)
    colors = torch.clamp_min(_spherical_harmonics(g.sh_degree, g.means[None] - campos[:, None],
                                                  coeffs[None].expand(len(views), -1, -1, -1)) + 0.5, 0)
    return [t[0].detach() for t in (means2d, conics, opac, colors, depths, (radii > 0).all(-1))]


def naive_pixel_loop(means2d, conics, opac, feats, depths, visible, width, height):
    """gsplat's per-pixel kernel, one pixel and one Gaussian at a time (all visible Gaussians, by depth)."""
    order = [i for i in torch.argsort(depths, stable=True).tolist() if visible[i]]
    m, q, o, f = means2d.tolist(), conics.tolist(), opac.tolist(), feats.tolist()
    out = np.zeros((height, width, len(f[0]) + 1))
    for y in range(height):
        for x in range(width):
            t, acc = 1.0, np.zeros(len(f[0]))
            for i in order:
                dx, dy = m[i][0] - (x + 0.5), m[i][1] - (y + 0.5)
                sigma = 0.5 * (q[i][0] * dx * dx + q[i][2] * dy * dy) + q[i][1] * dx * dy
                alpha = min(0.999, o[i] * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    break
                acc += alpha * t * np.array(f[i])
                t *= 1 - alpha
            out[y, x, :-1], out[y, x, -1] = acc, 1 - t
    return torch.from_numpy(out)


def naive_gaussian_loop(means2d, conics, opac, feats, depths, visible, width, height):
    """The same rules, vectorised over pixels and looping over depth-sorted Gaussians."""
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64) + 0.5,
                            torch.arange(width, dtype=torch.float64) + 0.5, indexing="ij")
    t = torch.ones(height, width, dtype=torch.float64)
    done = torch.zeros(height, width, dtype=torch.bool)
    acc = torch.zeros(height, width, feats.shape[1], dtype=torch.float64)
    for i in torch.argsort(depths, stable=True).tolist():
        if not visible[i]:
            continue
        dx, dy = means2d[i, 0].double() - xs, means2d[i, 1].double() - ys
        a, b, c = conics[i].double()
        sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
        alpha = torch.clamp(opac[i].double() * torch.exp(-sigma), max=0.999)
        use = ~done & (sigma >= 0) & (alpha >= 1 / 255)
        stop = use & (t * (1 - alpha) <= 1e-4)
        done |= stop
        use &= ~stop
        acc += torch.where(use, alpha * t, 0)[..., None] * feats[i].double()
        t = torch.where(use, t * (1 - alpha), t)
    return torch.cat([acc, (1 - t)[..., None]], -1)


def test_compositing_equals_naive_pixel_loop():
    g = random_cloud(40, sh_degree=1, seed=3)
    views, ks = torch.eye(4)[None].clone(), k_matrix(24.0, 10.0, 8.0)
    views[0, 2, 3] = 1.2                                                       # cloud 0.7..1.7 in front
    out = render(g, views, ks, 20, 16, background=(0.0, 0.0, 0.0))
    m2, q, o, col, d, vis = reference_inputs(g, views, ks, 20, 16)
    ref = naive_pixel_loop(m2, q, o, torch.cat([col, d[:, None]], -1), d, vis, 20, 16)
    assert ref[..., -1].max() > 0.9 and (ref[..., -1] < 0.5).any()
    torch.testing.assert_close(out.rgb[0].double(), ref[..., :3], rtol=0, atol=2e-5)
    torch.testing.assert_close(out.alpha[0, ..., 0].double(), ref[..., -1], rtol=0, atol=2e-5)


@pytest.mark.parametrize("antialiased", [False, True])
def test_compositing_equals_naive_loop_on_many_tiles_with_early_stop(antialiased):
    g = random_cloud(300, sh_degree=0, seed=5)
    g.opacity_logits += 3.0                                                    # mostly opaque: pixels stop early
    views, ks = ring_cameras((40.0,), size=64)
    ks[0, 1, 2] = 21.0
    w, h = 64, 45                                                              # partial tiles on the bottom row
    out = render(g, views, ks, w, h, background=(0.0, 0.0, 0.0), antialiased=antialiased)
    m2, q, o, col, d, vis = reference_inputs(g, views, ks, w, h, antialiased)
    ref = naive_gaussian_loop(m2, q, o, torch.cat([col, d[:, None]], -1), d, vis, w, h)
    torch.testing.assert_close(out.rgb[0].double(), ref[..., :3], rtol=0, atol=1e-4)
    torch.testing.assert_close(out.alpha[0].double(), ref[..., -1:], rtol=0, atol=1e-4)
    expected_depth = ref[..., 3:4] / ref[..., -1:].clamp_min(1e-10)
    torch.testing.assert_close(out.depth[0].double(), expected_depth, rtol=1e-4, atol=1e-4)


def test_chunk_size_does_not_change_the_result():
    g = random_cloud(300, seed=6)
    views, ks = ring_cameras((0.0,), size=48)
    out = render(g, views, ks, 48, 48)
    p = out.meta
    feats = torch.cat([torch.rand(1, g.num, 3), p["depths"][..., None]], -1)
    runs = [rasterize(p["means2d"], p["conics"], p["opacities"], p["radii"], p["depths"], feats, 48, 48, chunk=c)
            for c in (3, 16, 1000)]
    for acc, alpha, n in runs[1:]:
        torch.testing.assert_close(acc, runs[0][0], rtol=0, atol=1e-5)
        torch.testing.assert_close(alpha, runs[0][1], rtol=0, atol=1e-5)
        assert n == runs[0][2] > 0


def test_one_gaussian_at_the_centre():
    g = blobs([0.0, 0.0, 2.0], opacity=0.7, rgb=(0.2, 0.6, 0.9))
    out = render(g, EYE, k_matrix(100.0, 16.5, 16.5), 33, 33, background=(1.0, 1.0, 1.0))
    alpha = out.alpha[0, 16, 16, 0]
    torch.testing.assert_close(alpha, torch.tensor(0.7), rtol=0, atol=1e-6)       # d = 0: alpha = opacity
    torch.testing.assert_close(out.rgb[0, 16, 16], torch.tensor([0.2, 0.6, 0.9]) * 0.7 + 0.3, rtol=0, atol=1e-6)
    torch.testing.assert_close(out.depth[0, 16, 16, 0], torch.tensor(2.0), rtol=1e-6, atol=0)
    # Off-centre pixels follow the projected Gaussian: var = (f s / z)^2 + eps2d.
    var = (100.0 * 0.05 / 2.0) ** 2 + 0.3
    torch.testing.assert_close(out.alpha[0, 16, 19, 0], torch.tensor(0.7 * math.exp(-0.5 * 9 / var)), rtol=1e-5,
                               atol=0)
    assert torch.equal(out.rgb[0, 0, 0], torch.ones(3)) and out.alpha[0, 0, 0, 0] == 0      # far corner: background
    opaque = render(blobs([0.0, 0.0, 2.0], opacity=0.99999), EYE, k_matrix(100.0, 16.5, 16.5), 33, 33)
    torch.testing.assert_close(opaque.alpha[0, 16, 16, 0], torch.tensor(ALPHA_MAX), rtol=0, atol=1e-6)


def test_gaussians_behind_or_beyond_contribute_nothing_and_empty_is_background():
    g = blobs([[0.0, 0.0, -2.0], [0.0, 0.0, 0.001], [0.0, 0.0, 20.0]], scale=0.5, opacity=0.9)
    out = render(g, EYE, k_matrix(50.0, 16.0, 16.0), 32, 32, background=(0.25, 0.5, 1.0), far=10.0)
    assert out.alpha.abs().max() == 0
    assert torch.equal(out.rgb, torch.tensor([0.25, 0.5, 1.0]).expand(1, 32, 32, 3))
    empty = render(Gaussians.empty(), EYE, k_matrix(50.0, 16.0, 16.0), 32, 24)
    assert empty.rgb.shape == (1, 24, 32, 3) and torch.equal(empty.rgb, torch.ones(1, 24, 32, 3))
    assert empty.depth.shape == empty.alpha.shape == (1, 24, 32, 1)


def test_gaussian_partly_outside_renders_its_visible_part():
    # Mean projects to x = -2.5 (left of the image), y = 16.5.
    g = blobs([-0.1, 0.0, 2.0], scale=0.1, opacity=0.8)
    out = render(g, EYE, k_matrix(50.0, 0.0, 16.5), 32, 33)
    var = (50.0 * 0.1 / 2.0) ** 2 * (1 + (0.1 / 2.0) ** 2) + 0.3          # J adds the x/z term; cov_xy = 0
    for x in (0, 2, 4):
        want = 0.8 * math.exp(-0.5 * (x + 0.5 + 2.5) ** 2 / var)
        torch.testing.assert_close(out.alpha[0, 16, x, 0], torch.tensor(want), rtol=1e-5, atol=0)
    assert 0.8 * math.exp(-0.5 * (6 + 0.5 + 2.5) ** 2 / var) < 1 / 255                # skipped as too faint
    assert out.alpha[0, 16, 6:].max() == 0


def test_two_gaussians_sorted_by_depth_not_by_input_order():
    near, far = ([0.0, 0.0, 2.0], (1.0, 0.0, 0.0)), ([0.0, 0.0, 3.0], (0.0, 0.0, 1.0))
    views, ks = EYE, k_matrix(100.0, 16.5, 16.5)
    a = render(blobs([near[0], far[0]], opacity=0.6, rgb=[near[1], far[1]]), views, ks, 33, 33)
    b = render(blobs([far[0], near[0]], opacity=0.6, rgb=[far[1], near[1]]), views, ks, 33, 33)
    assert torch.equal(a.rgb, b.rgb) and torch.equal(a.depth, b.depth)
    w1, w2 = 0.6, 0.6 * 0.4                                                   # weights at the centre pixel
    torch.testing.assert_close(a.rgb[0, 16, 16], torch.tensor([w1, 0.0, w2]) + (1 - w1 - w2), rtol=0, atol=1e-6)
    torch.testing.assert_close(a.depth[0, 16, 16, 0], torch.tensor((w1 * 2 + w2 * 3) / (w1 + w2)), rtol=1e-6,
                               atol=0)


def test_cameras_batch_equals_single_renders_and_numpy_cameras_work():
    g = random_cloud(200, sh_degree=2, seed=8)
    views, ks = ring_cameras((0.0, 90.0, 200.0), size=40)
    both = render(g, views.numpy().astype(np.float64), ks.numpy(), 40, 40)
    for c in range(3):
        one = render(g, views[c:c + 1], ks[c:c + 1], 40, 40)
        torch.testing.assert_close(both.rgb[c:c + 1], one.rgb, rtol=0, atol=1e-6)
    assert both.meta["backend"] == "torch" and both.rgb.dtype == torch.float32


def test_degree_zero_colour():
    g = blobs([0.0, 0.0, 2.0], opacity=0.999, rgb=(0.3, 0.5, 0.7))
    g.sh_dc += torch.tensor([0.0, 0.0, -10.0])                                  # negative colour clamps at 0
    out = render(g, EYE, k_matrix(100.0, 16.5, 16.5), 33, 33, background=(0.0, 0.0, 0.0))
    want = torch.clamp_min(SH_C0 * g.sh_dc[0] + 0.5, 0) * ALPHA_MAX
    torch.testing.assert_close(out.rgb[0, 16, 16], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"viewmats": torch.eye(4)}, r"`viewmats` must be \[C,4,4\]"),
    ({"Ks": torch.eye(3)}, r"`Ks` must be \[C,3,3\]"),
    ({"Ks": torch.eye(3).expand(2, 3, 3)}, "same C"),
    ({"width": 0}, "`width` must be a positive int"),
    ({"height": 2.5}, "`height` must be a positive int"),
    ({"backend": "gsplat"}, "`backend` 'gsplat' needs the Gaussians on a CUDA device"),
    ({"backend": "cuda"}, "`backend` must be one of"),
    ({"sh_degree": 1}, "`sh_degree` must be <= the Gaussians' degree 0"),
    ({"background": (1.0, 1.0)}, "`background` must be 3 floats"),
    ({"near": 0.0}, "`near` and `far`"),
])
def test_bad_input_raises_value_error_naming_the_argument(kwargs, match):
    args = {"gaussians": blobs([0.0, 0.0, 2.0]), "viewmats": EYE, "Ks": k_matrix(50.0, 8.0, 8.0), "width": 16,
            "height": 16} | kwargs
    with pytest.raises(ValueError, match=match):
        render(**args)


def test_options_object_is_frozen_and_equivalent_to_keywords():
    g = random_cloud(100, seed=9)
    views, ks = ring_cameras((10.0,), size=32)
    opts = RenderOptions(background=(0.0, 0.0, 0.0), antialiased=True, eps2d=0.2)
    a = render(g, views, ks, 32, 32, options=opts)
    b = render(g, views, ks, 32, 32, background=(0.0, 0.0, 0.0), antialiased=True, eps2d=0.2)
    assert torch.equal(a.rgb, b.rgb)
    with pytest.raises(AttributeError):
        opts.eps2d = 0.1  # type: ignore[misc]
    with pytest.raises(ValueError, match="`options` must not be combined"):
        render(g, views, ks, 32, 32, eps2d=0.1, options=opts)
