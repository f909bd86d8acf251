"""The torch renderer against gsplat's CUDA rasterizer on the same GPU tensors (images and gradients).

Run with `python -m pytest tests/gpu -m gpu -s` to see the figures; the first call
compiles gsplat's kernels (about two minutes; set TORCH_EXTENSIONS_DIR to keep them).
"""

from __future__ import annotations

import os

import pytest
import torch

from ai_modules.gaussians import Gaussians
from ai_modules.splatting import render
from ai_modules.splatting.scenes import close_camera, random_cloud, ring_cameras, textured_sphere

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

PARAMS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")
SIZE = 256


@pytest.fixture(autouse=True)
def _extensions_dir(tmp_path_factory):
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def scene(name: str, degree: int) -> Gaussians:
    if name == "cloud":
        return random_cloud(5_000, sh_degree=degree, extent=0.4, seed=1)
    return textured_sphere(20_000, sh_degree=degree)


def cameras(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "ring":
        return ring_cameras((30.0, 202.5), size=SIZE)
    return close_camera(size=SIZE)


def render_with_grads(g: Gaussians, views, ks, backend: str, antialiased: bool, weights: dict):
    tensors = {name: getattr(g, name).detach().clone().requires_grad_() for name in PARAMS}
    out = render(Gaussians(**tensors), views, ks, SIZE, SIZE, backend=backend, antialiased=antialiased)
    loss = (out.rgb * weights["rgb"]).sum() + (out.alpha * weights["alpha"]).sum() \
        + (out.depth * weights["depth"]).sum()
    loss.backward()
    return out, {name: t.grad for name, t in tensors.items()}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


@pytest.mark.parametrize("camera", ["ring", "close"])
@pytest.mark.parametrize("antialiased", [False, True], ids=["classic", "antialiased"])
@pytest.mark.parametrize("degree", [0, 3])
@pytest.mark.parametrize("scene_name", ["cloud", "sphere"])
def test_torch_backend_matches_gsplat(scene_name, degree, antialiased, camera):
    g = scene(scene_name, degree).to("cuda")
    views, ks = (t.cuda() for t in cameras(camera))
    gen = torch.Generator(device="cuda").manual_seed(0)
    shape = (views.shape[0], SIZE, SIZE)
    weights = {"rgb": torch.rand(*shape, 3, generator=gen, device="cuda") / SIZE,
               "alpha": torch.rand(*shape, 1, generator=gen, device="cuda") / SIZE}
    with torch.no_grad():
        probe = render(g, views, ks, SIZE, SIZE, backend="gsplat", antialiased=antialiased)
    # Depth only where the pixel is well covered: ED divides by alpha, which amplifies noise at the rims.
    weights["depth"] = torch.rand(*shape, 1, generator=gen, device="cuda") * (probe.alpha > 0.5) / SIZE

    ref, ref_grads = render_with_grads(g, views, ks, "gsplat", antialiased, weights)
    ours, our_grads = render_with_grads(g, views, ks, "torch", antialiased, weights)

    rgb_diff = (ours.rgb - ref.rgb).abs()
    alpha_diff = (ours.alpha - ref.alpha).abs()
    covered = (ours.alpha > 0.5) & (ref.alpha > 0.5)
    depth_diff = (ours.depth - ref.depth).abs()[covered]
    cosines = {name: cosine(our_grads[name], ref_grads[name]) for name in PARAMS
               if ref_grads[name] is not None and ref_grads[name].numel() and ref_grads[name].abs().sum() > 0}
    print(f"\n[{scene_name} sh{degree} {'aa' if antialiased else 'classic'} {camera}] "
          f"rgb mean {rgb_diff.mean():.2e} max {rgb_diff.max():.2e} | alpha mean {alpha_diff.mean():.2e} "
          f"max {alpha_diff.max():.2e} | depth(alpha>0.5) mean {depth_diff.mean():.2e} max {depth_diff.max():.2e} "
          f"| coverage {float(ref.alpha.detach().mean()):.3f} | grad cos "
          + " ".join(f"{k}={v:.5f}" for k, v in cosines.items()))
    assert ref.alpha.mean() > 0.05                                             # the scene is in view
    assert rgb_diff.mean() <= 1e-3 and rgb_diff.max() <= 1e-2
    assert alpha_diff.mean() <= 1e-3 and alpha_diff.max() <= 1e-2
    assert depth_diff.mean() <= 1e-3 and depth_diff.max() <= 2e-2
    assert set(cosines) >= {"means", "quats", "log_scales", "opacity_logits", "sh_dc"} | (
        {"sh_rest"} if degree else set())
    for name, value in cosines.items():
        assert value >= 0.99, (name, value)


def test_auto_backend_picks_gsplat_on_cuda():
    g = random_cloud(100).to("cuda")
    views, ks = (t.cuda() for t in ring_cameras((0.0,), size=64))
    assert render(g, views, ks, 64, 64).meta["backend"] == "gsplat"
    assert render(g, views, ks, 64, 64, backend="torch").meta["backend"] == "torch"
