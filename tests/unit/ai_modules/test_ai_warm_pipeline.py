"""One pipeline kept for a worker's life: models load once, stay keyed by their files, move within a budget,
and a stage that runs out of GPU memory is retried once in its low-memory form. Tiny random-weight models in the
real layouts stand in for SyncDreamer, DPT and SDXL-Lightning."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules.identity import config_hash, result_identity
from ai_modules.pipeline import PIPELINE_VERSION, open_pipeline
from ai_modules.residency import Residency, on_device
from tests.tiny_models import write_tiny_learned_models, write_tiny_syncdreamer

LEARNED = ("multiview", "depth", "enhance")
_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed: it records only while a test sets _OPENED


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return write_tiny_learned_models(tmp_path_factory.mktemp("models"))


@pytest.fixture
def learned(small_settings: dict) -> dict:
    return {**small_settings, "multiview": {"steps": 2}, "reconstruct": {"iterations": 2, "size": 64},
            "enhance": {"backend": "sdxl_lightning", "size": 64, "resolution": 64},
            "export": {"formats": ["ply"]}}


def _opened_under(root: Path, run) -> list[str]:  # noqa: ANN001
    global _OPENED
    _OPENED = []
    try:
        run()
        return [p for p in _OPENED if Path(p).resolve().is_relative_to(root.resolve())]
    finally:
        _OPENED = None


def test_a_second_job_on_a_warm_pipeline_reads_no_model_file(disc_png, tmp_path, learned, models_dir):
    pipeline = open_pipeline(learned, models_dir=models_dir)
    opened_cold = _opened_under(models_dir, lambda: pipeline.run(disc_png, tmp_path / "job1"))
    cold = {s.name: s for s in pipeline.run(disc_png, tmp_path / "job1").stages}   # resumed: nothing loads
    assert opened_cold, "the cold job must read the model files (else this test could not fail)"
    result = {}
    opened_warm = _opened_under(models_dir, lambda: result.update(r=pipeline.run(disc_png, tmp_path / "job2")))
    assert opened_warm == []
    warm = {s.name: s for s in result["r"].stages}
    for name in LEARNED:
        backend = pipeline.stage(name).impl
        assert backend.cache.loads == 1, name
        assert warm[name].load_s == 0.0 and not warm[name].resumed
        assert warm[name].model_files and all(len(m["sha256"]) == 64 for m in warm[name].model_files)
    assert all(cold[n].resumed for n in LEARNED)
    assert (models_dir / ".glimpsed-hashes.json").is_file()    # hashed once per file version, remembered
    pipeline.close()
    assert all(pipeline.stage(n).impl.model is None for n in LEARNED)


def test_a_replaced_model_file_is_loaded_again_and_its_stage_redone(disc_png, tmp_path, learned, models_dir):
    pipeline = open_pipeline(learned, models_dir=models_dir)
    first = pipeline.run(disc_png, tmp_path / "job")
    checkpoint = models_dir / "syncdreamer" / "syncdreamer-pretrain.ckpt"
    st = checkpoint.stat()
    os.utime(checkpoint, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))      # as a fresh `models pull` would
    second = pipeline.run(disc_png, tmp_path / "job")
    assert pipeline.stage("multiview").impl.cache.loads == 2 and pipeline.stage("depth").impl.cache.loads == 1
    assert [s.resumed for s in second.stages] == [True] + [False] * 6
    assert second.stages[1].load_s > 0 and first.stages[1].model_files[0]["bytes"] == st.st_size
    pipeline.close()


def test_a_model_pulled_while_the_worker_runs_is_used_from_the_next_job(disc_png, tmp_path, small_settings):
    models = tmp_path / "models"
    settings = {**small_settings, "multiview": {**small_settings["multiview"], "steps": 1}}
    pipeline = open_pipeline(settings, models_dir=models)
    assert pipeline.run(disc_png, tmp_path / "a").stages[1].backend == "relief"
    write_tiny_syncdreamer(models)
    assert pipeline.run(disc_png, tmp_path / "b").stages[1].backend == "syncdreamer"
    pipeline.close()


def test_out_of_memory_retries_the_stage_once_in_its_low_memory_form(disc_png, tmp_path, small_settings,
                                                                      monkeypatch):
    pipeline = open_pipeline(small_settings)
    fit = pipeline.stage("reconstruct").impl
    real_run, forms = fit.run, []

    def run(inputs, hooks):  # noqa: ANN001
        forms.append(fit.low_memory)
        if not fit.low_memory:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(inputs, hooks)

    monkeypatch.setattr(fit, "run", run)
    events = []
    result = pipeline.run(disc_png, tmp_path / "job", on_progress=lambda *e: events.append(e))
    record = result.stages[3]
    assert forms == [False, True] and record.low_memory and "CUDA out of memory" in record.low_memory_retry
    assert record.metrics["views_per_step"] == 1                       # the fit's low-memory form
    assert any(s == "reconstruct" and f == 1.0 and "retried in the low-memory form" in m for s, f, m in events)

    def always(inputs, hooks):  # noqa: ANN001
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(fit, "run", always)
    with pytest.raises(torch.cuda.OutOfMemoryError):       # then the worker's transient-retry policy applies
        pipeline.run(disc_png, tmp_path / "other")


def test_residency_moves_the_least_recently_used_model_off_the_gpu():
    moved = []
    residency = Residency("cuda:0", budget=100)

    def entry(name: str, nbytes: int) -> None:
        residency.register(name, nbytes, lambda: moved.append(f"in {name}"), lambda: moved.append(f"out {name}"),
                           resident=False)

    for name, nbytes in (("syncdreamer", 50), ("dpt", 20), ("sdxl", 60)):
        entry(name, nbytes)
    residency.acquire("syncdreamer")
    residency.acquire("dpt")
    assert moved == ["in syncdreamer", "in dpt"] and residency.resident_bytes() == 70
    residency.acquire("sdxl")                       # 130 > 100: the least recently used (syncdreamer) goes
    assert moved[2:] == ["out syncdreamer", "in sdxl"] and residency.state()["resident"] == ["dpt", "sdxl"]
    residency.acquire("dpt")                        # resident already: nothing moves, it becomes most recent
    residency.acquire("syncdreamer")                # now sdxl is the least recently used
    assert moved[4:] == ["out sdxl", "in syncdreamer"]
    assert any("to make room for syncdreamer" in m for m in residency.take_moves())
    on_cpu = Residency("cpu", budget=1)
    on_cpu.register("x", 10, lambda: moved.append("never"), lambda: moved.append("never"))
    on_cpu.acquire("x")
    assert "never" not in moved


def test_on_device_moves_nothing_on_the_cpu_or_when_disabled():
    """A low-memory form's moves: on the CPU (or with `enabled` False) the weights stay the very same tensors."""
    module = torch.nn.Linear(2, 2)
    ptr = module.weight.data_ptr()
    for device, enabled in (("cpu", True), ("cuda", False)):
        with on_device(module, device, enabled) as m:
            assert m is module and module.weight.data_ptr() == ptr
    assert module.weight.device.type == "cpu" and module.weight.data_ptr() == ptr


