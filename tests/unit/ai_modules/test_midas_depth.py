"""midas_depth: the MiDaS/DPT library calls on tiny random-weight DPT snapshots (no downloads).

The snapshots are written with the real transformers classes' `save_pretrained`
into ``<tmp>/depth/dpt-hybrid-midas``, the layout of ``Intel/dpt-hybrid-midas``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import DPTForDepthEstimation, DPTImageProcessor

from ai_modules.errors import FormatError, ModelNotAvailable
from ai_modules.midas_depth import (
    DepthEstimator,
    clear_cache,
    estimate_depth,
    estimate_depth_confidence,
    flip_confidence,
)
from ai_modules.midas_depth import estimator as estimator_module
from ai_modules.midas_depth.functional import (
    align_scale_shift,
    as_rgb,
    depth_span,
    discontinuity_term,
)
from tests.tiny_models import save_snapshot, tiny_dpt


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return save_snapshot(tmp_path_factory.mktemp("models"), tiny_dpt(0))


@pytest.fixture(scope="module")
def symmetric_dir(tmp_path_factory) -> Path:
    return save_snapshot(tmp_path_factory.mktemp("symmetric"), tiny_dpt(1, symmetric=True))


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def photo(h: int = 45, w: int = 70, seed: int = 0) -> np.ndarray:
    """Smooth random colours (a few blobs), [h,w,3] uint8."""
    rng = np.random.default_rng(seed)
    small = rng.random((4, 5, 3))
    big = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC))
    return big.copy()


def direct_forward(root: Path, image: Image.Image) -> np.ndarray:
    """What the transformers docs do: processor -> model -> post_process_depth_estimation."""
    snapshot = root / "depth" / "dpt-hybrid-midas"
    processor = DPTImageProcessor.from_pretrained(snapshot)
    model = DPTForDepthEstimation.from_pretrained(snapshot).eval()
    with torch.no_grad():
        outputs = model(**processor(images=image, return_tensors="pt"))
    out = processor.post_process_depth_estimation(outputs, target_sizes=[(image.height, image.width)])
    return out[0]["predicted_depth"].numpy()


# ---- estimate_depth --------------------------------------------------------------------------------

def test_depth_has_the_input_resolution_and_matches_a_direct_transformers_forward(models_dir):
    image = Image.fromarray(photo())
    depth = estimate_depth(image, models_dir=models_dir)
    assert depth.shape == (45, 70) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, direct_forward(models_dir, image), rtol=1e-5, atol=1e-5)
    assert depth.std() > 1e-3                                              # not a degenerate tiny model


def test_hybrid_bit_backbone_snapshot_runs_like_the_real_layout(tmp_path):
    root = save_snapshot(tmp_path, tiny_dpt(2, hybrid=True))
    image = Image.fromarray(photo(40, 50, seed=3))
    depth = estimate_depth(image, models_dir=root)
    assert depth.shape == (40, 50) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, direct_forward(root, image), rtol=1e-5, atol=1e-5)


def test_uint8_arrays_pil_float_and_rgba_inputs(models_dir):
    rgb = photo()
    from_pil = estimate_depth(Image.fromarray(rgb), models_dir=models_dir)
    np.testing.assert_array_equal(estimate_depth(rgb, models_dir=models_dir), from_pil)
    as_float = estimate_depth(rgb.astype(np.float32) / 255.0, models_dir=models_dir)
    assert as_float.shape == from_pil.shape and np.corrcoef(as_float.ravel(), from_pil.ravel())[0, 1] > 0.99
    white = np.full_like(rgb, 255)
    clear = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])            # fully transparent -> white
    np.testing.assert_array_equal(estimate_depth(clear, models_dir=models_dir),
                                  estimate_depth(white, models_dir=models_dir))
    np.testing.assert_array_equal(estimate_depth(Image.fromarray(clear, "RGBA"), models_dir=models_dir),
                                  estimate_depth(white, models_dir=models_dir))
    clear_float = np.dstack([rgb / 255.0, np.zeros(rgb.shape[:2])])
    np.testing.assert_allclose(estimate_depth(clear_float, models_dir=models_dir),
                               estimate_depth(np.ones(rgb.shape, np.float32), models_dir=models_dir), atol=1e-5)


@pytest.mark.parametrize("bad, fragment", [
    (np.zeros((8, 8), np.uint8), "[H,W,3]"),
    (np.zeros((8, 8, 2), np.uint8), "[H,W,3]"),
    (np.full((8, 8, 3), 2.0, np.float32), "0..1"),
    (np.zeros((8, 8, 3), np.int32), "uint8 or float"),
    ("photo.png", "PIL image"),
])
def test_bad_images_are_refused_with_the_reason(bad, fragment):
    with pytest.raises(ValueError, match="`image` must") as info:
        as_rgb(bad)
    assert fragment in str(info.value)


def test_batched_prediction_equals_one_by_one(models_dir):
    images = [photo(45, 70, 0), photo(30, 30, 1), photo(50, 20, 2)]
    est = DepthEstimator(models_dir, batch_size=2)
    batched = est.predict(images)
    assert [d.shape for d in batched] == [(45, 70), (30, 30), (50, 20)]
    for image, depth in zip(images, batched):
        np.testing.assert_allclose(depth, est.predict(image), rtol=1e-5, atol=1e-5)


def test_estimator_holds_fp32_on_cpu_and_records_its_files(models_dir):
    est = DepthEstimator(models_dir)
    assert est.dtype == torch.float32 and next(est.model.parameters()).dtype == torch.float32
    files = est.model_files()
    assert [Path(f["path"]).name for f in files] == ["config.json", "preprocessor_config.json", "model.safetensors"]
    assert all(f["bytes"] > 0 and len(f["sha256"]) == 64 for f in files)
    est.unload()
    with pytest.raises(RuntimeError, match="unloaded"):
        est.predict(photo())


# ---- confidence ------------------------------------------------------------------------------------

def mirror(image: np.ndarray) -> np.ndarray:
    """Make an image exactly symmetric under a horizontal flip."""
    w = image.shape[1]
    out = image.copy()
    out[:, w - w // 2:] = image[:, : w // 2][:, ::-1]
    return out


def test_flip_symmetric_image_gives_high_confidence(symmetric_dir, models_dir):
    image = mirror(photo(48, 64, seed=5))
    everywhere = np.ones(image.shape[:2], bool)
    # a flip-equivariant model agrees with itself on a symmetric image: agreement is 1 everywhere,
    # the discontinuity term (rough on a random-weight model) is all that is left
    depth = estimate_depth(image, models_dir=symmetric_dir)
    conf = estimate_depth_confidence(image, models_dir=symmetric_dir)
    assert conf.shape == (48, 64) and conf.dtype == np.float32
    assert 0.0 <= conf.min() and conf.max() <= 1.0
    np.testing.assert_allclose(conf, discontinuity_term(depth, depth_span(depth, everywhere)), atol=1e-4)
    # a model that is not flip-equivariant disagrees with itself on the same image
    depth = estimate_depth(image, models_dir=models_dir)
    conf = estimate_depth_confidence(image, models_dir=models_dir)
    edges = discontinuity_term(depth, depth_span(depth, everywhere))
    assert (conf <= edges + 1e-6).all() and conf.sum() < 0.8 * edges.sum()


def test_confidence_is_zero_outside_the_mask(models_dir):
    image = photo(40, 60)
    mask = np.zeros((40, 60), bool)
    mask[8:32, 10:45] = True
    conf = estimate_depth_confidence(image, mask=mask, models_dir=models_dir)
    assert (conf[~mask] == 0).all() and conf[mask].max() > 0 and conf.max() <= 1
    soft = np.where(mask, 0.9, 0.1).astype(np.float32)                    # float masks: >= 0.5 inside
    np.testing.assert_array_equal(estimate_depth_confidence(image, mask=soft, models_dir=models_dir), conf)
    with pytest.raises(ValueError, match="`mask` must"):
        estimate_depth_confidence(image, mask=mask[:10], models_dir=models_dir)


def test_confidence_reuses_a_given_depth(models_dir):
    image = photo()
    est = DepthEstimator(models_dir)
    seen: list[int] = []
    est.model.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(len(kwargs["pixel_values"])),
                                        with_kwargs=True)
    fresh = est.confidence(image)
    assert seen == [2]                                      # image and its mirror in one batch
    depth = est.predict(image)
    seen.clear()
    reused = est.confidence(image, depth)
    assert seen == [1]                                      # only the mirror
    np.testing.assert_allclose(reused, fresh, atol=1e-5)
    with pytest.raises(ValueError, match="`depth` must"):
        est.confidence(image, depth[:, :-1])


def test_flip_confidence_ignores_the_unknown_scale_and_shift():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:40, :50]
    depth = (0.02 * xx + 0.01 * yy + 0.05 * rng.standard_normal((40, 50))).astype(np.float32)
    other = depth + 0.03 * rng.standard_normal((40, 50)).astype(np.float32)
    mask = np.zeros((40, 50), bool)
    mask[5:35, 5:45] = True
    conf = flip_confidence(depth, other, mask)
    np.testing.assert_allclose(flip_confidence(3.0 * depth + 7.0, 0.5 * other - 2.0, mask), conf, atol=1e-4)
    assert (conf[~mask] == 0).all() and 0.0 < conf[mask].mean() < 1.0
    assert (flip_confidence(depth, other, np.zeros_like(mask)) == 0).all()


def test_least_squares_alignment_recovers_scale_and_shift():
    rng = np.random.default_rng(1)
    source = rng.random((20, 20))
    s, t = align_scale_shift(source, 2.5 * source - 1.0, np.ones((20, 20), bool))
    assert s == pytest.approx(2.5) and t == pytest.approx(-1.0)
    assert align_scale_shift(np.ones((4, 4)), source[:4, :4], np.ones((4, 4), bool))[0] == 0.0


def test_discontinuity_term_falls_at_a_step_not_on_a_ramp():
    xx = np.mgrid[:100, :100][1].astype(np.float32)
    ramp = xx / 99.0
    step = np.where(xx < 50, 0.0, 1.0).astype(np.float32) + 0.2 * ramp
    region = np.ones((100, 100), bool)
    assert discontinuity_term(ramp, depth_span(ramp, region)).min() > 0.9
    edge = discontinuity_term(step, depth_span(step, region))
    assert edge[:, 49:51].max() < 0.01 and edge[:, 10].min() > 0.9


# ---- missing and broken snapshots, the cache ----------------------------------------------------

def test_missing_snapshot_names_the_path_and_the_pull_command(tmp_path):
    expected = tmp_path / "depth" / "dpt-hybrid-midas"
    for make_empty_dir in (False, True):
        if make_empty_dir:
            expected.mkdir(parents=True)
        with pytest.raises(ModelNotAvailable) as info:
            estimate_depth(photo(), models_dir=tmp_path)
        assert str(expected) in str(info.value) and "glimpsed models pull" in str(info.value)


def test_the_models_dir_comes_from_the_environment_when_not_given(models_dir, monkeypatch):
    monkeypatch.setenv("GLIMPSED_MODELS_DIR", str(models_dir))
    np.testing.assert_array_equal(estimate_depth(photo()), estimate_depth(photo(), models_dir=models_dir))


def copy_snapshot(src_root: Path, dst_root: Path) -> Path:
    src, dst = src_root / "depth" / "dpt-hybrid-midas", dst_root / "depth" / "dpt-hybrid-midas"
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("damage, culprit", [
    (lambda d: (d / "config.json").unlink(), "config.json"),
    (lambda d: (d / "config.json").write_text("{not json"), "config.json"),
    (lambda d: (d / "config.json").write_text('{"model_type": "vit"}'), "config.json"),
    (lambda d: (d / "preprocessor_config.json").unlink(), "preprocessor_config.json"),
    (lambda d: (d / "model.safetensors").unlink(), "model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "model.safetensors"),
    (lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:5000]),
     "model.safetensors"),
])
def test_broken_snapshot_raises_format_error_naming_the_file(models_dir, tmp_path, damage, culprit):
    snapshot = copy_snapshot(models_dir, tmp_path)
    damage(snapshot)
    with pytest.raises(FormatError) as info:
        estimate_depth(photo(), models_dir=tmp_path)
    assert str(snapshot / culprit) in str(info.value)


def test_weights_of_another_architecture_raise_format_error(models_dir, tmp_path):
    snapshot = copy_snapshot(models_dir, tmp_path)
    other = tiny_dpt(3, hybrid=True)
    other.save_pretrained(tmp_path / "other")
    (snapshot / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(FormatError, match="model.safetensors"):
        estimate_depth(photo(), models_dir=tmp_path)


def test_checkpoints_without_the_unused_fusion_parameters_load_but_other_gaps_do_not(models_dir, tmp_path):
    """Intel/dpt-hybrid-midas lacks neck.fusion_stage.layers.0.residual_layer1.* (never used by DPT)."""
    snapshot = copy_snapshot(models_dir, tmp_path)
    weights = load_file(snapshot / "model.safetensors")
    unused = {k: v for k, v in weights.items() if not k.startswith("neck.fusion_stage.layers.0.residual_layer1.")}
    assert len(unused) < len(weights)
    save_file(unused, snapshot / "model.safetensors", metadata={"format": "pt"})
    np.testing.assert_array_equal(estimate_depth(photo(), models_dir=tmp_path),
                                  estimate_depth(photo(), models_dir=models_dir))
    clear_cache()
    save_file({k: v for k, v in unused.items() if k != "head.head.0.bias"}, snapshot / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(FormatError, match="head.head.0.bias"):
        estimate_depth(photo(), models_dir=tmp_path)


def test_library_calls_share_one_estimator_per_dir_and_device(models_dir, monkeypatch):
    loads: list[Path] = []
    real_load = estimator_module._load
    monkeypatch.setattr(estimator_module, "_load", lambda path, *a: loads.append(path) or real_load(path, *a))
    image = photo()
    first = estimate_depth(image, models_dir=models_dir)
    estimate_depth_confidence(image, first, models_dir=models_dir)
    estimate_depth(image, models_dir=str(models_dir) + "/")                 # same dir, spelled differently
    assert len(loads) == 1
    assert estimator_module.cached_estimator(models_dir) is estimator_module.cached_estimator(models_dir, "cpu")
    clear_cache()
    estimate_depth(image, models_dir=models_dir)
    assert len(loads) == 2
