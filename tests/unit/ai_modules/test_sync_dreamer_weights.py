"""SyncDreamer weights: safe checkpoint reading, CLIP from OpenAI's TorchScript file or a transformers snapshot."""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from ai_modules.errors import FormatError, ModelNotAvailable
from ai_modules.sync_dreamer import SyncDreamerConfig, SyncDreamerModel, load_weights, locate_weights
from ai_modules.sync_dreamer.clip import CLIPLeftovers, hf_to_openai
from ai_modules.sync_dreamer.weights import CLIP_PREFIX, read_clip, read_state_dict
from tests import shared_data


def shared_dir() -> Path:
    return shared_data.shared_dir("syncdreamer")


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    """A seeded tiny model's state dict (all 1618-key layout, tiny shapes)."""
    torch.manual_seed(0)
    return {k: v.clone() for k, v in SyncDreamerModel(SyncDreamerConfig.tiny()).state_dict().items()}


def fresh_tiny() -> SyncDreamerModel:
    torch.manual_seed(1)
    return SyncDreamerModel(SyncDreamerConfig.tiny())


def assert_state_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    ours = model.state_dict()
    assert set(ours) == set(state)
    bad = [k for k in state if not torch.equal(ours[k], state[k])]
    assert not bad, bad[:5]


def test_lightning_checkpoint_roundtrip(tmp_path, tiny_state):
    path = tmp_path / "syncdreamer-pretrain.ckpt"
    torch.save({"state_dict": tiny_state, "epoch": 3, "global_step": 1000}, path)
    model = fresh_tiny()
    report = load_weights(model, path)
    assert report.clip_source == "checkpoint" and report.kept_init == [] and report.loaded == len(tiny_state)
    assert_state_equal(model, tiny_state)


def test_checkpoint_with_metadata_objects_is_read_without_running_them(tmp_path, tiny_state):
    """Lightning keeps hyper-parameter objects that weights_only refuses; they are read as inert records."""
    path = tmp_path / "with-hparams.ckpt"
    torch.save({"state_dict": tiny_state, "hyper_parameters": argparse.Namespace(lr=1e-4, path=Path("/x"))}, path)
    model = fresh_tiny()
    load_weights(model, path)
    assert_state_equal(model, tiny_state)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused(tmp_path, tiny_state):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tiny_state, "payload": _Payload(marker)}, path)
    with pytest.raises(FormatError, match="refusing to unpickle"):
        read_state_dict(path)
    assert not marker.exists()


def test_missing_checkpoint_names_the_path_and_the_pull_command(tmp_path):
    with pytest.raises(ModelNotAvailable) as info:
        locate_weights(tmp_path)
    expected = tmp_path / "syncdreamer" / "syncdreamer-pretrain.ckpt"
    assert info.value.path == str(expected)
    assert str(expected) in str(info.value) and "glimpsed models pull syncdreamer" in str(info.value)
    assert (info.value.stage, info.value.backend) == ("multiview", "syncdreamer")
    with pytest.raises(ModelNotAvailable, match="glimpsed models pull syncdreamer"):
        read_state_dict(tmp_path / "nope.ckpt")


def test_locate_weights_finds_the_optional_clip_file(tmp_path):
    root = tmp_path / "syncdreamer"
    root.mkdir()
    (root / "syncdreamer-pretrain.ckpt").write_bytes(b"x")
    assert locate_weights(tmp_path).clip is None
    (root / "ViT-L-14.pt").write_bytes(b"x")
    files = locate_weights(tmp_path)
    assert files.checkpoint == root / "syncdreamer-pretrain.ckpt" and files.clip == root / "ViT-L-14.pt"


def test_wrong_layouts_raise_format_error(tmp_path, tiny_state):
    partial = {k: v for k, v in tiny_state.items() if not k.startswith("cc_projection")}
    torch.save({"state_dict": partial}, tmp_path / "partial.ckpt")
    with pytest.raises(FormatError, match="missing keys"):
        load_weights(fresh_tiny(), tmp_path / "partial.ckpt")
    full_shape = dict(tiny_state, **{"cc_projection.bias": torch.zeros(5)})
    torch.save({"state_dict": full_shape}, tmp_path / "shape.ckpt")
    with pytest.raises(FormatError, match="shape mismatches"):
        load_weights(fresh_tiny(), tmp_path / "shape.ckpt")
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(FormatError):
        read_state_dict(tmp_path / "text.ckpt")
    torch.save({"state_dict": {"a": 1}}, tmp_path / "noweights.ckpt")
    with pytest.raises(FormatError, match="no state dict"):
        read_state_dict(tmp_path / "noweights.ckpt")


def test_safetensors_checkpoint(tmp_path, tiny_state):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    safetensors_torch.save_file(tiny_state, str(tmp_path / "model.safetensors"))
    model = fresh_tiny()
    load_weights(model, tmp_path / "model.safetensors")
    assert_state_equal(model, tiny_state)


