"""The pipeline with learned model files in place: tiny random-weight models, saved in the real layouts
under a models directory, stand in for SyncDreamer, DPT and SDXL-Lightning, so the real loading code runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ai_modules.pipeline import run
from tests.tiny_models import write_tiny_learned_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_tiny_learned_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def learned_settings(small_settings: dict) -> dict:
    return {**small_settings, "multiview": {"steps": 2},
            "enhance": {"backend": "sdxl_lightning", "size": 64, "resolution": 64}}


def test_auto_takes_the_present_models_and_the_record_says_so(disc_png, tmp_path, learned_settings, models_dir):
    result = run(disc_png, learned_settings, tmp_path / "job", models_dir=models_dir)
    stages = {s.name: s for s in result.stages}
    assert stages["multiview"].backend == "syncdreamer" and "model files found" in stages["multiview"].reason
    assert stages["multiview"].model_files[0]["path"] == str(models_dir / "syncdreamer" / "syncdreamer-pretrain.ckpt")
    assert stages["depth"].backend == "dpt" and "dpt model files found" in stages["depth"].reason
    assert stages["depth"].model_files[0]["bytes"] > 0
    assert stages["reconstruct"].metrics["initial_from"] == "visible hull" and stages["reconstruct"].metrics["depth_term"]
    assert stages["enhance"].backend == "sdxl_lightning" and stages["enhance"].metrics["views"] == 16
    work = tmp_path / "job"
    assert (work / "multiview" / "view_15.png").is_file() and not (work / "multiview" / "object.ply").exists()
    assert (work / "enhance" / "view_15.png").is_file()
    with np.load(work / "depth" / "depth.npz") as data:
        assert data["depth"].shape == (16, 256, 256) and np.isfinite(data["depth"]).all()
        assert 0.0 <= data["confidence"].min() and data["confidence"].max() <= 1.0
    assert result.outputs["ply"].is_file()
    json.dumps(result.to_dict())


def test_models_appearing_later_redo_the_job_from_the_stage_they_change(disc_png, tmp_path, learned_settings,
                                                                         models_dir):
    workdir = tmp_path / "job"
    settings = {**learned_settings, "enhance": {}}
    first = run(disc_png, settings, workdir, models_dir=tmp_path / "empty")
    assert [s.backend for s in first.stages][1:3] == ["relief", "none"]
    second = run(disc_png, settings, workdir, models_dir=models_dir)
    assert [s.resumed for s in second.stages] == [True] + [False] * 6
    assert [s.backend for s in second.stages][1:3] == ["syncdreamer", "dpt"]


def test_generate_multiview_writes_16_views_and_their_cameras(tmp_path, models_dir):
    from PIL import Image

    from ai_modules.errors import InputError, ModelNotAvailable
    from ai_modules.sync_dreamer import generate_multiview

    rgba = np.zeros((120, 100, 4), np.uint8)
    rgba[20:100, 30:70] = (200, 60, 30, 255)
    paths = generate_multiview(Image.fromarray(rgba, "RGBA"), tmp_path / "views", elevation=20.0,
                               models_dir=models_dir, device="cpu", steps=2)
    assert [p.name for p in paths] == [f"view_{i:02d}.png" for i in range(16)]
    assert all(Image.open(p).size == (256, 256) for p in paths)
    cameras = json.loads((tmp_path / "views" / "cameras.json").read_text())
    assert np.array(cameras["viewmats"]).shape == (16, 4, 4) and cameras["input_elevation"] == 20.0
    with pytest.raises(ModelNotAvailable, match="glimpsed models pull syncdreamer") as info:
        generate_multiview(Image.fromarray(rgba, "RGBA"), tmp_path / "x", models_dir=tmp_path / "none", device="cpu")
    assert str(tmp_path / "none" / "syncdreamer" / "syncdreamer-pretrain.ckpt") in str(info.value)
    with pytest.raises(InputError, match="RGBA cutout"):
        generate_multiview(Image.fromarray(rgba[..., :3]), tmp_path / "y", models_dir=models_dir, device="cpu")
