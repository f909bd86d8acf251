"""SyncDreamer at the tiny golden config reproduces the original implementation's tensors (CPU, fp32).

Golden data: ../shared/syncdreamer/golden (README "Call sequence to reproduce"). Tolerances from
its README: single evaluations max|a-b| <= 1e-4 * max(1, max|b|), sampler outputs <= 2e-4 * ...
The network is built once per module; the 4-step sampler runs once and every step is checked.
The default run covers every golden file and tensor; three tests marked `slow` (``-m slow``) add
the parts that each cost another full evaluation on the CPU: eps_cond_only and elev15_eps_cfg
for all 16 views (views 0-3 by default), all 16 decoded views (2 by default) and the eta = 0 run
through the network (by default its DDIM chain is replayed from the recorded eps).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ai_modules.sync_dreamer import SyncDreamerConfig, SyncDreamerModel
from ai_modules.sync_dreamer.generate import sample_latents
from ai_modules.sync_dreamer.preprocess import clip_pixels, elevation_radians, prepare_image
from ai_modules.sync_dreamer.sampler import ddim_step, make_ddim_schedule
from ai_modules.sync_dreamer.volume import frustum_grid, spatial_volume_points, spatial_warp_grid
from ai_modules.sync_dreamer.weights import check_and_load
from tests import shared_data

safetensors_torch = pytest.importorskip("safetensors.torch")


def shared_dir() -> Path:
    return shared_data.shared_dir("syncdreamer")


GOLDEN = shared_dir() / "golden"
pytestmark = pytest.mark.skipif(not (GOLDEN / "tiny_state_dict.safetensors").is_file(),
                                reason=f"golden data not found at {GOLDEN}")
SINGLE, SAMPLER = 1e-4, 2e-4


def assert_golden(name: str, actual: torch.Tensor, expected: torch.Tensor, rel: float = SINGLE) -> None:
    assert tuple(actual.shape) == tuple(expected.shape), (name, actual.shape, expected.shape)
    err = (actual.detach().double() - expected.double()).abs().max().item()
    limit = rel * max(1.0, expected.abs().max().item())
    assert err <= limit, f"{name}: max|a-b| = {err:.3e} > {limit:.3e}"


@pytest.fixture(scope="module", autouse=True)
def _no_grad():
    with torch.no_grad():
        yield


@pytest.fixture(scope="module")
def golden() -> dict[str, dict[str, torch.Tensor]]:
    return {name: safetensors_torch.load_file(str(GOLDEN / f"{name}.safetensors"))
            for name in ("preprocess", "forward_t501", "sampler_ddim4_cfg2")}


@pytest.fixture(scope="module")
def model() -> SyncDreamerModel:
    m = SyncDreamerModel(SyncDreamerConfig.tiny()).eval()
    state = safetensors_torch.load_file(str(GOLDEN / "tiny_state_dict.safetensors"))
    absent = check_and_load(m, state, allowed_missing=("clip_image_encoder.",), source="tiny_state_dict")
    assert absent and all(k.startswith("clip_image_encoder.") for k in absent)
    return m


def test_the_tiny_state_dict_is_consumed_entirely(model):
    state = safetensors_torch.load_file(str(GOLDEN / "tiny_state_dict.safetensors"))
    ours = model.state_dict()
    assert set(state) == {k for k in ours if not k.startswith("clip_image_encoder.")}
    assert all(torch.equal(ours[k], v) for k, v in state.items())


# --- 1, 2. preprocessing --------------------------------------------------------------------------

def test_preprocessing_is_bit_exact(golden):
    g = golden["preprocess"]
    rgba = Image.open(GOLDEN / "input_rgba.png")
    assert torch.equal(prepare_image(rgba, 200)[None], g["input_image"])
    assert torch.equal(prepare_image(rgba, -1)[None], g["input_image_crop_minus1"])
    assert torch.equal(elevation_radians(30.0)[None], g["input_elevation"])
    pixels = clip_pixels(g["input_image"].permute(0, 3, 1, 2).contiguous())
    assert_golden("clip_pixel_values", pixels, g["clip_pixel_values"])


# --- 3. VAE posterior sample ----------------------------------------------------------------------

def test_vae_posterior_and_input_latent(model, golden):
    g = golden["preprocess"]
    image = g["input_image"].permute(0, 3, 1, 2).contiguous()
    mean, logvar = model.encode_posterior(image)
    assert_golden("vae_posterior_mean", mean, g["vae_posterior_mean"])
    assert_golden("vae_posterior_logvar", logvar, g["vae_posterior_logvar"])
    assert_golden("x_input", model.encode_input_latent(image, g["vae_eps"]), g["x_input"])


# --- 4. one denoiser evaluation at t = 501 --------------------------------------------------------

@pytest.fixture(scope="module")
def forward(model, golden):
    """Run the CFG denoiser once as the original (bvn 4), recording the UNet calls and chunk-0 conditions."""
    g, p = golden["forward_t501"], golden["preprocess"]
    calls: list[tuple[tuple, torch.Tensor]] = []
    chunks: list[tuple] = []
    handle = model.model.diffusion_model.register_forward_hook(lambda mod, args, out: calls.append((args, out)))
    try:
        eps = model.denoise(g["x_noisy"], g["timesteps"], p["x_input"], p["clip_embed"], p["input_elevation"][:, 0],
                            cfg_scale=2.0, batch_view_num=4, chunk_hook=lambda *a: chunks.append(a))
    finally:
        handle.remove()
    return {"eps_cfg": eps, "calls": calls, "chunks": chunks}


def test_embeddings(model, golden):
    g, p = golden["forward_t501"], golden["preprocess"]
    assert_golden("v_embed", model.viewpoint_embedding(1, p["input_elevation"][:, 0]), g["v_embed"])
    assert_golden("t_embed", model.embed_time(g["timesteps"]), g["t_embed"])
    assert_golden("elev15_v_embed", model.viewpoint_embedding(1, g["elev15_input_elevation"]), g["elev15_v_embed"])
    assert_golden("elev15_input_elevation", elevation_radians(15.0), g["elev15_input_elevation"])


def test_spatial_volume(model, golden):
    g = golden["forward_t501"]
    feats = model.spatial_volume.encode_views(g["x_noisy"], g["t_embed"], g["v_embed"])
    assert_golden("target_encoder_feats", feats, g["target_encoder_feats"])
    grids = spatial_warp_grid(spatial_volume_points().reshape(3, -1), model.Ks, model.poses, 32)
    assert_golden("spatial_warp_grid_view0", grids[0].reshape(1, 32, 1024, 2), g["spatial_warp_grid_view0"])
    assert_golden("spatial_warp_grid_view5", grids[5].reshape(1, 32, 1024, 2), g["spatial_warp_grid_view5"])
    volume = model.spatial_volume.construct_spatial_volume(g["x_noisy"], g["t_embed"], g["v_embed"], model.poses,
                                                           model.Ks)
    assert_golden("spatial_volume", volume, g["spatial_volume"])


def test_chunk0_conditions(model, golden, forward):
    g = golden["forward_t501"]
    assert_golden("chunk0_frustum_grid_views01", frustum_grid(model.Ks[:2], model.poses[:2]),
                  g["chunk0_frustum_grid_views01"])
    indices, context, feats, x_concat = forward["chunks"][0]
    assert indices.tolist() == [0, 1, 2, 3]
    assert_golden("chunk0_clip_embed_projected", context, g["chunk0_clip_embed_projected"])
    assert_golden("chunk0_x_concat", x_concat, g["chunk0_x_concat"])
    for width in (32, 16, 8, 4):
        assert_golden(f"chunk0_frustum_feats_{width}_views01", feats[width][:2],
                      g[f"chunk0_frustum_feats_{width}_views01"])


def test_chunk0_unet_call(forward, golden):
    g = golden["forward_t501"]
    assert len(forward["calls"]) == 4
    (unet_in, timesteps, context, volumes), out = forward["calls"][0]
    assert_golden("chunk0_unet_input", unet_in, g["chunk0_unet_input"])
    assert torch.equal(timesteps, g["chunk0_unet_timesteps"])
    assert_golden("chunk0_unet_context", context, g["chunk0_unet_context"])
    assert all(v[4:].abs().max() == 0 for v in volumes.values())          # unconditional half: zero volumes
    assert_golden("chunk0_unet_output", out, g["chunk0_unet_output"])


def test_eps_cond_uncond_and_cfg(forward, golden):
    g = golden["forward_t501"]
    outs = [out for _, out in forward["calls"]]
    assert_golden("eps_cond", torch.cat([o[:4] for o in outs])[None], g["eps_cond"])
    assert_golden("eps_uncond", torch.cat([o[4:] for o in outs])[None], g["eps_uncond"])
    assert_golden("eps_cfg", forward["eps_cfg"], g["eps_cfg"])


def chunk0_eps(model, golden, elevation: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """eps of views 0-3 only: the spatial volume (all views) and one UNet chunk, as `denoise` does."""
    g, p = golden["forward_t501"], golden["preprocess"]
    t = g["timesteps"]
    v_embed, t_embed = model.viewpoint_embedding(1, elevation), model.embed_time(t)
    volume = model.spatial_volume.construct_spatial_volume(g["x_noisy"], t_embed, v_embed, model.poses, model.Ks)
    context, feats, x_concat = model.target_view_feats(p["x_input"], volume, p["clip_embed"], t_embed, v_embed,
                                                       torch.arange(4))
    return model.model(g["x_noisy"][0, :4], t.expand(4), context, feats, x_concat, cfg_scale)[None]


def test_plain_forward_without_guidance(model, golden, forward):
    """cfg_scale 1 runs the conditional branch alone (views 0-3 here; all views in the slow test)."""
    g = golden["forward_t501"]
    eps_cond = torch.cat([out[:4] for _, out in forward["calls"]])[None]
    assert_golden("eps_cond_only (= eps_cond)", eps_cond, g["eps_cond_only"])
    eps = chunk0_eps(model, golden, golden["preprocess"]["input_elevation"][:, 0], cfg_scale=1.0)
    assert_golden("eps_cond_only[:, :4]", eps, g["eps_cond_only"][:, :4])


def test_elevation_15_views_0_to_3(model, golden):
    g = golden["forward_t501"]
    eps = chunk0_eps(model, golden, g["elev15_input_elevation"], cfg_scale=2.0)
    assert_golden("elev15_eps_cfg[:, :4]", eps, g["elev15_eps_cfg"][:, :4])


def test_ddim_update_at_index_2(model, golden, forward):
    g = golden["forward_t501"]
    schedule = make_ddim_schedule(model.alphas_cumprod, 4, eta=1.0)
    assert int(schedule.timesteps[2]) == 501
    x_prev = ddim_step(g["x_noisy"], forward["eps_cfg"], schedule, 2, g["ddim_step_noise"])
    assert_golden("x_prev", x_prev, g["x_prev"])


# --- 5. the full 4-step sampler -------------------------------------------------------------------

@pytest.fixture(scope="module")
def sampler_run(model, golden):
    """generate.py's path with the global-RNG order reproduced by one seeded CPU generator (no injected noise)."""
    p = golden["preprocess"]
    generator = torch.Generator().manual_seed(20240611)
    image = prepare_image(Image.open(GOLDEN / "input_rgba.png"), 200).permute(2, 0, 1)[None].contiguous()
    vae_eps = torch.randn((1, 4, 32, 32), generator=generator)
    x_input = model.encode_input_latent(image, vae_eps)
    steps: list[tuple[torch.Tensor, torch.Tensor]] = []
    final = sample_latents(model, x_input, p["clip_embed"], elevation_radians(30.0), steps=4, cfg_scale=2.0, eta=1.0,
                           batch_view_num=4, generator=generator, on_step=lambda i, n, x, eps: steps.append((x, eps)))
    return {"vae_eps": vae_eps, "x_input": x_input, "steps": steps, "final": final}


