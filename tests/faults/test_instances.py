"""Several processes on one store and outbox: two daemon instances, `submit` and `run --once` beside them,
a killed `submit`, and staging folders that belong to their owner."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from glimpsed.config import load_config
from glimpsed.daemon import prepare
from glimpsed.store import JobStore
from tests.faults.conftest import FAST, audit, drop, make_photo, merge, settled
from tests.integration.conftest import DaemonProcess


def test_two_instances_and_submit_share_a_store(daemon, record, tmp_path):
    rec = record("two daemon instances on one store/outbox, `submit` ×2 and `run --once` beside them, 8 photos")
    first = daemon()
    second = daemon(root=tmp_path)
    status = first.wait_for(lambda: (out := first.cli("status").stdout).count("running (pid") == 2 and out,
                            "status to show both instances", 30)
    names = [f"p{i}.jpg" for i in range(6)]
    for i, name in enumerate(names):
        drop(first.inbox, name, make_photo(30 + i))
    outside = [tmp_path / f"s{i}.jpg" for i in range(2)]
    for i, path in enumerate(outside):
        path.write_bytes(make_photo(40 + i))
    submitted = first.cli("submit", *map(str, outside))
    once = first.cli("run", "--once", check=False)  # takes nothing the daemons hold, deletes no staging folder
    first.wait_for(lambda: settled(first, len(names) + len(outside)), "every photo", 300)
    first.stop()
    second.stop()
    result = audit(first, names + [p.name for p in outside])
    owners = {j.lease_owner for j in first.jobs()}  # cleared when done; the events say who ran each
    runners = {e["message"].rsplit(" by ", 1)[1] for j in first.jobs() for e in first.store().events(j.id)
               if e["event"] == "job_claimed"}
    rec.audit(result, f"each photo claimed and published once; {len(runners)} processes ran jobs; `status` listed"
                      " both instances", jobs=len(first.jobs()))
    result.assert_clean()
    assert submitted.returncode == 0 and len(submitted.stdout.split()) == 2, submitted.stderr
    assert once.returncode == 0, once.stderr
    assert sorted(result.published) == sorted(names + [p.name for p in outside])
    assert owners == {None} and len(runners) >= 2 and "running (pid" in status
    assert all(j.attempts == 1 for j in first.jobs())


def test_prepare_keeps_a_live_owners_staging(tmp_path):
    """`submit`, `run --once` or a second instance starting up must not delete a running job's staging folder."""
    for name in ("inbox", "outbox"):
        (tmp_path / name).mkdir()
    config = load_config(None, env={}, overrides={"paths.root": str(tmp_path)})
    store = JobStore(config.path("db"))
    live = store.enqueue(source_path=str(tmp_path / "inbox" / "a.jpg"), source_name="a.jpg", sha256="a" * 64, size=1,
                         pipeline_version="v", config_hash="h", max_attempts=3)
    dead = store.enqueue(source_path=str(tmp_path / "inbox" / "b.jpg"), source_name="b.jpg", sha256="b" * 64, size=1,
                         pipeline_version="v", config_hash="h", max_attempts=3)
    store.claim(f"{socket.gethostname()}:{os.getpid()}", 60, job_id=live.id)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    store.claim(f"{socket.gethostname()}:{child.pid}", 60, job_id=dead.id)
    for job in (live, dead):
        (config.path("outbox") / f".staging-{job.id}").mkdir()
    (config.path("outbox") / ".staging-unknown").mkdir()
    prepare(config).close()
    left = sorted(p.name for p in config.path("outbox").glob(".staging-*"))
    assert left == [f".staging-{live.id}"]
    assert store.get(dead.id).state == "queued" and store.get(live.id).state == "running"


def test_killed_submit_does_not_block_its_file(tmp_path, record):
    """A `submit` stopped mid-job leaves its job behind; the next `submit` of that file takes it over and
    finishes it — with no inbox folder at all, which `submit` never reads."""
    rec = record("`submit` killed mid-job (SIGKILL), submitted again; no inbox folder exists")
    gate = tmp_path / "gate"
    gate.mkdir()
    d = DaemonProcess(tmp_path, merge(FAST, {"worker": {"pipeline": "tests.integration.gated_pipeline:GatedPipeline"}}),
                      {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "segment"})
    d.inbox.rmdir()
    photo = tmp_path / "mug.jpg"
    photo.write_bytes(make_photo(50))
    cmd = [sys.executable, "-m", "glimpsed", "submit", str(photo), "--config", str(d.config_path)]
    first = subprocess.Popen(cmd, env=d.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (gate / "reached").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (gate / "reached").exists(), first.communicate(timeout=5)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    (gate / "open").touch()
    again = subprocess.run(cmd, env=d.env, capture_output=True, text=True, timeout=300)
    jobs = d.jobs()
    rec.set(jobs=len(jobs), kills=1, files=1, lost=0 if again.returncode == 0 else 1,
            duplicated=max(0, len([j for j in jobs if j.state == "done"]) - 1),
            outcome="the second submit took the job over at once (resumed after segment) and printed its folder")
    assert again.returncode == 0, again.stderr
    assert not d.inbox.exists()
    (job,) = jobs
    assert job.state == "done" and again.stdout.strip() == job.output_dir and job.attempts == 2
    events = [e["event"] for e in d.store().events(job.id)]
    assert "job_requeued" in events  # the dead submit's job was recovered, not a new one made
    assert photo.exists()  # submit never moves the file


@pytest.mark.parametrize("command", ["status", "jobs"])
def test_status_lists_what_intake_ignores_and_why(daemon, command):
    d = daemon()
    (d.inbox / "anim.gif").write_bytes(b"GIF89a" + b"\0" * 64)
    (d.inbox / "folder.jpg").mkdir()
    os.mkfifo(d.inbox / "pipe.jpg")
    os.symlink("/etc/passwd", d.inbox / "link.jpg")
    out = d.wait_for(lambda: (o := d.cli(command).stdout).count("ignored ") >= 4 and o, "the ignored list", 30)
    for name, why in (("anim.gif", "not an accepted image type"), ("folder.jpg", "a folder"),
                      ("pipe.jpg", "not a regular file"), ("link.jpg", "symbolic link")):
        line = next(line for line in out.splitlines() if name in line)
        assert why in line, line
    assert d.jobs() == []
