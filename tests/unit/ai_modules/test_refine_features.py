"""refine.features: DINOv2 patch features through timm from a local folder (a tiny random-weight model
written in the hub repo's layout), their cosine similarity, and the errors a broken folder gives."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ai_modules.errors import FeatureModelError, FormatError, ModelNotAvailable
from ai_modules.models import model_status
from ai_modules.refine.features import feature_similarity, load_dinov2, patch_features
from tests.tiny_models import tiny_dinov2


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_dinov2(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def model(folder):
    return load_dinov2(folder, "cpu")


def _images(seed: int, n: int = 2, size: tuple[int, int] = (96, 128)) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, *size, 3, generator=gen)


def test_the_tiny_model_is_written_where_the_inventory_looks(tmp_path):
    folder = tiny_dinov2(tmp_path)
    status = model_status("dinov2", tmp_path)
    assert status.present and status.path == folder and status.stage == "refine" and status.kind == "dir"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "vit_small_patch14_dinov2" and config["model_args"]["embed_dim"] == 32
    assert config["pretrained_cfg"]["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_load_gives_the_saved_vit_in_eval_mode_fp32_on_cpu(folder, model):
    assert not model.training and model.num_prefix_tokens == 1 and tuple(model.patch_embed.patch_size) == (14, 14)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.pretrained_cfg["source"] == "local-dir"


@pytest.mark.parametrize(("size", "grid"), [((256, 256), (18, 18)), ((96, 128), (7, 9))])
def test_patch_features_are_unit_tokens_on_the_nearest_patch_grid(model, size, grid):
    feats = patch_features(model, _images(0, 3, size), batch_size=2)
    assert feats.shape == (3, *grid, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats.norm(dim=-1), torch.ones(3, *grid), atol=1e-5, rtol=0)


def test_batching_does_not_change_the_features(model):
    images = _images(1, 3)
    torch.testing.assert_close(patch_features(model, images, batch_size=1), patch_features(model, images),
                               atol=1e-5, rtol=1e-5)


def test_similarity_is_one_for_the_same_image_symmetric_and_bounded(model):
    a, b = patch_features(model, _images(2)), patch_features(model, _images(3))
    same = feature_similarity(a, a, (96, 128))
    assert same.shape == (2, 96, 128)
    torch.testing.assert_close(same, torch.ones_like(same), atol=1e-5, rtol=0)
    other = feature_similarity(a, b, (96, 128))
    assert other.max() < 1 - 1e-4 and other.min() >= -1
    torch.testing.assert_close(other, feature_similarity(b, a, (96, 128)))


def test_bad_arguments_are_rejected(model):
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        patch_features(model, torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match="float RGB"):
        patch_features(model, torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    feats = patch_features(model, _images(4))
    with pytest.raises(ValueError, match="of one shape"):
        feature_similarity(feats, feats[:1], (96, 128))


def test_a_missing_folder_is_model_not_available(tmp_path):
    with pytest.raises(ModelNotAvailable, match="refine/dinov2") as info:
        load_dinov2(tmp_path / "refine" / "dinov2", "cpu")
    assert "vit_small_patch14_dinov2.lvd142m" in str(info.value)


@pytest.mark.parametrize("damage", ["no config", "garbage config", "no weights", "garbage weights",
                                    "mismatched weights", "unknown architecture"])
def test_a_broken_folder_names_itself(folder, tmp_path, damage):
    broken = tmp_path / "dinov2"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    if damage == "no config":
        (broken / "config.json").unlink()
    elif damage == "garbage config":
        (broken / "config.json").write_text("{not json")
    elif damage == "no weights":
        (broken / "model.safetensors").unlink()
    elif damage == "garbage weights":
        (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    elif damage == "mismatched weights":
        config["model_args"]["embed_dim"] = 64
        (broken / "config.json").write_text(json.dumps(config))
    else:
        config["architecture"] = "no_such_vit"
        (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(FeatureModelError, match=str(broken)) as info:
        load_dinov2(broken, "cpu")
    assert isinstance(info.value, FormatError) and info.value.folder == str(broken)
    assert "glimpsed models pull dinov2" in str(info.value)
