"""Shares that go away mid-job: the inbox sentinel, the outbox itself, the outbox sentinel, a full outbox
and a full work disk. No result is lost, none goes to the bare mount point, no attempt is spent."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.conftest import audit, drop, make_photo, settled

GATED = {"worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"}}


@pytest.fixture
def gate(tmp_path):
    folder = tmp_path / "gate"
    folder.mkdir()
    return folder


def gated_env(gate: Path, after: str = "depth") -> dict[str, str]:
    return {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": after}


@pytest.fixture
def tmpfs():
    """tmpfs(path, size) mounts a small filesystem (root only); returns resize(size). Skips where mount is refused."""
    mounted: list[Path] = []

    def mount(path: Path, size: str):
        path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); a full disk needs one")
        mounted.append(path)

        def resize(new: str) -> None:
            subprocess.run(["mount", "-o", f"remount,size={new}", str(path)], check=True)

        return resize

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def held_at_gate_then_unmounted(daemon, gate: Path, section: str, folder: str, name: str, seed: int):
    """A daemon whose `section.sentinel` file exists in its `folder` until a job, dropped as `name`, reaches
    the gate; then the sentinel goes, as with an unmounted share. Returns the daemon and the sentinel."""
    d = daemon({**GATED, section: {"sentinel": f".glimpsed-{folder}"}}, gated_env(gate), run=False)
    sentinel = getattr(d, folder) / f".glimpsed-{folder}"
    sentinel.touch()
    d.start()
    drop(d.inbox, name, make_photo(seed))
    d.wait_for(lambda: (gate / "reached").exists(), "the job to reach the gate")
    sentinel.unlink()
    return d, sentinel


def test_inbox_sentinel_vanishes_mid_job(daemon, record, gate):
    rec = record("inbox sentinel removed mid-job (share unmounted), a photo dropped meanwhile, sentinel back")
    d, sentinel = held_at_gate_then_unmounted(daemon, gate, "watch", "inbox", "first.jpg", 1)
    drop(d.inbox, "second.jpg", make_photo(2))
    status = d.wait_for(lambda: "paused: sentinel" in (out := d.cli("status").stdout) and out, "status to say", 30)
    (gate / "open").touch()
    d.wait_jobs("done", 1)
    time.sleep(3)
    assert len(d.jobs()) == 1  # nothing is taken from an "unmounted" share
    sentinel.touch()
    d.wait_for(lambda: settled(d, 2) and len(d.jobs("done")) == 2, "the second photo after the share is back")
    d.stop()
    result = audit(d, ["first.jpg", "second.jpg"], expect_in_inbox=(".glimpsed-inbox",))
    rec.audit(result, "intake paused while the sentinel was missing (status said so); the running job finished;"
                      " both published", jobs=2)
    result.assert_clean()
    assert "share looks unmounted" in status and sorted(result.published) == ["first.jpg", "second.jpg"]


def test_outbox_removed_mid_job_is_not_recreated(daemon, record, gate):
    rec = record("outbox removed (rm -rf) mid-job, recreated 5 s later")
    d = daemon(GATED, gated_env(gate))
    drop(d.inbox, "chair.jpg", make_photo(3))
    d.wait_for(lambda: (gate / "reached").exists(), "the job to reach the gate")
    shutil.rmtree(d.outbox)
    (gate / "open").touch()
    status = d.wait_for(lambda: "results wait" in (out := d.cli("status").stdout) and out, "status to say", 60)
    d.wait_for(lambda: [e for j in d.jobs() for e in d.store().events(j.id) if e["event"] == "job_waiting"],
               "the job to wait for the outbox", 60)
    time.sleep(2)
    assert not d.outbox.exists()  # never published into a bare mount point
    d.outbox.mkdir()
    (job,) = d.wait_jobs("done", 1, timeout=120)
    d.stop()
    result = audit(d, ["chair.jpg"])
    rec.audit(result, f"the job waited (status: outbox missing), published once when it came back, attempt"
                      f" {job.attempts}", jobs=1)
    result.assert_clean()
    assert "does not exist" in status and job.attempts == 1 and list(result.published) == ["chair.jpg"]


def test_outbox_sentinel_missing_holds_results(daemon, record, gate):
    rec = record("outbox sentinel removed mid-job (outbox share unmounted), back 5 s later")
    d, sentinel = held_at_gate_then_unmounted(daemon, gate, "outbox", "outbox", "lamp.jpg", 4)
    (gate / "open").touch()
    status = d.wait_for(lambda: "outbox sentinel" in (out := d.cli("status").stdout) and out, "status to say", 60)
    time.sleep(2)
    assert d.published() == [] and d.jobs("failed") == []
    sentinel.touch()
    (job,) = d.wait_jobs("done", 1, timeout=120)
    d.stop()
    result = audit(d, ["lamp.jpg"])
    rec.audit(result, "results held while the sentinel was missing; published once after", jobs=1)
    result.assert_clean()
    assert job.attempts == 1 and "results wait" in status


@pytest.mark.slow
def test_outbox_disk_full(daemon, record, tmpfs, tmp_path):
    rec = record("outbox disk full (a 64 KiB tmpfs), then grown to 64 MiB")
    resize = tmpfs(tmp_path / "outbox", "64k")
    d = daemon()
    drop(d.inbox, "vase.jpg", make_photo(5))
    d.wait_for(lambda: "No space left" in (out := d.cli("show", d.jobs()[0].id).stdout) and out,
               "the job to wait for space", 120)
    assert not d.jobs("failed") and not list(d.outbox.glob(".staging-*"))
    resize("64m")
    (job,) = d.wait_jobs("done", 1, timeout=120)
    d.stop()
    result = audit(d, ["vase.jpg"])
    rec.audit(result, f"the job waited without spending attempts (attempt {job.attempts}); published once the disk"
                      " had room", jobs=1)
    result.assert_clean()
    assert job.attempts == 1 and list(result.published) == ["vase.jpg"]


@pytest.mark.slow
def test_work_disk_full(daemon, record, tmpfs, tmp_path):
    rec = record("work disk full at intake (a 16 KiB tmpfs), then grown to 256 MiB")
    resize = tmpfs(tmp_path / "work", "16k")
    d = daemon()
    drop(d.inbox, "stool.jpg", make_photo(6))
    status = d.wait_for(lambda: "No space left" in (out := d.cli("status").stdout) and out,
                        "status to say the work disk is full", 60)
    assert d.jobs() == [] and (d.inbox / "stool.jpg").exists()  # the photo stays, nothing failed
    resize("256m")
    (job,) = d.wait_jobs("done", 1, timeout=120)
    d.stop()
    result = audit(d, ["stool.jpg"])
    rec.audit(result, "the photo stayed in the inbox (status: cannot copy into work, no space); taken once there was"
                      " room", jobs=1)
    result.assert_clean()
    assert "stool.jpg" in status and list(result.published) == ["stool.jpg"]
