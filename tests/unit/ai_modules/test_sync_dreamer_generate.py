"""SyncDreamer as a library call on the CPU: models dir -> 16 views; speed options; the benchmark's core.

A "micro" model (the tiny config with fewer attention levels and a one-block VAE) and a stand-in
VAE decoder keep each generation short; the numerics are covered by the golden tests.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from ai_modules.errors import InputError
from ai_modules.sync_dreamer import RunOptions, SyncDreamer, SyncDreamerConfig, SyncDreamerModel
from ai_modules.sync_dreamer.config import VAEConfig
from ai_modules.sync_dreamer.speed import (GIB, PER_VIEW_BYTES, RESERVE_BYTES, auto_batch_view_num,
                                           choose_batch_view_num, precision_context, resolve_dtype)

TINY = SyncDreamerConfig.tiny()
MICRO = replace(TINY, unet=replace(TINY.unet, attention_resolutions=(4,)),
                vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=0))
CPU = torch.device("cpu")
FP32 = RunOptions(precision="fp32")


def cutout(size: int = 120) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[(xx - 60) ** 2 + (yy - 50) ** 2 < 40 ** 2] = (200, 60, 30, 255)
    return Image.fromarray(rgba, mode="RGBA")


@pytest.fixture(scope="module")
def micro_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return SyncDreamerModel(MICRO).state_dict()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, micro_state):
    root = tmp_path_factory.mktemp("models")
    (root / "syncdreamer").mkdir()
    torch.save({"state_dict": micro_state}, root / "syncdreamer" / "syncdreamer-pretrain.ckpt")
    return root


class NearestDecoder(torch.nn.Module):
    """Stand-in for the VAE decoder (its 256x256 convolutions dominate CPU time): x8 nearest of 3 channels."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z[:, :3]).repeat_interleave(8, -1).repeat_interleave(8, -2)


def load(models_dir, options: RunOptions = FP32) -> SyncDreamer:
    sd = SyncDreamer.from_models_dir(models_dir, device="cpu", options=options, config=MICRO)
    sd.model.first_stage_model.decoder = NearestDecoder()
    return sd


@pytest.fixture(scope="module")
def generator(models_dir) -> SyncDreamer:
    return load(models_dir)


def test_generate_gives_16_views_and_their_cameras(generator, micro_state):
    steps = []
    views = generator.generate(cutout(), elevation_deg=20.0, seed=1, steps=2, cfg_scale=1.0,
                               on_step=lambda i, n, x, eps: steps.append((i, n, tuple(x.shape))))
    assert len(views) == 16 and all(v.mode == "RGB" and v.size == (256, 256) for v in views)
    assert steps == [(0, 2, (1, 16, 4, 32, 32)), (1, 2, (1, 16, 4, 32, 32))]
    viewmats, ks = generator.cameras()
    assert viewmats.shape == (16, 4, 4) and ks.shape == (16, 3, 3)
    assert torch.equal(viewmats[:, :3], micro_state["poses"]) and torch.equal(ks, micro_state["Ks"])
    assert generator.load_report is not None and generator.load_report.clip_source == "checkpoint"
    assert generator.batch_view_num == 16
    generator.unload()
    assert all(t.device.type == "cpu" for t in generator.model.state_dict().values())


def test_same_seed_same_latents_and_low_memory_changes_nothing(generator, models_dir):
    a = generator.generate_latents(cutout(), seed=5, steps=1, cfg_scale=1.0)
    low = load(models_dir, RunOptions(precision="fp32", low_memory=True))
    c = low.generate_latents(cutout(), seed=5, steps=1, cfg_scale=1.0)
    assert low.batch_view_num == 2
    torch.testing.assert_close(c, a, rtol=0, atol=1e-5)
    torch.testing.assert_close(low.decode(c), generator.decode(a), rtol=0, atol=1e-4)


def test_a_raising_step_callback_stops_the_run(generator):
    class Stop(Exception):
        pass

    def stop(step, total, x, eps):
        raise Stop

    with pytest.raises(Stop):
        generator.generate_latents(cutout(), steps=2, cfg_scale=1.0, on_step=stop)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"elevation_deg": 95.0}, ValueError, "elevation_deg"),
    ({"steps": 0}, ValueError, "steps"),
    ({"steps": 3}, ValueError, "below 1000"),
    ({"cfg_scale": float("nan")}, ValueError, "cfg_scale"),
])
def test_input_checks_name_the_argument(generator, kwargs, error, match):
    with pytest.raises(error, match=match):
        generator.generate_latents(cutout(), **kwargs)


def test_rgb_input_is_refused_with_the_fix(generator):
    with pytest.raises(InputError, match="RGBA"):
        generator.generate_latents(cutout().convert("RGB"), steps=1)
    empty = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    with pytest.raises(InputError, match="empty alpha"):
        generator.generate_latents(empty, steps=1)


def test_auto_batch_view_num_from_free_memory():
    per_view = PER_VIEW_BYTES[torch.bfloat16]
    assert auto_batch_view_num(RESERVE_BYTES + 3 * per_view + 1, torch.bfloat16) == 3
    assert auto_batch_view_num(80 * GIB, torch.bfloat16) == 16
    assert auto_batch_view_num(GIB, torch.bfloat16) == 1
    assert auto_batch_view_num(RESERVE_BYTES + 3 * per_view, torch.float32) < 3
    assert choose_batch_view_num(RunOptions(batch_view_num=5), CPU, torch.float32) == 5
    assert choose_batch_view_num(RunOptions(low_memory=True), CPU, torch.float32) == 2
    assert choose_batch_view_num(RunOptions(), CPU, torch.float32) == 16


def test_precision_resolution_and_contexts():
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bf16", CPU) == torch.bfloat16 and resolve_dtype("fp16", CPU) == torch.float16
    with pytest.raises(ValueError, match="precision"):
        resolve_dtype("fp8", CPU)
    with precision_context(CPU, torch.float32):
        assert not torch.is_autocast_enabled("cpu")
    with precision_context(CPU, torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_benchmark_core_runs_on_cpu(micro_state):
    bench = pytest.importorskip("benchmarks.bench_syncdreamer")
    model = SyncDreamerModel(MICRO)
    model.load_state_dict(micro_state)
    model.first_stage_model.decoder = NearestDecoder()
    result = bench.run_generation(model, CPU, FP32, steps=1, cfg_scale=2.0, warmup_steps=0)
    assert result["views"] == 16 and result["finite"] and result["batch_view_num"] == 16
    assert result["sample_s"] > 0 and result["total_s"] >= result["sample_s"]
    assert set(bench.MODES) >= {"default", "low_memory"} and bench.MODES["low_memory"].low_memory
    assert bench.test_image().mode == "RGBA"
