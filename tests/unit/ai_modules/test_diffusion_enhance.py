"""`ai_modules.diffusion`: EnhanceService through its real loading code, on tiny random SDXL models.

The models are the real diffusers/transformers classes with tiny configs, written by
`ai_modules.diffusion.tiny` in the real snapshot layouts (sdxl-base with model_index.json,
the Lightning UNet as one safetensors state dict, the ControlNet snapshot). Nothing is
downloaded: HF_HUB_OFFLINE is set and every load is `local_files_only`.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ai_modules.diffusion import EnhanceService, depth_control_image, enhance_model_paths, processing_size
from ai_modules.diffusion import enhance as enhance_module
from ai_modules.diffusion.functional import as_rgb_image
from ai_modules.diffusion.tiny import BASE_REL, CONTROLNET_REL, LIGHTNING_REL, write_tiny_enhance_models
from ai_modules.errors import FormatError, InputError, ModelNotAvailable

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

RES = 64  # processing area 64x64: the tiny models run in milliseconds


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_tiny_enhance_models(root, seed=0)
    return root


@pytest.fixture(scope="module")
def service(models_dir) -> EnhanceService:
    return EnhanceService("cpu", models_dir=models_dir, resolution=RES).load()


@pytest.fixture
def copy_models(models_dir, tmp_path):
    """A private copy of the model tree to break."""
    def make() -> Path:
        dest = tmp_path / "models"
        shutil.copytree(models_dir, dest)
        return dest
    return make


def view_and_depth(width: int = 70, height: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """A smooth colour image [H,W,3] float 0..1 and a dome-shaped depth [H,W] (larger = nearer)."""
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    image = np.stack([xx / width, yy / height, 0.5 + 0.4 * np.sin(xx / 7.0)], axis=-1)
    depth = 3.0 - ((xx - width / 2) / (width / 2)) ** 2 - ((yy - height / 2) / (height / 2)) ** 2
    return image.astype(np.float32), depth


def as_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.float32)


# --- the service on the tiny models ---------------------------------------------------------------

def test_output_has_the_input_size_for_odd_sizes_and_inputs(service):
    image, depth = view_and_depth(70, 50)  # processed at 72x56, returned at 70x50
    out = service.enhance(image, depth, "a red mug")
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (70, 50)
    rgba = Image.new("RGBA", (33, 47), (200, 40, 40, 128))
    assert service.enhance(rgba, torch.rand(47, 33), seed=3).size == (33, 47)


def test_same_seed_same_image_other_seed_other_image(service):
    image, depth = view_and_depth()
    first = as_array(service.enhance(image, depth, "a mug", seed=7))
    again = as_array(service.enhance(image, depth, "a mug", seed=7))
    other = as_array(service.enhance(image, depth, "a mug", seed=8))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 1.0


def test_views_in_one_batch_come_out_as_one_by_one(service):
    (a, depth_a), (b, _) = view_and_depth(), view_and_depth()
    b = b[:, ::-1].copy()                                          # another view, the same size
    depth_b = depth_a.max() - depth_a
    single = [as_array(service.enhance(x, d, "a mug", seed=5)) for x, d in ((a, depth_a), (b, depth_b))]
    batched = [as_array(x) for x in service.enhance_many([a, b], [depth_a, depth_b], "a mug", seed=5, batch_size=2)]
    for one, many in zip(single, batched):
        assert np.abs(one - many).max() <= 2.0                      # 8-bit rounding of batched kernels at most
    assert np.abs(batched[0] - batched[1]).mean() > 1.0
    with pytest.raises(InputError, match="one size"):
        service.enhance_many([a, a[:-1]], [depth_a, depth_a[:-1]])


def test_the_unet_holds_the_lightning_weights_not_the_base_ones(service, models_dir):
    from safetensors.torch import load_file

    lightning = load_file(str(models_dir / LIGHTNING_REL))
    base = load_file(str(models_dir / BASE_REL / "unet" / "diffusion_pytorch_model.safetensors"))
    loaded = service.pipeline.unet.state_dict()
    assert set(loaded) == set(lightning)
    for name, tensor in lightning.items():
        torch.testing.assert_close(loaded[name], tensor.float(), rtol=0, atol=0, msg=name)
    differing = sum(not torch.equal(loaded[name], base[name].float()) for name in loaded)
    assert differing > len(loaded) // 2


def test_controlnet_is_the_depth_snapshot(service, models_dir):
    from safetensors.torch import load_file

    saved = load_file(str(models_dir / CONTROLNET_REL / "diffusion_pytorch_model.safetensors"))
    loaded = service.pipeline.controlnet.state_dict()
    for name, tensor in saved.items():
        torch.testing.assert_close(loaded[name], tensor.float(), rtol=0, atol=0, msg=name)


def test_scheduler_is_trailing_euler_and_strength_picks_lightnings_timesteps(service):
    from diffusers import EulerDiscreteScheduler

    scheduler = service.pipeline.scheduler
    assert type(scheduler) is EulerDiscreteScheduler
    assert scheduler.config.timestep_spacing == "trailing"
    image, depth = view_and_depth()
    seen: list[float] = []

    def record(pipe, step, timestep, kwargs):
        seen.append(float(timestep))
        return kwargs

    pipe = service.pipeline
    generator = torch.Generator("cpu").manual_seed(0)
    control = depth_control_image(depth, (72, 56))
    pipe(prompt="", image=as_rgb_image(image).resize((72, 56)), control_image=control, height=56, width=72,
         strength=0.5, num_inference_steps=service.steps, guidance_scale=0.0, generator=generator,
         callback_on_step_end=record, output_type="np")
    assert seen == [499.0, 249.0]  # the last two of Lightning's 999, 749, 499, 249


def test_guidance_is_off_so_negative_prompt_has_no_effect(service):
    image, depth = view_and_depth()
    plain = as_array(service.enhance(image, depth, "a mug", seed=1))
    with pytest.warns(UserWarning, match="negative_prompt"):
        negative = as_array(service.enhance(image, depth, "a mug", negative_prompt="blurry", seed=1))
    np.testing.assert_array_equal(plain, negative)
    assert service.pipeline.guidance_scale == 0.0 and not service.pipeline.do_classifier_free_guidance


def test_depth_controlnet_scale_and_prompt_change_the_result(service):
    image, depth = view_and_depth()
    base = as_array(service.enhance(image, depth, "a mug", seed=2))
    flat_depth = as_array(service.enhance(image, np.zeros_like(depth), "a mug", seed=2))
    no_control = as_array(service.enhance(image, depth, "a mug", controlnet_scale=0.0, seed=2))
    assert np.abs(base - flat_depth).mean() > 1.0
    assert np.abs(base - no_control).mean() > 1.0


def test_the_prompt_reaches_both_text_encoders(service):
    pipe = service.pipeline
    seen: list[list[int]] = []
    hooks = [encoder.register_forward_hook(lambda module, args, kwargs, out: seen.append(args[0][0].tolist()),
                                           with_kwargs=True)
             for encoder in (pipe.text_encoder, pipe.text_encoder_2)]
    try:
        service.enhance(*view_and_depth(32, 32), "the cat")
    finally:
        for hook in hooks:
            hook.remove()
    expected = pipe.tokenizer("the cat").input_ids
    assert len(seen) == 2 and all(ids[:len(expected)] == expected for ids in seen)


def test_loads_lazily_and_once(models_dir, monkeypatch):
    service = EnhanceService("cpu", models_dir=models_dir, resolution=RES)
    assert not service.loaded
    image, depth = view_and_depth(40, 40)
    service.enhance(image, depth)
    assert service.loaded
    monkeypatch.setattr(enhance_module, "_load_lightning_unet",
                        lambda *a, **k: pytest.fail("loaded a second time"))
    assert service.load() is service
    service.unload()
    assert not service.loaded


def test_low_memory_on_cpu_slices_and_tiles_the_vae(models_dir):
    service = EnhanceService("cpu", models_dir=models_dir, resolution=RES, low_memory=True)
    image, depth = view_and_depth(48, 48)
    assert service.enhance(image, depth).size == (48, 48)
    assert service.pipeline.vae.use_slicing and service.pipeline.vae.use_tiling


def test_fp16_only_snapshots_load_with_the_fp16_variant(copy_models):
    root = copy_models()
    for part in ("vae", "text_encoder", "text_encoder_2"):
        folder = root / BASE_REL / part
        (weights,) = folder.glob("*.safetensors")
        weights.rename(folder / weights.name.replace(".safetensors", ".fp16.safetensors"))
    (root / BASE_REL / "unet" / "diffusion_pytorch_model.safetensors").unlink()  # never read: Lightning replaces it
    service = EnhanceService("cpu", models_dir=root, resolution=RES).load()
    assert enhance_module._base_variant(root / BASE_REL) == "fp16"
    assert service.enhance(*view_and_depth(32, 32)).size == (32, 32)


def test_models_dir_defaults_to_the_environment(models_dir, monkeypatch):
    monkeypatch.setenv("GLIMPSED_MODELS_DIR", str(models_dir))
    paths = EnhanceService("cpu").model_paths
    assert paths == enhance_model_paths(models_dir)
    assert paths.lightning_unet == models_dir / LIGHTNING_REL


# --- missing and broken models ---------------------------------------------------------------------

@pytest.mark.parametrize("rel", [BASE_REL, LIGHTNING_REL, CONTROLNET_REL], ids=["base", "lightning", "controlnet"])
def test_a_missing_model_raises_model_not_available_before_loading_anything(copy_models, rel, monkeypatch):
    root = copy_models()
    target = root / rel
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    monkeypatch.setattr(enhance_module, "_load_lightning_unet", lambda *a, **k: pytest.fail("loaded a model"))
    service = EnhanceService("cpu", models_dir=root, resolution=RES)
    with pytest.raises(ModelNotAvailable) as caught:
        service.enhance(*view_and_depth(32, 32))
    assert str(target) in str(caught.value)
    assert "glimpsed models pull sdxl_lightning" in str(caught.value)
    assert caught.value.path == str(target) and not service.loaded


def _break_index(root: Path) -> Path:
    (root / BASE_REL / "model_index.json").write_text("{not json")
    return root / BASE_REL


def _drop_text_encoder(root: Path) -> Path:
    shutil.rmtree(root / BASE_REL / "text_encoder_2")
    return root / BASE_REL


def _truncate_vae(root: Path) -> Path:
    weights = root / BASE_REL / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return root / BASE_REL


def _bad_unet_config(root: Path) -> Path:
    config = root / BASE_REL / "unet" / "config.json"
    data = json.loads(config.read_text())
    data["layers_per_block"] = 2  # the Lightning file lacks the extra blocks
    config.write_text(json.dumps(data))
    return root / LIGHTNING_REL


def _lightning_missing_a_key(root: Path) -> Path:
    from safetensors.torch import load_file, save_file

    state = load_file(str(root / LIGHTNING_REL))
    state.pop(min(state))
    save_file(state, str(root / LIGHTNING_REL))
    return root / LIGHTNING_REL


def _lightning_garbage(root: Path) -> Path:
    (root / LIGHTNING_REL).write_bytes(b"\x00" * 64)
    return root / LIGHTNING_REL


def _controlnet_config_garbage(root: Path) -> Path:
    (root / CONTROLNET_REL / "config.json").write_text("[1, 2")
    return root / CONTROLNET_REL


@pytest.mark.parametrize("damage", [_break_index, _drop_text_encoder, _truncate_vae, _bad_unet_config,
                                    _lightning_missing_a_key, _lightning_garbage, _controlnet_config_garbage])
def test_a_broken_model_raises_format_error_naming_it(copy_models, damage):
    root = copy_models()
    named = damage(root)
    service = EnhanceService("cpu", models_dir=root, resolution=RES)
    with pytest.raises((FormatError, ModelNotAvailable)) as caught:     # a missing file: the model is not there
        service.load()
    assert str(named) in str(caught.value)
    assert "glimpsed models pull sdxl_lightning" in str(caught.value)
    assert not service.loaded


# --- argument and input checks (before any model loads) ------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"strength": 0.0}, "strength"), ({"strength": 1.5}, "strength"), ({"strength": 0.2}, "1/steps"),
    ({"strength": float("nan")}, "strength"), ({"controlnet_scale": -1.0}, "controlnet_scale"),
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"prompt": None}, "prompt"),
])
def test_bad_arguments_raise_input_error_without_models(tmp_path, kwargs, match):
    service = EnhanceService("cpu", models_dir=tmp_path, resolution=RES)  # an empty model tree
    image, depth = view_and_depth(32, 32)
    with pytest.raises(InputError, match=match):
        service.enhance(image, depth, **kwargs)


@pytest.mark.parametrize("image, depth, match", [
    (np.zeros((32, 32), np.float32), np.zeros((32, 32)), "image"),
    (np.full((32, 32, 3), 2.0, np.float32), np.zeros((32, 32)), "0..1"),
    (np.zeros((32, 32, 3), np.int16), np.zeros((32, 32)), "dtype"),
    (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 2)), "depth_map"),
    (np.zeros((32, 32, 3), np.uint8), np.full((32, 32), np.nan), "finite"),
    (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 64)), "aspect"),
    (np.zeros((32, 32, 3), np.uint8), [[1.0]], "depth_map"),
])
def test_bad_images_and_depth_maps_raise_input_error(tmp_path, image, depth, match):
    with pytest.raises(InputError, match=match):
        EnhanceService("cpu", models_dir=tmp_path).enhance(image, depth)


def test_constructor_checks_its_arguments_and_picks_the_dtype(tmp_path):
    assert EnhanceService("cpu", models_dir=tmp_path).dtype == torch.float32
    assert EnhanceService("cuda", models_dir=tmp_path).dtype == torch.float16  # nothing loads yet
    for kwargs in ({"steps": 0}, {"steps": 2.0}, {"resolution": 100}, {"dtype": torch.int8}):
        with pytest.raises(ValueError):
            EnhanceService("cpu", models_dir=tmp_path, **kwargs)


# --- the pure helpers --------------------------------------------------------------------------------

def test_processing_size_keeps_aspect_area_and_multiples_of_8():
    assert processing_size(256, 256) == (1024, 1024)
    for width, height in [(640, 480), (70, 50), (1920, 1080), (300, 1000)]:
        w, h = processing_size(width, height)
        assert w % 8 == 0 and h % 8 == 0
        assert abs(w * h / 1024**2 - 1) < 0.03
        assert abs((w / h) / (width / height) - 1) < 0.03


def test_depth_is_normalised_near_bright_whatever_its_scale():
    _, depth = view_and_depth(40, 30)
    control = np.asarray(depth_control_image(depth, (40, 30)))
    assert control.shape == (30, 40, 3) and (control[..., 0] == control[..., 2]).all()
    assert control.max() == 255 and control.min() == 0
    assert control[15, 20, 0] == 255  # the dome's top (largest value = nearest) is white
    rescaled = np.asarray(depth_control_image(depth * 1000.0 + 7.0, (40, 30)))
    np.testing.assert_array_equal(control, rescaled)
    assert np.asarray(depth_control_image(np.full((30, 40), 5.0), (40, 30))).max() == 0
    ready = Image.fromarray(control[..., 0])
    np.testing.assert_array_equal(np.asarray(depth_control_image(ready, (40, 30))), control)
    assert depth_control_image(torch.from_numpy(depth)[..., None], (80, 64), image_size=(40, 30)).size == (80, 64)


def test_alpha_is_composited_on_white():
    rgba = np.zeros((4, 4, 4), np.float32)
    rgba[..., 0] = 1.0  # red, fully transparent
    assert as_array(as_rgb_image(rgba)).min() == 255
    half = Image.new("RGBA", (2, 2), (0, 0, 0, 128))
    assert abs(as_array(as_rgb_image(half)).mean() - 127) <= 1
