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

    return build, settle, tmp_path


def test_stable_file_is_queued_with_its_copy(make):
    build, settle, root = make
    intake, store = build()
    (root / "inbox" / "mug.png").write_bytes(png())
    (taken,) = settle(intake)
    assert taken.outcome == "queued"
    assert (root / "work" / taken.job.id / "input" / "image.png").exists()
    assert (root / "inbox" / "mug.png").exists()  # the original stays until the result is published
    assert settle(intake) == []  # queued: the rescan does not take it again


def test_duplicate_is_skipped_and_archived(make):
    build, settle, root = make
    intake, store = build()
    (root / "inbox" / "a.png").write_bytes(png())
    (first,) = settle(intake)
    (root / "inbox" / "b.png").write_bytes(png())
    (dup,) = settle(intake)
    assert dup.outcome == "skipped" and dup.job.duplicate_of == first.job.id
    assert not (root / "inbox" / "b.png").exists() and list((root / "archive").rglob("b.png"))
    assert not (root / "work" / dup.job.id).exists()


def test_reprocess_duplicates_when_configured(make):
    build, settle, root = make
    intake, store = build(**{"jobs.on_duplicate": "reprocess"})
    (root / "inbox" / "a.png").write_bytes(png())
    (root / "inbox" / "b.png").write_bytes(png())
    outcomes = sorted(t.outcome for t in settle(intake))
    assert outcomes == ["queued", "queued"]


def test_rejected_file_goes_to_failed_with_error_json(make):
    build, settle, root = make
    intake, store = build()
    (root / "inbox" / "fake.jpg").write_bytes(b"hello, I am text")
    (taken,) = settle(intake)
    assert taken.outcome == "rejected" and taken.job.state == "failed"
    error = json.loads((root / "failed" / "fake.jpg.error.json").read_text())
    assert error["error_type"] == "RejectedFile" and "not an image" in error["message"]
    assert not (root / "inbox" / "fake.jpg").exists()


def test_missing_sentinel_pauses_and_resumes(make):
    build, settle, root = make
    intake, store = build(**{"watch.sentinel": ".glimpsed-inbox"})
    (root / "inbox" / "a.png").write_bytes(png())
    assert settle(intake) == [] and "sentinel" in intake.paused_reason
    (root / "inbox" / ".glimpsed-inbox").touch()
    (taken,) = settle(intake)
    assert taken.outcome == "queued" and intake.paused_reason == ""


def test_one_failing_file_does_not_stop_intake(make, monkeypatch):
    build, settle, root = make
    intake, store = build()
    real = glimpsed.intake.ingest

    def flaky(src, dest, limits):
        if src.name == "bad.png":
            raise RuntimeError("surprise")
        return real(src, dest, limits)

    monkeypatch.setattr(glimpsed.intake, "ingest", flaky)
    (root / "inbox" / "bad.png").write_bytes(png((1, 2, 3)))
    (root / "inbox" / "good.png").write_bytes(png())
    (taken,) = settle(intake)
    assert taken.job.source_name == "good.png"


def test_subfolders_become_tags(make):
    build, settle, root = make
    intake, store = build(**{"watch.recursive": "true"})
    (root / "inbox" / "shop" / "chairs").mkdir(parents=True)
    (root / "inbox" / "shop" / "chairs" / "c.png").write_bytes(png())
    (taken,) = settle(intake)
    assert taken.job.rel_dir == "shop/chairs" and taken.job.tag_list == ["shop", "chairs"]
