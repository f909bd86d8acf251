"""End to end: photos dropped into a real inbox, the daemon as a real subprocess, real SQLite."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time

import pytest


def drop(inbox, name, data):
    (inbox / name).write_bytes(data)


@pytest.mark.parametrize("mode", ["native", "polling"])
def test_copy_into_inbox_publishes_a_result(start_daemon, photo, mode):
    d = start_daemon({"watch": {"mode": mode}})
    data = photo(1)
    drop(d.inbox, "chair.jpg", data)
    (job,) = d.wait_jobs("done", 1)
    folder = d.outbox / "chair"
    assert job.output_dir == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["chair.glb", "chair.ply", "chair.splat", "manifest.json",
                                                        "preview.png", "turntable.webp"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job_id"] == job.id
    assert manifest["source"] == {"name": "chair.jpg", "sha256": hashlib.sha256(data).hexdigest(),
                                  "bytes": len(data), "subfolder": ""}
    assert [s["name"] for s in manifest["stages"]] == ["segment", "multiview", "depth", "reconstruct", "enhance", "refine", "export"]
    assert all(s["backend"] and s["duration_s"] >= 0 for s in manifest["stages"])
    for entry in manifest["outputs"].values():
        blob = (folder / entry["file"]).read_bytes()
        assert entry["bytes"] == len(blob) and entry["sha256"] == hashlib.sha256(blob).hexdigest()
    assert not (d.inbox / "chair.jpg").exists()
    assert len(list((d.root / "archive").rglob("chair.jpg"))) == 1
    status = d.cli("status").stdout
    assert f"watching by {mode}" in status and "1 done" in status


def test_refine_mvcrm_runs_in_the_daemon_and_the_manifest_says_what_its_gates_did(start_daemon, photo):
    d = start_daemon({"pipeline": {"enhance": {"backend": "classical", "size": 64},
                                   "refine": {"backend": "mvcrm", "rounds": 2}}})
    drop(d.inbox, "vase.jpg", photo(3))
    d.wait_jobs("done", 1)
    manifest = json.loads((d.outbox / "vase" / "manifest.json").read_text())
    stages = {s["name"]: s for s in manifest["stages"]}
    assert stages["enhance"]["backend"] == "classical" and stages["refine"]["backend"] == "mvcrm"
    gates = stages["refine"]["metrics"]["gates"]
    assert gates["multiview"]["on"] and not gates["features"]["on"] and "models pull dinov2" in gates["features"]["why"]
    assert manifest["settings"]["refine"]["rounds"] == 2


def test_slow_chunked_write_is_not_taken_early(start_daemon, photo):
    d = start_daemon({"watch": {"stability_seconds": 1.5}})
    data = photo(2)
    with open(d.inbox / "slow.jpg", "wb") as fh:
        for i in range(0, len(data), len(data) // 4 + 1):
            fh.write(data[i:i + len(data) // 4 + 1])
            fh.flush()
            time.sleep(0.5)
    (job,) = d.wait_jobs("done", 1)
    assert job.sha256 == hashlib.sha256(data).hexdigest()
    assert d.jobs("failed") == []


def test_rename_into_place_and_junk_is_ignored(start_daemon, photo):
    d = start_daemon({"watch": {"mode": "polling"}})
    junk = [".DS_Store", "Thumbs.db", "desktop.ini", "._lamp.jpg", "lamp.jpg.part", "lamp.jpg.crdownload",
            "~$lamp.jpg", ".syncthing.lamp.jpg.tmp", "~syncthing~lamp.jpg.tmp", "lamp.jpg.partial", "notes.txt"]
    for name in junk:
        drop(d.inbox, name, photo(3))
    (d.inbox / "@eaDir").mkdir()
    drop(d.inbox / "@eaDir", "lamp.jpg", photo(3))
    drop(d.inbox, ".lamp.jpg.XyZ123", photo(4))  # rsync's temp name, then renamed into place
    os.rename(d.inbox / ".lamp.jpg.XyZ123", d.inbox / "lamp.jpg")
    (job,) = d.wait_jobs("done", 1)
    assert job.source_name == "lamp.jpg"
    time.sleep(2.5)  # one more rescan, to be sure the junk stays untouched
    assert len(d.jobs()) == 1
    assert sorted(p.name for p in d.inbox.iterdir() if p.is_file()) == sorted(junk)


def test_files_dropped_while_stopped_are_found_at_start(start_daemon, photo):
    d = start_daemon(run=False)
    drop(d.inbox, "early.jpg", photo(5))
    d.start()
    (job,) = d.wait_jobs("done", 1)
    assert job.source_name == "early.jpg"


def test_missing_sentinel_pauses_intake(start_daemon, photo):
    d = start_daemon({"watch": {"sentinel": ".glimpsed-inbox"}})
    drop(d.inbox, "vase.jpg", photo(6))
    d.wait_for(lambda: "sentinel" in d.cli("status").stdout, "status to report the missing sentinel", 20)
    assert "looks unmounted" in d.cli("status").stdout or "unmounted" in d.cli("status").stdout
    assert d.jobs() == []
    (d.inbox / ".glimpsed-inbox").touch()
    (job,) = d.wait_jobs("done", 1)
    assert job.source_name == "vase.jpg"


def test_bad_files_go_to_failed_and_the_daemon_goes_on(start_daemon, photo):
    # cut-off files wait watch.incomplete_seconds unchanged (a writer may still be at work), then fail
    d = start_daemon({"ingest": {"max_bytes": 2_000_000}, "watch": {"incomplete_seconds": 2.0}})
    good = photo(7)
    drop(d.inbox, "empty.jpg", b"")
    drop(d.inbox, "truncated.jpg", good[: len(good) // 3])
    drop(d.inbox, "letter.jpg", b"%PDF-1.7 this is a document, not a photo" * 10)
    drop(d.inbox, "huge.png", os.urandom(2_100_000))
    d.wait_jobs("failed", 4)
    failed = d.root / "failed"
    for name in ("empty.jpg", "truncated.jpg", "letter.jpg", "huge.png"):
        assert (failed / name).exists(), name
        error = json.loads((failed / f"{name}.error.json").read_text())
        assert error["error_type"] == "RejectedFile" and error["message"] and error["hint"], error
    assert d.alive()
    drop(d.inbox, "fine.jpg", good)
    (job,) = d.wait_jobs("done", 1)
    assert job.source_name == "fine.jpg"


def test_the_same_image_twice_is_computed_once(start_daemon, photo):
    d = start_daemon()
    data = photo(8)
    drop(d.inbox, "mug.jpg", data)
    (first,) = d.wait_jobs("done", 1)
    drop(d.inbox, "mug-copy.jpg", data)
    (dup,) = d.wait_jobs("skipped", 1)
    assert dup.duplicate_of == first.id and dup.output_dir == first.output_dir
    assert len(d.published()) == 1
    assert "duplicate_skipped" in [e["event"] for e in d.store().events(first.id)]


def test_kill_9_mid_job_then_restart_finishes_once(start_daemon, photo, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "depth"}
    pipeline = {"worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"}}
    d = start_daemon(pipeline, env)
    seen_incomplete = []
    watching = threading.Event()

    def watch_outbox() -> None:  # readers must never see half a result
        while not watching.is_set():
            for entry in d.outbox.iterdir() if d.outbox.exists() else []:
                if not entry.name.startswith(".") and not (entry / "manifest.json").exists():
                    seen_incomplete.append(entry.name)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_outbox)
    watcher.start()
    try:
        drop(d.inbox, "robot.jpg", photo(9))
        d.wait_for(lambda: (gate / "reached").exists(), "the job to reach the gate")
        d.kill_group()
        assert d.jobs("running")  # the crash left it running with a lease
        (gate / "open").touch()
        d2 = start_daemon(pipeline, env)
        (job,) = d2.wait_jobs("done", 1)
    finally:
        watching.set()
        watcher.join()
    assert seen_incomplete == []
    assert len(d2.published()) == 1 and not list(d.outbox.glob(".staging-*"))
    runs = [line.split()[0] for line in (gate / "stages.log").read_text().splitlines()]
    assert runs == ["segment", "multiview", "depth", "reconstruct", "enhance", "refine", "export"]  # nothing ran twice
    manifest = json.loads((d.outbox / "robot" / "manifest.json").read_text())
    assert {s["name"]: s["resumed"] for s in manifest["stages"]} == {
        "segment": True, "multiview": True, "depth": True, "reconstruct": False, "enhance": False, "refine": False,
        "export": False}
    assert "job_requeued" in [e["event"] for e in d2.store().events(job.id)]


@pytest.mark.parametrize("target", ["daemon", "process group"])
def test_sigterm_checkpoints_and_exits_cleanly(start_daemon, photo, tmp_path, target):
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "segment"}
    pipeline = {"worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"}}
    d = start_daemon(pipeline, env)
    drop(d.inbox, "teapot.jpg", photo(10))
    d.wait_for(lambda: (gate / "reached").exists(), "the job to reach the gate")
    if target == "process group":  # as `kill -TERM -PGID` or a terminal's job control would
        os.killpg(d.proc.pid, signal.SIGTERM)
        assert d.proc.wait(60) == 0
    else:
        assert d.stop(60) == 0
    (job,) = d.jobs()
    assert job.state == "queued" and job.attempts == 0
    assert "job_interrupted" in [e["event"] for e in d.store().events(job.id)]
    (gate / "open").touch()
    d2 = start_daemon(pipeline, env)
    (done,) = d2.wait_jobs("done", 1)
    stages = {s["name"]: s["resumed"] for s in json.loads(done.result)["stages"]}
    assert stages["segment"] is True and stages["depth"] is False


def test_cancel_a_running_job(start_daemon, photo, tmp_path):
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "segment"}
    d = start_daemon({"worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"}}, env)
    drop(d.inbox, "clock.jpg", photo(11))
    d.wait_for(lambda: (gate / "reached").exists(), "the job to reach the gate")
    (job,) = d.jobs("running")
    assert "will stop" in d.cli("cancel", job.id).stdout
    d.wait_jobs("cancelled", 1, timeout=30)  # the gate stays shut: only the cancel can end the wait
    (gate / "open").touch()
    assert (d.root / "failed" / "clock.jpg").exists() and d.published() == []
    assert "queued again" in d.cli("retry", job.id).stdout
    (done,) = d.wait_jobs("done", 1)
    assert done.id == job.id


def test_recursive_watch_mirrors_subfolders_and_keep_leaves_originals(start_daemon, photo):
    d = start_daemon({"watch": {"recursive": True, "rescan_interval": 0.5}, "outbox": {"after_success": "keep"}})
    (d.inbox / "kitchen" / "2026").mkdir(parents=True)
    drop(d.inbox / "kitchen" / "2026", "kettle.jpg", photo(12))
    (job,) = d.wait_jobs("done", 1)
    folder = d.outbox / "kitchen" / "2026" / "kettle"
    assert job.output_dir == str(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["tags"] == ["kitchen", "2026"] and manifest["source"]["subfolder"] == "kitchen/2026"
    assert (d.inbox / "kitchen" / "2026" / "kettle.jpg").exists()  # after_success: keep
    time.sleep(2.0)  # several rescans see the kept original again
    assert len(d.jobs()) == 1
