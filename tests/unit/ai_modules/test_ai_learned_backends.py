"""The pipeline with learned model files in place: tiny random-weight models, saved in the real layouts
under a models directory, stand in for DPT and SDXL-Lightning, so the real loading code runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ai_modules.diffusion.tiny import write_tiny_enhance_models
from ai_modules.pipeline import run
from test_midas_depth import save_snapshot, tiny_dpt


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_snapshot(root, tiny_dpt())
    write_tiny_enhance_models(root)
    return root


def test_auto_takes_the_present_models_and_the_record_says_so(disc_png, tmp_path, small_settings, models_dir):
    settings = {**small_settings, "enhance": {"backend": "sdxl_lightning", "size": 64, "resolution": 64}}
    result = run(disc_png, settings, tmp_path / "job", models_dir=models_dir)
    stages = {s.name: s for s in result.stages}
    assert stages["depth"].backend == "dpt" and "dpt model files found" in stages["depth"].reason
    assert stages["depth"].model_files[0]["path"] == str(models_dir / "depth" / "dpt-hybrid-midas")
    assert stages["depth"].model_files[0]["bytes"] > 0
    assert stages["multiview"].backend == "relief" and "syncdreamer weights not found" in stages["multiview"].reason
    assert stages["enhance"].backend == "sdxl_lightning" and stages["enhance"].metrics["views"] == 16
    assert (tmp_path / "job" / "enhance" / "view_15.png").is_file()
    with np.load(tmp_path / "job" / "depth" / "depth.npz") as data:
        assert data["depth"].shape == (16, 64, 64) and np.isfinite(data["depth"]).all()
        assert data["confidence"].max() <= 1.0 and data["confidence"].min() >= 0.0
    assert result.outputs["ply"].is_file()
    json.dumps(result.to_dict())


def test_models_appearing_later_change_the_fingerprint_and_redo_from_that_stage(disc_png, tmp_path, small_settings,
                                                                              models_dir):
    workdir = tmp_path / "job"
    first = run(disc_png, small_settings, workdir, models_dir=tmp_path / "empty")
    assert first.stages[2].backend == "inflation"
    second = run(disc_png, small_settings, workdir, models_dir=models_dir)
    assert [s.resumed for s in second.stages] == [True, True, False, False, False, False, False]
    assert second.stages[2].backend == "dpt"