def test_rng_order_reproduces_the_recorded_noise(golden):
    g = golden["sampler_ddim4_cfg2"]
    generator = torch.Generator().manual_seed(20240611)
    for name, shape in [("vae_eps", (1, 4, 32, 32)), ("x_T", (1, 16, 4, 32, 32)), ("step0_noise", (1, 16, 4, 32, 32)),
                        ("step1_noise", (1, 16, 4, 32, 32)), ("step2_noise", (1, 16, 4, 32, 32))]:
        assert torch.equal(torch.randn(shape, generator=generator), g[name]), name


def test_ddim_tables(model, golden):
    g = golden["sampler_ddim4_cfg2"]
    for eta in (1, 0):
        schedule = make_ddim_schedule(model.alphas_cumprod, 4, eta=float(eta))
        assert torch.equal(schedule.timesteps, g["ddim_timesteps"])
        for field in ("alphas", "alphas_prev", "sigmas", "sqrt_one_minus_alphas"):
            assert torch.allclose(getattr(schedule, field), g[f"ddim_eta{eta}_{field}"], rtol=0, atol=1e-7), field


def test_sampler_input_latent(sampler_run, golden):
    g = golden["sampler_ddim4_cfg2"]
    assert torch.equal(sampler_run["vae_eps"], g["vae_eps"])
    assert_golden("x_input", sampler_run["x_input"], g["x_input"])


