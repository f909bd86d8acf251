"""kill -9 at every stage boundary and inside every stage, a worker killed by the OOM killer on every attempt,
and a zombie worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ai_modules.pipeline import STAGES
from glimpsed.daemon import pid_alive
from tests.faults.conftest import audit, drop, make_photo, settled
from tests.faults.crash_pipeline import OOM_MARK

PHOTOS = 4  # b, r, b, s, b, r: three boundary kills each end a photo's stage, the fourth photo takes the last kill
CRASH = {"worker": {"pipeline": "tests.faults.crash_pipeline:CrashPipeline"}}


@pytest.mark.slow
@pytest.mark.parametrize("stage", STAGES)
def test_kill_9_at_boundaries_and_inside_a_stage(daemon, record, tmp_path, stage):
    """Three kills at the stage's end (a boundary) and three inside it (computing, and half-saved):
    every photo is still published exactly once, every later start resumes, no staging folder is left."""
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    plan = [f"{stage}:{point}" for point in ("boundary", "run", "boundary", "save", "boundary", "run")]
    (plan_dir / "plan.json").write_text(json.dumps(plan))
    rec = record(f"kill -9 (whole daemon) 3× after and 3× inside `{stage}`")
    env = {"GLIMPSED_FAULT_PLAN": str(plan_dir)}
    names = [f"{stage}-{i}.jpg" for i in range(PHOTOS)]
    d = daemon(CRASH, env, run=False)
    for i, name in enumerate(names):
        drop(d.inbox, name, make_photo(i))
    starts = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        d.start()
        starts += 1
        while d.alive() and not settled(d, PHOTOS):
            time.sleep(0.1)
        if settled(d, PHOTOS):
            break
        d.proc.wait(10)  # killed by the plan: start again, as systemd would
    d.stop()
    kills = (plan_dir / "kills.log").read_text().split()[::2]
    result = audit(d, names)
    rec.audit(result, f"{len(result.published)} published once each after {starts} starts", jobs=PHOTOS,
              kills=len(kills))
    assert kills == plan
    result.assert_clean()
    assert sorted(result.published) == sorted(names) and not result.failed
    assert not list(d.outbox.glob(".staging-*")) and result.left_in_inbox == []
    jobs = d.jobs()
    assert all(j.state == "done" for j in jobs) and len(jobs) == PHOTOS
    assert max(j.attempts for j in jobs) <= 3


@pytest.mark.slow
def test_photo_that_kills_its_worker_every_time_ends_in_failed(daemon, record, tmp_path):
    """A photo whose worker is killed on every attempt (the OOM killer): after jobs.max_attempts it is failed
    as WorkerLost, its original goes to failed/ with error.json, and it is not taken in again."""
    plan_dir = tmp_path / "plan"
    plan_dir.mkdir()
    rec = record("worker killed (OOM killer) on every attempt of one photo, beside a good one")
    d = daemon({"worker": {"pipeline": "tests.faults.crash_pipeline:OomPipeline"}, "jobs": {"max_attempts": 2}},
               {"GLIMPSED_FAULT_PLAN": str(plan_dir)})
    drop(d.inbox, "hog.jpg", make_photo(1) + OOM_MARK)
    drop(d.inbox, "fine.jpg", make_photo(2))
    d.wait_for(lambda: settled(d, 2) and (d.root / "failed" / "hog.jpg.error.json").exists(), "both jobs to end", 180)
    time.sleep(3)  # a few rescans: the failed photo must not come back as a new job
    d.stop()
    kills = (plan_dir / "kills.log").read_text().split()[::2]
    result = audit(d, ["hog.jpg", "fine.jpg"])
    rec.audit(result, "hog.jpg failed (WorkerLost) with error.json after 2 attempts; fine.jpg published",
              jobs=len(d.jobs()), kills=len(kills))
    result.assert_clean()
    (hog,) = [j for j in d.jobs() if j.source_name == "hog.jpg"]
    assert hog.state == "failed" and hog.error_type == "WorkerLost" and len(kills) == 2
    error = json.loads((d.root / "failed" / "hog.jpg.error.json").read_text())
    assert error["error_type"] == "WorkerLost" and "out of memory" in error["hint"]
    assert len(d.jobs()) == 2 and list(result.published) == ["fine.jpg"]


def test_a_zombie_is_not_alive():
    """A worker that died but was not reaped yet must not hold its job until the lease expires."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{child.pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                break
        time.sleep(0.01)
    try:
        assert os.kill(child.pid, 0) is None  # the signal test alone says "alive"
        assert not pid_alive(child.pid)
        assert pid_alive(os.getpid())
    finally:
        child.wait()
