"""Loading TRELLIS as the hub publishes it: pipeline.json, ckpts/<name>.json + .safetensors, and DINOv2's .pth.

The golden tiny weights, written in that layout, load and reproduce the original code's Gaussians; a stand-in
written by the tests (`tests.tiny_models.write_tiny_trellis`) round-trips; wrong files are named in the errors.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from trellis_golden import GOLDEN, SAMPLER, assert_close, golden, meta

from ai_modules.errors import FormatError
from ai_modules.trellis.loading import (PUBLISHED_CKPTS, dinov2_config, load_component, load_dinov2, load_trellis,
                                        read_pipeline_json)
from ai_modules.trellis.pipeline import run
from ai_modules.trellis.slat_flow import SLatFlowModel
from ai_modules.trellis.ss_decoder import SparseStructureDecoder
from tests.tiny_models import tiny_trellis_models, write_tiny_trellis

GOLDEN_PARTS = {"sparse_structure_flow_model": ("SparseStructureFlowModel", "ss_flow", "ss_flow"),
                "sparse_structure_decoder": ("SparseStructureDecoder", "ss_decoder", "ss_decoder"),
                "slat_flow_model": ("SLatFlowModel", "slat_flow", "slat_flow"),
                "slat_decoder_gs": ("SLatGaussianDecoder", "gs_decoder", "slat_decoder_gs")}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """A tiny TRELLIS in the hub layout under models/trellis/."""
    root = tmp_path_factory.mktemp("models")
    return write_tiny_trellis(root)


def test_the_golden_weights_in_the_hub_layout_give_the_original_codes_gaussians(tmp_path):
    """The original code's tiny weights, saved as the hub saves its checkpoints, loaded by `load_trellis`."""
    from safetensors.torch import save_file

    m = meta()
    folder = tmp_path / "TRELLIS-image-large"
    (folder / "ckpts").mkdir(parents=True)
    for key, (name, config, state) in GOLDEN_PARTS.items():
        (folder / f"{PUBLISHED_CKPTS[key]}.json").write_text(json.dumps({"name": name,
                                                                          "args": m["tiny_config"][config]}))
        save_file(golden(f"tiny_state_dict_{state}"), str(folder / f"{PUBLISHED_CKPTS[key]}.safetensors"))
    sampler = {k: {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": m["sigma_min"]},
                   "params": m["sampler_params"][k]} for k in ("ss", "slat")}
    (folder / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {
        "models": PUBLISHED_CKPTS, "sparse_structure_sampler": sampler["ss"], "slat_sampler": sampler["slat"],
        "slat_normalization": m["slat_normalization_used"], "image_cond_model": "dinov2_vitl14_reg"}}))
    dino = tmp_path / "dinov2_vitl14_reg4_pretrain.pth"
    torch.save(golden("tiny_state_dict_image_cond"), dino)
    (tmp_path / "dinov2_vitl14_reg4_pretrain.json").write_text(json.dumps(m["tiny_config"]["image_cond"]))
    models, settings = load_trellis(folder, dino)
    assert settings.ss_sampler.steps == 5 and settings.ss_sampler.cfg_strength == 7.5
    assert list(settings.slat_mean) == pytest.approx(m["slat_normalization_used"]["mean"])
    from dataclasses import replace

    result = run(models, Image.open(GOLDEN / "input_rgba.png"), replace(settings, seed=m["seeds"]["pipeline_seed"]))
    gs = golden("gaussians")
    assert torch.equal(result.coords, golden("sparse_structure")["ss_coords"])
    for name in ("xyz", "features", "scaling", "rotation", "opacity"):
        assert_close(getattr(result.gaussians, f"get_{name}"), gs[f"gs_get_{name}"], SAMPLER, f"get_{name}")


def test_the_stand_in_round_trips(stand_in):
    models, settings = load_trellis(stand_in, stand_in.parent / "dinov2_vitl14_reg4_pretrain.pth")
    made, made_settings = tiny_trellis_models()
    assert settings == made_settings
    for loaded, original in zip(models.modules(), made.modules()):
        a, b = loaded.state_dict(), original.state_dict()
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        assert not any(p.device.type == "meta" for p in loaded.parameters()) and not loaded.training


def test_fp16_follows_the_json_or_the_override(stand_in, tmp_path):
    path = stand_in / f"{PUBLISHED_CKPTS['slat_flow_model']}.json"
    assert load_component(path, SLatFlowModel).torso_dtype == torch.float32        # the stand-in says use_fp16 false
    half = load_component(path, SLatFlowModel, fp16=True)
    assert half.torso_dtype == torch.float16 and half.out_layer.weight.dtype == torch.float32


def test_dinov2s_shape_is_read_from_its_tensors():
    from ai_modules.trellis.conditioner import DinoV2Config, DinoV2Reg

    with torch.device("meta"):
        published = DinoV2Reg(DinoV2Config()).state_dict()
        small = DinoV2Reg(DinoV2Config(embed_dim=384, depth=3, num_heads=6, num_register_tokens=0)).state_dict()
    assert dinov2_config(published, "vitl") == DinoV2Config()
    assert dinov2_config(small, "vits") == DinoV2Config(embed_dim=384, depth=3, num_heads=6, num_register_tokens=0)
    with pytest.raises(FormatError, match="not a DINOv2 ViT with registers"):
        dinov2_config({"head.weight": torch.zeros(2, 2)}, "other.pth")


def test_wrong_files_are_named(stand_in, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(stand_in, folder)
    decoder_json = folder / f"{PUBLISHED_CKPTS['sparse_structure_decoder']}.json"
    with pytest.raises(FormatError, match="describes a SparseStructureDecoder, where pipeline.json expects a SLat"):
        load_component(decoder_json, SLatFlowModel)
    weights = folder / f"{PUBLISHED_CKPTS['sparse_structure_flow_model']}.safetensors"
    shutil.copy(folder / f"{PUBLISHED_CKPTS['slat_decoder_gs']}.safetensors", weights)    # another network's tensors
    with pytest.raises(FormatError, match=r"does not match SparseStructureFlowModel: missing: "
                                          r"blocks.0.adaLN_modulation.*; shape: out_layer"):
        load_trellis(folder, stand_in.parent / "dinov2_vitl14_reg4_pretrain.pth")
    (folder / "pipeline.json").write_text(json.dumps({"args": {"models": {}}}))
    with pytest.raises(FormatError, match="pipeline.json: not a TRELLIS pipeline.json .*models pull trellis"):
        read_pipeline_json(folder / "pipeline.json")
    decoder_json.unlink()
    with pytest.raises(FileNotFoundError, match="ss_dec_conv3d_16l8_fp16.json not found; run `glimpsed models pull"):
        load_component(decoder_json, SparseStructureDecoder)
    with pytest.raises(FormatError, match="a DINOv2 state dict|not a DINOv2"):
        torch.save({"weights": [1, 2]}, tmp_path / "bad.pth")
        load_dinov2(tmp_path / "bad.pth")