@pytest.mark.parametrize("step", [0, 1, 2, 3])
def test_sampler_steps(sampler_run, golden, step):
    g = golden["sampler_ddim4_cfg2"]
    x, eps = sampler_run["steps"][step]
    assert_golden(f"step{step}_eps_cfg", eps, g[f"step{step}_eps_cfg"], SAMPLER if step else SINGLE)
    if step < 3:
        assert_golden(f"step{step}_x_out", x, g[f"step{step}_x_out"], SAMPLER)


def test_final_latents_and_decoded_images(model, sampler_run, golden):
    """Final latents, and the decoder on views 0 and 9 (all 16 in the slow test)."""
    g = golden["sampler_ddim4_cfg2"]
    assert_golden("final_latents", sampler_run["final"], g["final_latents"], SAMPLER)
    for n in (0, 9):
        assert_golden(f"decoded_images[:, {n}]", model.decode_latents(sampler_run["final"][:, n]),
                      g["decoded_images"][:, n], SAMPLER)


def test_eta0_chain_from_the_recorded_eps(model, golden):
    """The eta = 0 run's DDIM updates, fed the recorded eps: reproduces eta0_final_latents."""
    g = golden["sampler_ddim4_cfg2"]
    schedule = make_ddim_schedule(model.alphas_cumprod, 4, eta=0.0)
    x = g["x_T"]
    for step, index in enumerate((3, 2, 1, 0)):
        x = ddim_step(x, g[f"eta0_step{step}_eps_cfg"], schedule, index, torch.zeros_like(x))
    assert_golden("eta0_final_latents", x, g["eta0_final_latents"], SAMPLER)
    assert torch.equal(g["eta0_step0_eps_cfg"], g["step0_eps_cfg"])       # same x_T and t: same eps


