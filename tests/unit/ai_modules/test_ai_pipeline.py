"""ai_modules.pipeline.run: artifacts, done.json, resume, redo, stop, progress, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ai_modules import PIPELINE_VERSION, STAGES, run
from ai_modules.errors import NoObjectFound, PipelineStopped, SettingsError, StageFailed
from ai_modules.ply import header


@pytest.fixture
def small_settings(small_settings: dict) -> dict:
    """The shared small settings, plus small mesh and turntable sizes (every default format stays on)."""
    export = {**small_settings["export"], "mesh_views": 4, "mesh_view_size": 64, "mesh_voxels": 32,
              "mesh_max_faces": 2000, "turntable_frames": 4, "turntable_size": 48}
    return {**small_settings, "export": export}


def mtimes(workdir: Path) -> dict[str, int]:
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in sorted(workdir.rglob("*")) if p.is_file()}


def test_end_to_end_writes_outputs_and_records(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"
    result = run(disc_png, small_settings, workdir)
    assert set(result.outputs) == {"ply", "splat", "glb", "preview", "turntable"}
    assert result.outputs["ply"] == workdir / "export" / "model.ply"
    assert result.outputs["glb"] == workdir / "export" / "model.glb"
    assert result.outputs["turntable"] == workdir / "export" / "turntable.webp"
    assert all(p.is_file() for p in result.outputs.values())
    assert [s.name for s in result.stages] == list(STAGES)
    assert [s.backend for s in result.stages] == ["alpha_grabcut", "relief", "none", "fit", "none", "none",
                                                  "inria"]
    assert "the multiview stage built the object itself" in result.stages[2].reason
    assert "syncdreamer weights not found" in result.stages[1].reason
    assert "refine does not run" in result.stages[4].reason and "bench_refine" in result.stages[5].reason
    assert all(not s.resumed and s.duration_s >= 0 and s.model_files == [] for s in result.stages)
    assert result.pipeline_version == PIPELINE_VERSION and result.device == "cpu"
    for name in STAGES:
        done = json.loads((workdir / name / "done.json").read_text())
        assert done["record"]["name"] == name and done["pipeline_version"] == PIPELINE_VERSION
    assert not list(workdir.rglob("*.tmp"))
    n = result.stages[5].metrics["gaussians"]
    assert result.stages[3].metrics["iterations"] == 4
    assert result.stages[3].metrics["initial_from"] == "multiview object"
    assert (workdir / "multiview" / "view_15.png").is_file() and (workdir / "reconstruct" / "gaussians_init.ply").is_file()
    assert all(s.peak_rss_mb > 0 and s.peak_vram_mb is None for s in result.stages)
    assert result.outputs["ply"].stat().st_size == len(header(n, 3)) + n * 248
    assert result.outputs["splat"].stat().st_size == n * 32
    assert 0.1 < result.stages[0].metrics["mask_area_fraction"] < 0.3
    json.dumps(result.to_dict())                                           # JSON-ready


def test_second_run_resumes_everything_without_recomputing(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"
    first = run(disc_png, small_settings, workdir)
    before = mtimes(workdir)
    second = run(disc_png, small_settings, workdir)
    assert [s.resumed for s in second.stages] == [True] * 7
    assert [s.duration_s for s in second.stages] == [s.duration_s for s in first.stages]
    assert mtimes(workdir) == before
    assert second.outputs == first.outputs


def test_stage_without_done_json_is_redone_with_the_stages_after_it(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"
    run(disc_png, small_settings, workdir)
    (workdir / "reconstruct" / "done.json").unlink()
    (workdir / "reconstruct" / "half-written.tmp").write_bytes(b"junk")
    before = mtimes(workdir)
    result = run(disc_png, small_settings, workdir)
    assert [s.resumed for s in result.stages] == [True, True, True, False, False, False, False]
    assert not (workdir / "reconstruct" / "half-written.tmp").exists()
    after = mtimes(workdir)
    assert after["segment/cutout.png"] == before["segment/cutout.png"]
    assert after["export/model.ply"] != before["export/model.ply"]


def test_changed_settings_redo_the_affected_stages(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"
    run(disc_png, small_settings, workdir)
    changed = {**small_settings, "reconstruct": {**small_settings["reconstruct"], "input_weight": 2}}
    result = run(disc_png, changed, workdir)
    assert [s.resumed for s in result.stages] == [True, True, True, False, False, False, False]


def test_unreadable_resumed_artifact_is_recomputed(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"
    run(disc_png, small_settings, workdir)
    (workdir / "multiview" / "done.json").unlink()
    (workdir / "segment" / "cutout.png").write_bytes(b"broken")
    result = run(disc_png, small_settings, workdir)
    assert [s.resumed for s in result.stages] == [False] * 7


def test_should_stop_raises_at_the_boundary_and_a_later_run_finishes(disc_png, tmp_path, small_settings):
    workdir = tmp_path / "job"

    def stop_once_multiview_is_done() -> bool:
        return (workdir / "multiview" / "done.json").is_file()

    with pytest.raises(PipelineStopped) as info:
        run(disc_png, small_settings, workdir, should_stop=stop_once_multiview_is_done)
    assert info.value.next_stage == "depth"
    assert (workdir / "multiview" / "done.json").is_file() and not (workdir / "depth").exists()
    result = run(disc_png, small_settings, workdir, should_stop=lambda: False)
    assert [s.resumed for s in result.stages] == [True, True, False, False, False, False, False]
    assert result.outputs["ply"].is_file()


def test_progress_is_reported_per_stage(disc_png, tmp_path, small_settings):
    events = []
    run(disc_png, small_settings, tmp_path / "job", on_progress=lambda s, f, m: events.append((s, f, m)))
    for name in STAGES:
        fractions = [f for s, f, _ in events if s == name]
        assert fractions[0] == 0.0 and fractions[-1] == 1.0
        assert all(0.0 <= f <= 1.0 for f in fractions)
    assert [s for s, f, _ in events if f == 0.0] == list(STAGES)
    assert all(isinstance(m, str) and m for _, _, m in events)
    events.clear()
    run(disc_png, small_settings, tmp_path / "job", on_progress=lambda s, f, m: events.append((s, f, m)))
    assert events == [(name, 1.0, "resumed from disk") for name in STAGES]      # 0.0 only when a stage runs


def test_errors_propagate_with_their_stage(tmp_path, small_settings, monkeypatch):
    from PIL import Image
    flat = tmp_path / "flat.png"
    Image.new("RGB", (64, 64), (40, 40, 40)).save(flat)
    with pytest.raises(NoObjectFound):
        run(flat, small_settings, tmp_path / "a")
    assert not (tmp_path / "a" / "segment" / "done.json").exists()

    from ai_modules.depth.stage import DepthStage
    other = tmp_path / "disc.png"
    Image.new("RGB", (64, 64), (40, 40, 40)).save(other)
    img = Image.open(other).convert("RGB")
    img.paste((200, 20, 20), (20, 20, 44, 44))
    img.save(other)

    def boom(self, inputs, hooks=None):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(DepthStage, "run", boom)
    with pytest.raises(StageFailed, match="stage `depth` failed: RuntimeError: kaboom") as info:
        run(other, small_settings, tmp_path / "b")
    assert isinstance(info.value.__cause__, RuntimeError)
    assert (tmp_path / "b" / "segment" / "done.json").is_file()

    def disk_full(self, inputs, hooks=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(DepthStage, "run", disk_full)
    with pytest.raises(OSError, match="No space left"):                    # environment trouble is not wrapped
        run(other, small_settings, tmp_path / "b")


def test_bad_settings_and_devices_are_rejected(disc_png, tmp_path):
    with pytest.raises(SettingsError, match="pipeline.segment.size"):
        run(disc_png, {"segment": {"size": "big"}}, tmp_path / "a")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="pipeline.device"):
            run(disc_png, {"device": "cuda"}, tmp_path / "b")
