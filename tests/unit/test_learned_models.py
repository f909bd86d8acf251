"""benchmarks/learned_models.py: the configs kept in the repo build the published sizes, and the writers
put every file where `ai_modules.models` and the loaders look for it.

Fast: the published-size networks are built on the meta device (no memory, no weights); the layouts
are written with tiny stand-in networks (the full-size files take minutes and gigabytes)."""

from __future__ import annotations

import json

import pytest
import torch

from ai_modules.models import model_inventory
from benchmarks import learned_models as lm

PLANNED = set(lm.MODEL_NAMES)


@pytest.mark.parametrize("name", lm.COMPONENTS)
def test_each_component_built_from_the_kept_configs_has_its_published_parameter_count(name):
    module = lm.build_component(name, "meta")
    assert all(p.is_meta for p in module.parameters())
    count, published = lm.count_parameters(module), lm.PUBLISHED_PARAMS[name][0]
    assert abs(count - published) <= 0.01 * published, (name, count, published)


def test_the_kept_configs_are_the_published_files():
    sdxl = lm.SDXL_CONFIGS
    # Serialised as diffusers/transformers write them, these two have the byte sizes the hub's LFS pointers give.
    assert (sdxl / "unet" / "config.json").stat().st_size == 1680
    assert (sdxl / "text_encoder" / "config.json").stat().st_size == 565
    unet = json.loads((sdxl / "unet" / "config.json").read_text())
    controlnet = json.loads((lm.CONTROLNET_CONFIGS / "config.json").read_text())
    text_2 = json.loads((sdxl / "text_encoder_2" / "config.json").read_text())
    assert unet["cross_attention_dim"] == controlnet["cross_attention_dim"] == 768 + text_2["hidden_size"]
    time_ids = 6 * unet["addition_time_embed_dim"]          # SDXL's six size/crop conditions
    assert unet["projection_class_embeddings_input_dim"] == time_ids + text_2["projection_dim"]
    assert json.loads((sdxl / "vae" / "config.json").read_text())["force_upcast"] is True
    assert json.loads((lm.DPT_CONFIGS / "config.json").read_text())["is_hybrid"] is True


def test_the_tiny_models_are_written_where_the_inventory_finds_them(tmp_path):
    written = lm.write_tiny_models(tmp_path)
    assert set(written) == PLANNED
    present = {m.name: m.present for m in model_inventory(tmp_path)}
    assert all(present[name] for name in PLANNED), present


def _tiny_component(name: str, device="meta", dtype=torch.float32, seed=None) -> torch.nn.Module:
    """Tiny stand-ins of the published networks (same classes), to check the full-size writers' layout fast."""
    from diffusers import AutoencoderKL, ControlNetModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from ai_modules.diffusion.tiny import tiny_unet
    from ai_modules.sync_dreamer import SyncDreamerModel
    from tests.tiny_models import MICRO_SYNCDREAMER

    text = CLIPTextConfig(vocab_size=100, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                          num_attention_heads=4, max_position_embeddings=77, projection_dim=32)
    module = {
        "syncdreamer": lambda: SyncDreamerModel(MICRO_SYNCDREAMER),
        "dpt_hybrid": lambda: lm.tiny_dpt(0),
        "sdxl_unet": lambda: tiny_unet(0),
        "controlnet_depth": lambda: ControlNetModel.from_unet(tiny_unet(0)),
        "sdxl_vae": lambda: AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, layers_per_block=1),
        "clip_l_text": lambda: CLIPTextModel(text),
        "bigg_text": lambda: CLIPTextModelWithProjection(text),
    }[name]()
    return module.to(dtype)


def test_the_full_size_writers_use_the_planned_layout_and_published_precision(tmp_path, monkeypatch):
    from safetensors import safe_open

    from ai_modules.diffusion.enhance import enhance_model_paths
    from ai_modules.midas_depth.estimator import find_snapshot

    monkeypatch.setattr(lm, "build_component", _tiny_component)
    written = lm.write_full_size_models(tmp_path)
    assert set(written) == PLANNED
    present = {m.name: m.present for m in model_inventory(tmp_path)}
    assert all(present[name] for name in PLANNED), present
    enhance_model_paths(tmp_path)                       # the enhance loader's own presence check
    dpt = find_snapshot(tmp_path)                        # the depth loader's: config, processor, weights

    # DPT: the published configs, a weights-only torch.save without the tensors the original lacks, fp32.
    for name in ("config.json", "preprocessor_config.json"):
        assert (dpt / name).read_bytes() == (lm.DPT_CONFIGS / name).read_bytes()
    state = torch.load(dpt / "pytorch_model.bin", weights_only=True)
    assert state and not any(k.startswith(lm._DPT_UNUSED) for k in state)
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}

    # SyncDreamer: a Lightning-style checkpoint, fp32, and no stand-in config.json beside it.
    ckpt = written["syncdreamer-pretrain"]
    assert ckpt == tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt"
    assert not ckpt.with_name("config.json").exists()
    sd = torch.load(ckpt, weights_only=True)["state_dict"]
    assert {v.dtype for v in sd.values() if v.is_floating_point()} == {torch.float32}

    # SDXL: the fp16 variant files the pull fetches, the UNet as a config only, verbatim configs.
    base = written["sdxl-base"]
    for rel in ("text_encoder/model.fp16.safetensors", "text_encoder_2/model.fp16.safetensors",
                "vae/diffusion_pytorch_model.fp16.safetensors", "unet/config.json", "tokenizer/vocab.json",
                "tokenizer_2/merges.txt", "scheduler/scheduler_config.json", "model_index.json"):
        assert (base / rel).is_file(), rel
    assert [p.name for p in (base / "unet").iterdir()] == ["config.json"]
    for rel in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                "text_encoder_2/config.json", "scheduler/scheduler_config.json"):
        assert (base / rel).read_bytes() == (lm.SDXL_CONFIGS / rel).read_bytes(), rel
    controlnet = written["controlnet-depth-sdxl"]
    assert (controlnet / "config.json").read_bytes() == (lm.CONTROLNET_CONFIGS / "config.json").read_bytes()
    for f in (written["sdxl-lightning-4step-unet"], controlnet / "diffusion_pytorch_model.fp16.safetensors",
              base / "vae" / "diffusion_pytorch_model.fp16.safetensors"):
        with safe_open(str(f), "pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"F16"}, f  # noqa: SIM118