def test_enhance_renders_on_the_cameras_the_multiview_stage_returned(disc_png, tmp_path, small_settings):
    settings = {**small_settings, "enhance": {"backend": "classical", "size": 96}}
    pipeline = open_pipeline(settings)
    pipeline.run(disc_png, tmp_path / "job")
    views = pipeline.stage("multiview").load_outputs(tmp_path / "job" / "multiview")
    views.ring.viewmats = views.ring.viewmats[::-1].copy()                # another camera order: used as given
    result = pipeline.continue_from("multiview", views, tmp_path / "again")
    enhanced = pipeline.stage("enhance").load_outputs(tmp_path / "again" / "enhance").views
    assert np.allclose(enhanced.viewmats, views.ring.viewmats)
    assert np.allclose(enhanced.Ks[:, 0, 0], views.ring.Ks[:, 0, 0] * 96 / views.ring.images.shape[2])
    assert result.outputs["ply"].is_file() and [s.name for s in result.stages][0] == "depth"


def test_config_hash_is_over_coerced_settings_and_the_identity_follows_model_files(tmp_path):
    assert config_hash({"segment": {"size": "256"}}) == config_hash(None) == config_hash({"segment": {"size": 256}})
    assert config_hash({"segment": {"size": 255}}) != config_hash(None)
    empty = result_identity(None, tmp_path, PIPELINE_VERSION)
    assert empty["models"] == [] and empty["key"] == result_identity({}, tmp_path, PIPELINE_VERSION)["key"]
    write_tiny_syncdreamer(tmp_path)
    pulled = result_identity(None, tmp_path, PIPELINE_VERSION)
    assert pulled["key"] != empty["key"] and [m["name"] for m in pulled["models"]] == ["syncdreamer-pretrain"]
    assert result_identity({"multiview": {"backend": "relief"}}, tmp_path, PIPELINE_VERSION)["key"] == \
        result_identity({"multiview": {"backend": "relief"}}, tmp_path / "none", PIPELINE_VERSION)["key"]
