"""The worker's pipeline on a GPU: models stay on the card between jobs, move to CPU memory when the budget
says so, and a stage that really runs out of CUDA memory is retried once in its low-memory form."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

LEARNED = ("multiview", "depth", "enhance", "refine")    # refine: mvcrm's depth gate (auto runs it after SDXL)


@pytest.fixture(autouse=True)
def _extensions_dir(tmp_path_factory):
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    from tests.tiny_models import write_tiny_learned_models

    return write_tiny_learned_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def photo(tmp_path) -> Path:
    yy, xx = np.mgrid[0:200, 0:200]
    img = np.full((200, 200, 3), 128, np.uint8)
    img[(xx - 100) ** 2 + (yy - 100) ** 2 < 60 ** 2] = (220, 30, 30)
    Image.fromarray(img).save(tmp_path / "disc.png")
    return tmp_path / "disc.png"


SETTINGS = {"device": "cuda", "segment": {"size": 96, "object_size": 72, "work_size": 160},
            "multiview": {"steps": 2}, "reconstruct": {"iterations": 4, "size": 64},
            "enhance": {"backend": "sdxl_lightning", "size": 64, "resolution": 64},
            "export": {"formats": ["ply"]}}


def test_models_stay_on_the_gpu_between_jobs(photo, tmp_path, models_dir):
    from ai_modules.pipeline import open_pipeline

    pipeline = open_pipeline(SETTINGS, models_dir=models_dir)
    pipeline.run(photo, tmp_path / "a")
    second = {s.name: s for s in pipeline.run(photo, tmp_path / "b").stages}
    for name in LEARNED:
        assert pipeline.stage(name).impl.cache.loads == 1 and second[name].load_s == 0.0
        assert second[name].peak_vram_mb is not None and second[name].residency == []
    assert set(pipeline.residency.state()["resident"]) == {"syncdreamer", "dpt", "sdxl_lightning", "mvcrm"}
    assert second["refine"].backend == "mvcrm" and second["refine"].metrics["gates"]["depth"]["on"]
    assert next(pipeline.stage("depth").impl.model.model.parameters()).is_cuda
    pipeline.close()


def test_a_small_budget_moves_the_least_recently_used_model_to_cpu(photo, tmp_path, models_dir):
    from ai_modules.pipeline import open_pipeline

    pipeline = open_pipeline(SETTINGS, models_dir=models_dir, vram_budget=1)     # room for one model at a time
    first = {s.name: s for s in pipeline.run(photo, tmp_path / "a").stages}
    assert any("syncdreamer moved to cpu" in m for m in first["depth"].residency)
    second = {s.name: s for s in pipeline.run(photo, tmp_path / "b").stages}
    assert any("syncdreamer moved to cuda" in m for m in second["multiview"].residency)
    assert all(pipeline.stage(n).impl.cache.loads == 1 for n in LEARNED)          # moved, never read again
    assert pipeline.residency.state()["resident"] == ["mvcrm"]
    assert not next(pipeline.stage("multiview").impl.model.model.parameters()).is_cuda
    pipeline.close()


def test_a_real_cuda_out_of_memory_is_retried_in_the_low_memory_form(photo, tmp_path, models_dir, monkeypatch):
    from ai_modules.pipeline import open_pipeline

    pipeline = open_pipeline(SETTINGS, models_dir=models_dir)
    backend = pipeline.stage("enhance").impl
    real = backend.run

    def hungry(inputs, hooks):  # noqa: ANN001
        if not backend.low_memory:
            torch.empty(1 << 50, dtype=torch.uint8, device="cuda")        # 1 PiB: the allocator refuses
        return real(inputs, hooks)

    monkeypatch.setattr(backend, "run", hungry)
    record = {s.name: s for s in pipeline.run(photo, tmp_path / "a").stages}["enhance"]
    assert record.low_memory and "OutOfMemoryError" in record.low_memory_retry
    assert backend.model.low_memory                                      # SDXL in its offload form
    pipeline.close()


def test_on_device_lends_the_weights_and_keeps_one_page_locked_cpu_copy():
    """The low-memory forms' moves (`residency.on_device`): the weights are on the card inside the block, back on
    the CPU after it without a copy back, page-locked once and then reused, and unchanged."""
    from ai_modules.residency import on_device

    module = torch.nn.Linear(256, 256)
    weight, bias = module.weight.detach().clone(), module.bias.detach().clone()
    x = torch.randn(3, 256)
    with on_device(module, "cuda") as m:
        assert m.weight.device.type == "cuda" and m.bias.device.type == "cuda"
        out = m(x.cuda()).cpu()
    assert module.weight.device.type == "cpu" and module.weight.is_pinned() and module.bias.is_pinned()
    assert torch.equal(module.weight, weight) and torch.equal(module.bias, bias)
    ptr = module.weight.data_ptr()
    with on_device(module, "cuda"):
        pass
    assert module.weight.data_ptr() == ptr                                  # locked once, not copied again
    torch.testing.assert_close(out, x @ weight.T + bias, rtol=1e-3, atol=1e-3)   # TF32 may be on
