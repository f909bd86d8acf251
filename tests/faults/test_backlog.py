"""A 10,000-file drop, and the SQLite store locked by another process for 30 s."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

from tests.faults.conftest import audit, drop, make_photo, settled

FAST_PIPELINE = {"worker": {"pipeline": "tests.faults.fast_pipeline:FastPipeline"}}


def unique_png(i: int) -> bytes:
    """A 64x64 PNG whose pixels spell `i`, so no two files are duplicates."""
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def heartbeat_age(d) -> float | None:
    store = d.store()
    try:
        state = store.daemon_state()
        return None if state is None else time.time() - state["heartbeat_at"]
    finally:
        store.close()


def job_count(d) -> int:
    store = d.store()
    try:
        return sum(store.counts().values())
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ten_thousand_files(daemon, record, tmp_path):
    """10,000 photos at once (a fast stand-in pipeline: the daemon's own costs are under test). The heartbeat
    stays fresh while intake works through the backlog, SIGTERM stops it within seconds, and after a restart
    every file is published exactly once."""
    n = 10_000
    rec = record(f"{n:,} files dropped at once (stand-in pipeline); SIGTERM during the backlog; restart")
    d = daemon({**FAST_PIPELINE, "watch": {"rescan_interval": 30.0}})
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    names = [f"img{i:05d}.png" for i in range(n)]
    for i, name in enumerate(names):
        (incoming / name).write_bytes(unique_png(i))
    started = time.monotonic()
    for name in names:
        os.rename(incoming / name, d.inbox / name)
    ages: list[float] = []
    stop = threading.Event()

    def watch_heartbeat() -> None:
        while not stop.wait(0.5):
            try:
                if d.alive() and (age := heartbeat_age(d)) is not None:
                    ages.append(age)
            except sqlite3.Error:
                pass

    watcher = threading.Thread(target=watch_heartbeat)
    watcher.start()
    try:
        d.wait_for(lambda: job_count(d) >= 1500, "intake to be well into the backlog", 300)
        status = d.cli("status")  # answers while intake works
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        code = d.proc.wait(60)
        sigterm_s = time.monotonic() - t0
        at_stop = job_count(d)
        d.start()
        d.wait_for(lambda: job_count(d) >= n, f"{n} jobs", 900)
        registered_s = time.monotonic() - started
        d.wait_for(lambda: settled(d, n), "every job to end", 900)
        all_s = time.monotonic() - started
    finally:
        stop.set()
        watcher.join()
    d.stop()
    result = audit(d, names)
    rec.audit(result, f"SIGTERM with {at_stop:,} registered: exit 0 in {sigterm_s:.1f} s; all registered"
                      f" {registered_s:.0f} s after the drop ({registered_s / n * 1000:.1f} ms a file), all published"
                      f" {all_s:.0f} s after; heartbeat never older than {max(ages):.1f} s", jobs=job_count(d))
    result.assert_clean()
    assert code == 0 and status.returncode == 0 and "running (pid" in status.stdout
    assert at_stop < n  # the stop came mid-backlog
    assert max(ages) < 10.0, max(ages)  # `status` never says "not running" (30 s), far from WatchdogSec
    assert sigterm_s < 15.0
    assert len(result.published) == n and not result.failed and job_count(d) == n


@pytest.mark.slow
def test_store_locked_for_30_seconds(daemon, record, tmp_path):
    rec = record("SQLite store locked by another process (BEGIN EXCLUSIVE) for 30 s while 3 photos run")
    d = daemon({"jobs": {"lease_seconds": 60.0}})
    names = [f"locked{i}.jpg" for i in range(3)]
    for i, name in enumerate(names):
        drop(d.inbox, name, make_photo(60 + i))
    d.wait_for(lambda: d.jobs("running"), "a job to run", 60)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(30)\n"
        "c.execute('COMMIT')\n"), str(d.root / "glimpsed.db")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.wait(60)
    d.wait_for(lambda: settled(d, len(names)), "every photo after the lock", 300)
    log = d.log_path.read_text(errors="replace")
    alive = d.alive()
    d.stop()
    result = audit(d, names)
    rec.audit(result, "the daemon and its worker waited on the lock and went on; all published once",
              jobs=len(d.jobs()))
    result.assert_clean()
    assert alive and "worker_died" not in log
    assert sorted(result.published) == names