def test_half_precision_checkpoint_is_cast_to_float32(tmp_path, tiny_state):
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_state.items()}
    torch.save({"state_dict": half}, tmp_path / "half.ckpt")
    model = fresh_tiny()
    load_weights(model, tmp_path / "half.ckpt")
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert torch.equal(model.cc_projection.weight, half["cc_projection.weight"].float())


def test_meta_model_loads_by_assignment(tmp_path, tiny_state):
    torch.save({"state_dict": tiny_state}, tmp_path / "m.ckpt")
    with torch.device("meta"):
        model = SyncDreamerModel(SyncDreamerConfig.tiny())
    load_weights(model, tmp_path / "m.ckpt", assign=True)
    assert not any(t.is_meta for t in model.state_dict().values())
    assert_state_equal(model, tiny_state)


def _without_clip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith("clip_image_encoder.")}


def test_clip_from_openai_torchscript_archive_without_jit_load(tmp_path, tiny_state, monkeypatch):
    """OpenAI's ViT-L-14.pt is TorchScript; it is read by the restricted reader, never `torch.jit.load`."""

    class TracedCLIP(CLIPLeftovers):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x)

    clip_model = TracedCLIP(SyncDreamerConfig.tiny().clip).eval()
    clip_model.load_state_dict({k[len(CLIP_PREFIX):]: v for k, v in tiny_state.items() if k.startswith(CLIP_PREFIX)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(clip_model, torch.zeros(1, 3, 224, 224)).half()   # OpenAI ships fp16
    traced.save(str(tmp_path / "ViT-L-14.pt"))
    torch.save({"state_dict": _without_clip(tiny_state)}, tmp_path / "stripped.ckpt")

    def no_jit_load(*args, **kwargs):
        raise AssertionError("torch.jit.load must not be used")

    monkeypatch.setattr(torch.jit, "load", no_jit_load)
    with pytest.raises(ModelNotAvailable, match="ViT-L-14.pt"):
        load_weights(fresh_tiny(), tmp_path / "stripped.ckpt")
    model = fresh_tiny()
    report = load_weights(model, tmp_path / "stripped.ckpt", clip=tmp_path / "ViT-L-14.pt")
    assert report.clip_source.endswith("ViT-L-14.pt") and report.kept_init == []
    expected = {k: (v.half().float() if k.startswith(CLIP_PREFIX) else v) for k, v in tiny_state.items()}
    assert_state_equal(model, expected)


def _tiny_hf_clip():
    transformers = pytest.importorskip("transformers")
    cfg = SyncDreamerConfig.tiny().clip
    hf_config = transformers.CLIPVisionConfig(
        hidden_size=cfg.width, intermediate_size=cfg.width * 4, num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads, image_size=cfg.image_size, patch_size=cfg.patch_size,
        projection_dim=cfg.output_dim, hidden_act="quick_gelu", layer_norm_eps=1e-5)
    torch.manual_seed(2)
    model = transformers.CLIPVisionModelWithProjection(hf_config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def test_clip_from_a_transformers_snapshot_gives_the_same_embedding(tmp_path, tiny_state):
    hf = _tiny_hf_clip()
    hf.save_pretrained(str(tmp_path / "clip-vit-large-patch14"))
    torch.save({"state_dict": _without_clip(tiny_state)}, tmp_path / "stripped.ckpt")
    model = fresh_tiny().eval()
    report = load_weights(model, tmp_path / "stripped.ckpt", clip=tmp_path / "clip-vit-large-patch14")
    assert sorted(report.kept_init) == sorted(CLIP_PREFIX + k for k in
                                              ("positional_embedding", "text_projection", "logit_scale",
                                               "token_embedding.weight", "ln_final.weight", "ln_final.bias"))
    pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf(pixel_values=pixels).image_embeds
        ours = model.encode_clip(pixels)
    assert ours.shape == (2, 1, 768)
    torch.testing.assert_close(ours[:, 0], expected, rtol=0, atol=1e-5)
    assert set(read_clip(tmp_path / "clip-vit-large-patch14")) == {
        k for k in CLIPLeftovers(SyncDreamerConfig.tiny().clip).state_dict() if k.startswith("visual.")}


def test_hf_mapping_matches_the_published_mapping_table():
    path = shared_dir() / "clip_openai_to_hf_mapping.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    table = json.loads(path.read_text())["mapping"]
    gen = torch.Generator().manual_seed(0)
    hf: dict[str, torch.Tensor] = {}
    for row in table:
        for key in ([row["hf_key"]] if isinstance(row["hf_key"], str) else row["hf_key"]):
            hf[key] = torch.randn(3, 2, generator=gen)
    ours = hf_to_openai(hf)
    assert set(ours) == {row["syncdreamer_key"][len(CLIP_PREFIX):] for row in table}
    for row in table:
        value = ours[row["syncdreamer_key"][len(CLIP_PREFIX):]]
        if row["transform"] == "copy":
            assert torch.equal(value, hf[row["hf_key"]])
        elif row["transform"] == "transpose":
            assert torch.equal(value, hf[row["hf_key"]].t())
        else:
            assert row["transform"] == "split3_dim0(q,k,v)"
            assert torch.equal(value, torch.cat([hf[k] for k in row["hf_key"]], 0))
