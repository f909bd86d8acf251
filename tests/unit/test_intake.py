"""Intake with a real store and real files; the clock is injected, so no sleeps."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

import glimpsed.intake
from glimpsed.config import load_config
from glimpsed.intake import Intake
from glimpsed.store import JobStore


def png(color=(200, 80, 40), size=(96, 80)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def make(tmp_path):
    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir()
    clock = [0.0]

    def build(**overrides):
        cfg = load_config(None, env={}, overrides={"paths.root": str(tmp_path), "watch.stability_seconds": "2",
                                                   **overrides})
        store = JobStore(cfg.path("db"))
        return Intake(cfg, store, "v1", clock=lambda: clock[0]), store

    def settle(intake):
        intake.rescan()  # no watcher here: nominate the inbox's files as the timer would
        out = intake.poll()
        clock[0] += 3
        return [t for t in out + intake.poll() if t.outcome != "known"]

    return build, settle, tmp_path, clock


def test_stable_file_is_queued_with_its_copy(make):
    build, settle, root, _ = make
    intake, store = build()
    (root / "inbox" / "mug.png").write_bytes(png())
    (taken,) = settle(intake)
    assert taken.outcome == "queued"
    assert (root / "work" / taken.job.id / "input" / "image.png").exists()
    assert (root / "inbox" / "mug.png").exists()  # the original stays until the result is published
    assert settle(intake) == []  # queued: the rescan does not take it again


def test_duplicate_is_skipped_and_archived(make):
    build, settle, root, clock = make
    intake, store = build()
    (root / "inbox" / "a.png").write_bytes(png())
    (first,) = settle(intake)
    (root / "inbox" / "b.png").write_bytes(png())
    (waiting,) = settle(intake)  # the first job is only queued: if it failed, b.png would have to run
    assert waiting.outcome == "waiting" and first.job.id in waiting.message
    assert intake.summary()["files"][0]["state"] == "duplicate"
    store.claim("w:1", 60, job_id=first.job.id)
    store.finish(first.job.id, "w:1", str(root / "outbox" / "a"), {})
    clock[0] += 11
    (dup,) = settle(intake)
    assert dup.outcome == "skipped" and dup.job.duplicate_of == first.job.id
    assert not (root / "inbox" / "b.png").exists() and list((root / "archive").rglob("b.png"))
    assert not (root / "work" / dup.job.id).exists()


def test_reprocess_duplicates_when_configured(make):
    build, settle, root, _ = make
    intake, store = build(**{"jobs.on_duplicate": "reprocess"})
    (root / "inbox" / "a.png").write_bytes(png())
    (root / "inbox" / "b.png").write_bytes(png())
    outcomes = sorted(t.outcome for t in settle(intake))
    assert outcomes == ["queued", "queued"]


def test_rejected_file_goes_to_failed_with_error_json(make):
    build, settle, root, _ = make
    intake, store = build()
    (root / "inbox" / "fake.jpg").write_bytes(b"hello, I am text")
    (taken,) = settle(intake)
    assert taken.outcome == "rejected" and taken.job.state == "failed"
    error = json.loads((root / "failed" / "fake.jpg.error.json").read_text())
    assert error["error_type"] == "RejectedFile" and "not an image" in error["message"]
    assert not (root / "inbox" / "fake.jpg").exists()


def test_missing_sentinel_pauses_and_resumes(make):
    build, settle, root, _ = make
    intake, store = build(**{"watch.sentinel": ".glimpsed-inbox"})
    (root / "inbox" / "a.png").write_bytes(png())
    assert settle(intake) == [] and "sentinel" in intake.paused_reason
    (root / "inbox" / ".glimpsed-inbox").touch()
    (taken,) = settle(intake)
    assert taken.outcome == "queued" and intake.paused_reason == ""


def test_one_failing_file_does_not_stop_intake(make, monkeypatch):
    build, settle, root, clock = make
    intake, store = build()
    real = glimpsed.intake.ingest

    def flaky(src, dest, limits):
        if src.name == "bad.png":
            raise RuntimeError("surprise")
        return real(src, dest, limits)

    monkeypatch.setattr(glimpsed.intake, "ingest", flaky)
    (root / "inbox" / "bad.png").write_bytes(png((1, 2, 3)))
    (root / "inbox" / "good.png").write_bytes(png())
    taken = settle(intake)
    assert [t.job.source_name for t in taken if t.outcome == "queued"] == ["good.png"]
    assert [t.outcome for t in taken if t.job is None or t.job.source_name != "good.png"] == ["retry"]
    assert (root / "inbox" / "bad.png").exists()  # tried again, listed in the summary meanwhile
    assert intake.summary()["files"][0]["state"] == "error"
    for _ in range(3):
        clock[0] += 10
        taken += settle(intake)
    (rejected,) = [t for t in taken if t.outcome == "rejected"]
    assert rejected.job.error_type == "IntakeError" and "surprise" in rejected.job.error_message
    assert (root / "failed" / "bad.png.error.json").exists() and not (root / "inbox" / "bad.png").exists()


def test_subfolders_become_tags(make):
    build, settle, root, _ = make
    intake, store = build(**{"watch.recursive": "true"})
    (root / "inbox" / "shop" / "chairs").mkdir(parents=True)
    (root / "inbox" / "shop" / "chairs" / "c.png").write_bytes(png())
    (taken,) = settle(intake)
    assert taken.job.rel_dir == "shop/chairs" and taken.job.tag_list == ["shop", "chairs"]


def test_a_cut_off_file_waits_for_its_writer(make):
    """A file that looks truncated is judged only after watch.incomplete_seconds without change; if it
    grows meanwhile it is taken whole."""
    build, settle, root, clock = make
    intake, store = build(**{"watch.incomplete_seconds": "30"})
    whole = png(size=(320, 240))
    path = root / "inbox" / "slow.png"
    path.write_bytes(whole[: len(whole) // 2])
    (waiting,) = settle(intake)
    assert waiting.outcome == "waiting" and "looks incomplete" in waiting.message
    assert intake.summary()["files"][0]["state"] == "incomplete"
    path.write_bytes(whole)  # the writer finishes: taken at once, not failed
    intake.tracker.track(path)
    clock[0] += 5
    (taken,) = settle(intake)
    assert taken.outcome == "queued" and taken.job.bytes == len(whole)
    assert intake.summary()["waiting"] == 0


def test_a_cut_off_file_that_stays_cut_off_fails_after_the_wait(make):
    build, settle, root, clock = make
    intake, store = build(**{"watch.incomplete_seconds": "30"})
    whole = png(size=(320, 240))
    (root / "inbox" / "cut.png").write_bytes(whole[: len(whole) // 2])
    outcomes = []
    for _ in range(12):
        outcomes += [t.outcome for t in settle(intake)]
        clock[0] += 3
    assert outcomes[0] == "waiting" and outcomes[-1] == "rejected" and outcomes.count("rejected") == 1
    assert (root / "failed" / "cut.png.error.json").exists()
    assert len([o for o in outcomes if o == "waiting"]) < 8  # looks again at growing intervals, not every tick


def test_a_backlog_is_taken_in_slices(make):
    build, settle, root, clock = make
    intake, store = build()
    for i in range(5):
        (root / "inbox" / f"{i}.png").write_bytes(png((i, 80, 40)))
    intake.rescan()
    intake.poll()
    clock[0] += 3
    assert intake.poll(budget=0.0) == [] and intake.backlog == 5  # stable, waiting for their turn
    assert len(intake.poll()) == 5 and intake.backlog == 0


def test_ignored_entries_are_listed_with_the_reason(make):
    build, settle, root, clock = make
    intake, store = build()
    (root / "inbox" / "anim.gif").write_bytes(b"GIF89a")
    (root / "inbox" / "x.jpg").mkdir()
    (root / "inbox" / ".hidden.jpg").write_bytes(b"x")
    intake.rescan()
    files = {f["path"]: f["reason"] for f in intake.summary()["files"]}
    assert set(files) == {"anim.gif", "x.jpg"} and "not an accepted image type" in files["anim.gif"]
    (root / "inbox" / "anim.gif").unlink()
    assert [f["path"] for f in intake.summary()["files"]] == ["x.jpg"]


def test_a_waiting_file_removed_by_its_owner_leaves_the_listing(make):
    build, settle, root, clock = make
    intake, store = build()
    (root / "inbox" / "cut.png").write_bytes(png(size=(320, 240))[:200])
    assert [t.outcome for t in settle(intake)] == ["waiting"]
    (root / "inbox" / "cut.png").unlink()
    assert intake.summary()["waiting"] == 0 and intake.summary()["files"] == []


def test_a_redropped_photo_runs_again_after_a_settings_change_or_a_new_model(make):
    from tests.tiny_models import write_tiny_syncdreamer

    build, settle, root, clock = make

    def done(taken):  # noqa: ANN001
        store.claim("w:1", 60, job_id=taken.job.id)
        store.finish(taken.job.id, "w:1", str(root / "outbox" / taken.job.id), {})
        clock[0] += 11

    intake, store = build()
    (root / "inbox" / "a.png").write_bytes(png())
    (first,) = settle(intake)
    done(first)
    intake, store = build(**{"pipeline.segment.size": "256"})    # the default, spelled as the environment does
    (root / "inbox" / "b.png").write_bytes(png())
    (same,) = settle(intake)
    assert same.outcome == "skipped" and same.job.config_hash == first.job.config_hash
    intake, store = build(**{"pipeline.segment.size": "320"})
    (root / "inbox" / "c.png").write_bytes(png())
    (changed,) = settle(intake)
    assert changed.outcome == "queued" and changed.job.config_hash != first.job.config_hash
    done(changed)
    write_tiny_syncdreamer(root / "models")                       # a newly pulled model changes the result
    intake, store = build(**{"pipeline.segment.size": "320"})
    (root / "inbox" / "d.png").write_bytes(png())
    (pulled,) = settle(intake)
    assert pulled.outcome == "queued" and pulled.job.config_hash == changed.job.config_hash