# --- slow tier (`-m slow`): the rest of every golden tensor, each a full extra evaluation -------------

@pytest.mark.slow
def test_all_views_plain_forward_and_elevation_15(model, golden):
    g, p = golden["forward_t501"], golden["preprocess"]
    eps = model.denoise(g["x_noisy"], g["timesteps"], p["x_input"], p["clip_embed"], p["input_elevation"][:, 0],
                        cfg_scale=1.0, batch_view_num=16)
    assert_golden("eps_cond_only", eps, g["eps_cond_only"])
    eps = model.denoise(g["x_noisy"], g["timesteps"], p["x_input"], p["clip_embed"], g["elev15_input_elevation"],
                        cfg_scale=2.0, batch_view_num=16)
    assert_golden("elev15_eps_cfg", eps, g["elev15_eps_cfg"])


@pytest.mark.slow
def test_all_decoded_images(model, sampler_run, golden):
    decoded = torch.stack([model.decode_latents(sampler_run["final"][:, n]) for n in range(16)], 1)
    assert_golden("decoded_images", decoded, golden["sampler_ddim4_cfg2"]["decoded_images"], SAMPLER)


@pytest.mark.slow
def test_eta0_sampler_run(model, sampler_run, golden):
    """The whole eta = 0 run through the network (slow: three more denoiser evaluations)."""
    g = golden["sampler_ddim4_cfg2"]
    steps: list[torch.Tensor] = []
    final = sample_latents(model, sampler_run["x_input"], golden["preprocess"]["clip_embed"], elevation_radians(30.0),
                           steps=4, cfg_scale=2.0, eta=0.0, batch_view_num=16, x_T=g["x_T"],
                           generator=torch.Generator().manual_seed(0), on_step=lambda i, n, x, eps: steps.append(eps))
    for step in range(4):
        assert_golden(f"eta0_step{step}_eps_cfg", steps[step], g[f"eta0_step{step}_eps_cfg"], SAMPLER)
    assert_golden("eta0_final_latents", final, g["eta0_final_latents"], SAMPLER)
