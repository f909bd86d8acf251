"""TRELLIS's DINOv2 conditioner (ai_modules/trellis/conditioner.py): published layout, tiny golden, checkpoint
formats (dinov2 .pth and a Hugging Face Dinov2WithRegistersModel snapshot)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from trellis_golden import GOLDEN, SINGLE, assert_close, assert_matches_manifest, golden, manifest, meta

from ai_modules.errors import FormatError
from ai_modules.trellis.conditioner import DinoV2Config, DinoV2Reg, hf_to_dinov2_state_dict, neg_cond
from ai_modules.trellis.preprocess import preprocess_rgba, to_model_input


def _tiny() -> DinoV2Reg:
    model = DinoV2Reg(DinoV2Config.from_dict(meta()["tiny_config"]["image_cond"]))
    model.load_state_dict(golden("tiny_state_dict_image_cond"), strict=True)
    return model.eval()


def test_published_model_has_the_manifest_keys_and_shapes():
    with torch.device("meta"):
        assert_matches_manifest(DinoV2Reg(), "image_cond")
    assert manifest("image_cond")["num_keys"] == 344


def test_tiny_config_builds_from_meta_json():
    cfg = DinoV2Config.from_dict(meta()["tiny_config"]["image_cond"])
    assert (cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.num_register_tokens, cfg.img_size) == (32, 2, 2, 4, 518)
    with pytest.raises(ValueError, match="swiglu"):
        DinoV2Config.from_dict({"ffn_layer": "swiglufused"})


def test_tiny_model_reproduces_every_golden_stage():
    g = golden("conditioning")
    model = _tiny()
    with torch.no_grad():
        prenorm, blocks = model.forward_prenorm(g["dino_input_normalized"], return_blocks=True)
        cond = model.features(g["dino_input_normalized"])
    assert_close(blocks[0], g["dino_block0_out"], SINGLE, "dino_block0_out")
    assert_close(blocks[1], g["dino_block1_out"], SINGLE, "dino_block1_out")
    assert_close(prenorm, g["dino_x_prenorm"], SINGLE, "dino_x_prenorm")
    assert_close(cond, g["cond"], SINGLE, "cond")
    assert tuple(cond.shape) == tuple(meta()["counts"]["cond_tokens"])
    assert_close(neg_cond(cond), g["neg_cond"], 0.0, "neg_cond")


def test_png_to_cond_end_to_end():
    path = GOLDEN / "input_rgba.png"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with torch.no_grad():
        cond = _tiny().features(to_model_input(preprocess_rgba(Image.open(path))))
    assert_close(cond, golden("conditioning")["cond"], SINGLE, "cond from the PNG")


def test_from_pth_loads_strictly_and_names_mismatches(tmp_path):
    cfg = DinoV2Config.from_dict(meta()["tiny_config"]["image_cond"])
    sd = golden("tiny_state_dict_image_cond")
    torch.save(sd, tmp_path / "tiny.pth")
    model = DinoV2Reg.from_pth(tmp_path / "tiny.pth", cfg)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())

    bad = dict(sd, **{"pos_embed": sd["pos_embed"][:, :10]})
    del bad["norm.bias"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(FormatError, match=r"missing: norm\.bias.*shape: pos_embed"):
        DinoV2Reg.from_pth(tmp_path / "bad.pth", cfg)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FormatError, match="junk.pth"):
        DinoV2Reg.from_pth(tmp_path / "junk.pth", cfg)
    with pytest.raises(FileNotFoundError, match="dinov2_vitl14_reg4_pretrain"):
        DinoV2Reg.from_pth(tmp_path / "absent.pth", cfg)


def _hf_tiny():
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=98,
        patch_size=14, num_register_tokens=4, layer_norm_eps=1e-6, hidden_act="gelu")
    torch.manual_seed(0)
    model = transformers.Dinov2WithRegistersModel(config).eval()
    with torch.no_grad():   # HF's init leaves tokens at zero and LayerScale at 1: make every key matter
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("size", [(98, 98), (126, 126), (98, 140)])   # native grid, then interpolated pos-embeds
def test_hf_snapshot_key_map_matches_transformers(tmp_path, size):
    hf = _hf_tiny()
    hf.save_pretrained(tmp_path)                      # writes the hub's legacy key names (attention.attention.query)
    cfg = DinoV2Config(img_size=98, embed_dim=32, depth=2, num_heads=2)
    ours = DinoV2Reg.from_hf_snapshot(tmp_path, cfg)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = hf(pixel_values=x, output_hidden_states=True)
        prenorm = ours.forward_prenorm(x)
        assert_close(prenorm, out.hidden_states[-1], SINGLE, "x_prenorm vs HF")
        assert_close(ours.norm(prenorm), out.last_hidden_state, SINGLE, "final norm vs HF")
    in_memory = hf_to_dinov2_state_dict(hf.state_dict())   # transformers 5 in-memory names (q_proj, o_proj)
    assert all(torch.equal(in_memory[k], v) for k, v in ours.state_dict().items())


def test_hf_key_map_rejects_unknown_keys():
    with pytest.raises(FormatError, match="pooler"):
        hf_to_dinov2_state_dict({"pooler.dense.weight": torch.zeros(1)})
    with pytest.raises(FormatError, match="q, k, v"):
        hf_to_dinov2_state_dict({"encoder.layer.0.attention.attention.query.weight": torch.zeros(1)})
