"""`multiview: trellis` in the pipeline: a tiny random-weight TRELLIS in the hub's layout (`write_tiny_trellis`)
stands in for the published files, so the real loading code, the photo's pose search and the stages after it run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ai_modules.base import StageHooks, resolve_backend
from ai_modules.errors import PipelineStopped
from ai_modules.multiview.stage import MultiviewInputs, MultiviewStage
from ai_modules.pipeline import run
from ai_modules.settings import parse_settings
from tests.tiny_models import write_tiny_syncdreamer, write_tiny_trellis


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    write_tiny_trellis(root)
    return root


def test_auto_prefers_trellis_to_syncdreamer_when_its_files_are_present(models_dir, tmp_path):
    write_tiny_syncdreamer(tmp_path)
    assert resolve_backend("multiview", "auto", tmp_path)[0] == "syncdreamer"
    backend, why = resolve_backend("multiview", "auto", models_dir)
    assert backend == "trellis" and str(models_dir / "trellis") in why
    write_tiny_trellis(tmp_path)
    assert resolve_backend("multiview", "auto", tmp_path)[0] == "trellis"
    (tmp_path / "trellis" / "dinov2_vitl14_reg4_pretrain.pth").write_bytes(b"")     # one file short: not present
    assert resolve_backend("multiview", "auto", tmp_path)[0] == "syncdreamer"


def test_a_job_through_trellis_starts_reconstruct_from_its_object(disc_png, small_settings, models_dir, tmp_path):
    settings = {**small_settings, "export": {"formats": ["ply"]}}        # the other formats have their own tests
    result = run(disc_png, settings, tmp_path / "job", models_dir=models_dir)
    stages = {s.name: s for s in result.stages}
    mv = stages["multiview"]
    assert mv.backend == "trellis" and {f["name"] for f in mv.model_files} == {"trellis-image-large",
                                                                               "dinov2-vitl14-reg"}
    assert mv.metrics["gaussians"] == 32 * mv.metrics["voxels"] and mv.metrics["steps"] == [3, 3]
    assert mv.metrics["photo_silhouette_iou"] > 0.5 and 0 <= mv.metrics["photo_azimuth"] < 360
    assert stages["depth"].backend == "none" and "built the object itself" in stages["depth"].reason
    assert stages["reconstruct"].metrics["initial_from"] == "multiview object"
    assert stages["reconstruct"].metrics["initial_gaussians"] == mv.metrics["gaussians"]
    assert stages["reconstruct"].metrics["input_view_iou"] > 0.5          # the photo's camera frames the object
    work = tmp_path / "job" / "multiview"
    assert (work / "object.ply").is_file() and (work / "view_15.png").is_file()
    assert result.outputs["ply"].is_file()


def test_the_low_memory_form_gives_the_same_object_and_a_stop_ends_the_sampling(make_disc, models_dir):
    photo, alpha = make_disc(96)
    image = np.where(alpha[..., None], photo / 255.0, 1.0).astype(np.float32)
    inputs = MultiviewInputs(image, alpha.astype(np.float32))
    settings = parse_settings({"multiview": {"backend": "trellis", "view_size": 48}}).multiview
    stage = MultiviewStage(settings, models_dir)
    stage.load("cpu")
    plain = stage.run(inputs)
    stage.load("cpu", low_memory=True)
    low = stage.run(inputs)
    assert low.metrics["low_memory"] and np.allclose(low.gaussians.means, plain.gaussians.means, atol=1e-6)
    assert stage.load_seconds() == 0.0                                   # the networks were not read again
    calls = []
    stop = StageHooks(should_stop=lambda: len(calls) > 1, progress=lambda f, m: calls.append(m), stage="multiview")
    with pytest.raises(PipelineStopped):
        stage.run(inputs, stop)
    assert any("TRELLIS sparse structure: step 1/3" in m for m in calls)
