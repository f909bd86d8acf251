"""The daemon with SyncDreamer's files in `paths.models`: its views are what the job is built from, and the
manifest says so, with the checkpoint's sha256. A tiny random-weight checkpoint (with its sizes beside it) stands in for the real one."""

from __future__ import annotations

import hashlib
import json

from tests.tiny_models import write_tiny_syncdreamer

from .test_daemon import drop


def test_the_daemon_uses_syncdreamer_when_its_checkpoint_is_present(start_daemon, photo, tmp_path):
    models = tmp_path / "models"
    checkpoint = write_tiny_syncdreamer(models)
    d = start_daemon({"paths": {"models": str(models)},
                      "pipeline": {"multiview": {"steps": 2}, "reconstruct": {"iterations": 10, "size": 64}}})
    drop(d.inbox, "vase.jpg", photo(3))
    d.wait_jobs("done", 1, timeout=240)
    manifest = json.loads((d.outbox / "vase" / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["multiview"]["backend"] == "syncdreamer"
    assert str(models / "syncdreamer") in stages["multiview"]["reason"]
    assert stages["multiview"]["model_files"][0]["path"] == str(checkpoint)
    assert stages["depth"]["backend"] == "inflation"                     # no DPT files: the embedded one, and why
    assert "dpt weights not found" in stages["depth"]["reason"]
    assert stages["reconstruct"]["metrics"]["initial_from"] == "visible hull"
    # the result's identity: the effective settings and every model file, by content
    assert manifest["settings"]["multiview"]["steps"] == 2 and manifest["settings"]["segment"]["size"] == 128
    (model,) = manifest["models"]
    assert model["stage"] == "multiview" and model["name"] == "syncdreamer-pretrain"
    assert model["sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert model["bytes"] == checkpoint.stat().st_size


def test_the_daemon_builds_through_trellis_when_its_files_are_present(start_daemon, photo, tmp_path):
    """TRELLIS's hub layout and DINOv2's file (a tiny random-weight stand-in): `auto` takes it over the relief, the
    job is published, and the manifest names the backend, both model files and the photo's found camera."""
    from tests.tiny_models import write_tiny_trellis

    models = tmp_path / "models"
    folder = write_tiny_trellis(models)
    d = start_daemon({"paths": {"models": str(models)},
                      "pipeline": {"reconstruct": {"iterations": 10, "size": 64},
                                   "export": {"formats": ["ply", "splat", "preview"]}}})
    drop(d.inbox, "vase.jpg", photo(3))
    d.wait_jobs("done", 1, timeout=240)
    manifest = json.loads((d.outbox / "vase" / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["multiview"]["backend"] == "trellis" and str(models / "trellis") in stages["multiview"]["reason"]
    assert stages["multiview"]["metrics"]["voxels"] > 0 and "photo_azimuth" in stages["multiview"]["metrics"]
    assert stages["depth"]["backend"] == "none" and stages["reconstruct"]["metrics"]["initial_from"] == \
        "multiview object"
    names = {m["name"]: m for m in manifest["models"]}
    assert set(names) == {"trellis-image-large", "dinov2-vitl14-reg"}
    assert all(m["stage"] == "multiview" for m in names.values())
    pipeline_json = next(m for m in manifest["models"] if m["path"] == str(folder / "pipeline.json"))
    assert pipeline_json["sha256"] == hashlib.sha256((folder / "pipeline.json").read_bytes()).hexdigest()
    assert sorted(p.name for p in (d.outbox / "vase").iterdir()) == ["manifest.json", "preview.png", "vase.ply",
                                                                      "vase.splat"]
