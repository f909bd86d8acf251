"""SyncDreamer structure: the full state dict is the checkpoint's (meta device); configs, cameras, schedules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules.sync_dreamer import SyncDreamerConfig, SyncDreamerModel
from ai_modules.sync_dreamer.cameras import camera16, world_to_camera_4x4
from ai_modules.sync_dreamer.config import RunOptions, UNetConfig, VolumeConfig
from ai_modules.sync_dreamer.sampler import ddim_step, ddim_timesteps, make_ddim_schedule, training_schedule
from ai_modules.sync_dreamer.unet import timestep_embedding
from tests import shared_data


def shared_dir() -> Path:
    return shared_data.shared_dir("syncdreamer")


def shared_json(name: str) -> dict:
    path = shared_dir() / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def manifest() -> dict:
    return shared_json("syncdreamer_state_dict_manifest.json")


@pytest.fixture(scope="module")
def meta_model() -> SyncDreamerModel:
    with torch.device("meta"):
        return SyncDreamerModel(SyncDreamerConfig.full())


def test_full_state_dict_matches_the_manifest_key_for_key(meta_model, manifest):
    ours = meta_model.state_dict()
    keys = [row["key"] for row in manifest["keys"]]
    assert len(ours) == manifest["num_tensors"] == 1618
    assert list(ours) == keys                                         # same keys, same order
    for row in manifest["keys"]:
        tensor = ours[row["key"]]
        assert list(tensor.shape) == row["shape"], row["key"]
        assert str(tensor.dtype) == f"torch.{row['dtype']}", row["key"]
    buffers = {name for name, _ in meta_model.named_buffers()}
    assert buffers == {row["key"] for row in manifest["keys"] if row["kind"] == "buffer"}
    assert sum(t.numel() for t in ours.values()) == manifest["total_numel"]
    assert all(t.is_meta for t in ours.values())                       # nothing was allocated


def test_strict_assign_load_of_a_meta_state_dict(meta_model, manifest):
    state = {row["key"]: torch.empty(row["shape"], dtype=getattr(torch, row["dtype"]), device="meta")
             for row in manifest["keys"]}
    meta_model.load_state_dict(state, strict=True, assign=True)
    assert all(t.is_meta for t in meta_model.state_dict().values())
    with pytest.raises(RuntimeError, match="Missing key"):
        meta_model.load_state_dict({k: v for k, v in state.items() if k != "cc_projection.bias"}, strict=True,
                                   assign=True)


def test_tiny_config_is_the_golden_one():
    golden = shared_json("golden/tiny_config.json")
    params = golden["model"]["params"]
    unet = params["unet_config"]["params"]
    tiny = SyncDreamerConfig.tiny()
    for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "num_heads", "transformer_depth",
                 "context_dim"):
        assert getattr(tiny.unet, name) == unet[name], name
    for name in ("channel_mult", "attention_resolutions", "volume_dims"):
        assert list(getattr(tiny.unet, name)) == unet[name], name
    assert params["view_num"] == 16 and params["image_size"] == tiny.image_size and unet["image_size"] == 32
    overrides = golden["overrides"]
    assert list(tiny.volume.spatial_dims) == overrides["spatial_volume.spatial_volume_feats"]["args"]["dims"]
    assert list(tiny.volume.frustum_dims) == overrides["spatial_volume.frustum_volume_feats"]["args"]["dims"]
    dd = overrides["first_stage_model"]["args"]["ddconfig"]
    assert (tiny.vae.ch, list(tiny.vae.ch_mult), tiny.vae.num_res_blocks, tiny.vae.z_channels) == (
        dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"])
    full = SyncDreamerConfig.full()
    assert list(full.volume.spatial_dims) == overrides["spatial_volume.spatial_volume_feats"]["original"]["dims"]
    assert full.vae.ch == overrides["first_stage_model"]["original"]["ddconfig"]["ch"]


@pytest.mark.parametrize("bad, match", [
    (SyncDreamerConfig(unet=UNetConfig(channel_mult=(1, 2, 4, 8))), "channel_mult"),
    (SyncDreamerConfig(volume=VolumeConfig(frustum_dims=(8, 16, 24, 32))), "volume_dims"),
    (SyncDreamerConfig(image_size=512), "image_size"),
])
def test_config_validation_names_the_field(bad, match):
    with pytest.raises(ValueError, match=match):
        bad.validate()


@pytest.mark.parametrize("options, match", [
    (RunOptions(precision="int8"), "precision"), (RunOptions(batch_view_num=0), "batch_view_num"),
    (RunOptions(batch_view_num="all"), "batch_view_num"), (RunOptions(low_memory_batch_view_num=17), "low_memory"),
])
def test_run_options_validation(options, match):
    with pytest.raises(ValueError, match=match):
        options.validate()


def test_cameras_built_in_code_match_camera16():
    data = shared_json("camera16.json")
    poses, ks, azimuth = camera16()
    expected_poses = torch.tensor([v["pose_w2c_3x4"] for v in data["views"]], dtype=torch.float32)
    torch.testing.assert_close(poses, expected_poses, rtol=0, atol=2e-6)
    assert torch.equal(ks, torch.tensor(data["K"], dtype=torch.float32).expand(16, 3, 3))
    expected_az = torch.tensor([v["azimuth_buffer_rad_wrapped"] for v in data["views"]], dtype=torch.float32)
    torch.testing.assert_close(azimuth, expected_az, rtol=0, atol=1e-6)
    centres = -torch.einsum("nji,nj->ni", poses[:, :, :3], poses[:, :, 3])
    expected_centres = torch.tensor([v["camera_center_world"] for v in data["views"]], dtype=torch.float32)
    torch.testing.assert_close(centres, expected_centres, rtol=0, atol=2e-6)
    assert world_to_camera_4x4(poses).shape == (16, 4, 4)


def test_schedule_buffers_equal_the_checkpoint_buffers():
    path = shared_dir() / "golden" / "tiny_state_dict.safetensors"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    state = safetensors_torch.load_file(str(path))
    for name, value in training_schedule().items():
        torch.testing.assert_close(value, state[name], rtol=1e-6, atol=0, msg=name)


def test_ddim_schedules_match_the_published_tables():
    tables = shared_json("ddim_schedules.json")
    alphas_cumprod = training_schedule()["alphas_cumprod"]
    for steps in (4, 50, 200):
        for eta in (1, 0):
            table = tables[f"steps{steps}_eta{eta}"]
            schedule = make_ddim_schedule(alphas_cumprod, steps, eta=float(eta))
            assert schedule.timesteps.tolist() == table["timesteps"]
            for ours, theirs in (("alphas", "ddim_alphas"), ("alphas_prev", "ddim_alphas_prev"),
                                 ("sigmas", "ddim_sigmas"), ("sqrt_one_minus_alphas", "ddim_sqrt_one_minus_alphas")):
                expected = torch.tensor(table[theirs], dtype=torch.float32)
                torch.testing.assert_close(getattr(schedule, ours), expected, rtol=1e-6, atol=1e-8,
                                           msg=f"{steps} steps eta {eta} {ours}")
    assert ddim_timesteps(50)[[0, 1, -1]].tolist() == [1, 21, 981]
    with pytest.raises(ValueError, match="steps"):
        ddim_timesteps(0)


def test_last_ddim_step_uses_alphas_cumprod_0_and_adds_no_noise():
    schedule = make_ddim_schedule(training_schedule()["alphas_cumprod"], 4, eta=1.0)
    assert schedule.alphas_prev[0] == training_schedule()["alphas_cumprod"][0] < 1.0
    x, eps = torch.ones(1, 16, 4, 2, 2), torch.full((1, 16, 4, 2, 2), 0.5)
    assert torch.equal(ddim_step(x, eps, schedule, 0, None), ddim_step(x, eps, schedule, 0, torch.randn_like(x)))
    with pytest.raises(ValueError, match="noise"):
        ddim_step(x, eps, schedule, 1, None)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    freqs = np.exp(-math.log(10000) * np.arange(4) / 4)
    expected = np.concatenate([np.cos(7 * freqs), np.sin(7 * freqs)])
    torch.testing.assert_close(emb[1], torch.tensor(expected, dtype=torch.float32))
    assert emb[0, :4].tolist() == [1.0] * 4 and emb[0, 4:].tolist() == [0.0] * 4


def test_viewpoint_embedding_is_relative_to_30_degrees():
    model = SyncDreamerModel(SyncDreamerConfig.tiny())
    emb = model.viewpoint_embedding(2, torch.tensor([math.radians(30.0), math.radians(15.0)]))
    assert emb.shape == (2, 16, 4)
    assert emb[0, :, 0].abs().max() < 1e-7
    torch.testing.assert_close(emb[1, :, 0], torch.full((16,), -math.radians(15.0)))
    torch.testing.assert_close(emb[0, 4, 1:], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6, rtol=0)


def test_depth_attention_evaluations_agree():
    """The CUDA evaluation (the original's formula) and the CPU one (k, v folded into q and the output) agree."""
    from ai_modules.sync_dreamer.attention import DepthAttention

    torch.manual_seed(0)
    attention = DepthAttention(query_dim=16, context_dim=8, heads=4, dim_head=4)
    q = attention.to_q(torch.randn(3, 16, 5, 6))
    context = torch.randn(3, 8, 7, 5, 6).relu()
    vectorised = attention._attend_vectorised(q, context)
    by_channel = attention._attend_by_channel(q, context)
    torch.testing.assert_close(by_channel, vectorised, rtol=1e-5, atol=1e-6)
    constant = torch.ones(2, 8, 7, 5, 6)                     # the unconditional branch: equal keys along depth
    torch.testing.assert_close(attention._attend_by_channel(q[:2], constant),
                               attention._attend_vectorised(q[:2], constant), rtol=1e-6, atol=1e-6)


def test_ieee_fp32_restores_the_tf32_settings():
    from ai_modules.sync_dreamer.speed import ieee_fp32

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    with ieee_fp32():
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (False, False)
        assert cudnn.conv.fp32_precision != "tf32"
    assert (matmul.allow_tf32, cudnn.allow_tf32) == before
