"""Slow, stalled, preallocating and reopen-per-chunk writers: a photo is never taken before it is complete."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from tests.faults.conftest import audit, make_photo, settled

CHUNK = 20_000
PAUSE = 2.0  # seconds between chunks: twice watch.stability_seconds (1 s in the fault config)


def append_open(path: Path, data: bytes) -> None:
    """One open file, appended to every PAUSE seconds (a slow network copy)."""
    with open(path, "wb") as fh:
        for i in range(0, len(data), CHUNK):
            fh.write(data[i:i + CHUNK])
            fh.flush()
            time.sleep(PAUSE)


def append_reopen(path: Path, data: bytes) -> None:
    """The file reopened for every chunk (scanners, some sync clients); it must never be split."""
    for i in range(0, len(data), CHUNK):
        with open(path, "ab") as fh:
            fh.write(data[i:i + CHUNK])
        time.sleep(PAUSE)


def preallocate(path: Path, data: bytes) -> None:
    """SMB style: the final size is set first (all zeros), then the data fills it in place."""
    with open(path, "wb") as fh:
        fh.truncate(len(data))
    time.sleep(PAUSE)
    fd = os.open(path, os.O_WRONLY)
    try:
        for i in range(0, len(data), CHUNK):
            os.pwrite(fd, data[i:i + CHUNK], i)
            time.sleep(PAUSE)
    finally:
        os.close(fd)


def stall(path: Path, data: bytes) -> None:
    """Half the file, a stall of 4 s (longer than the stability gate, shorter than incomplete_seconds), the rest."""
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(4.0)
        fh.write(data[len(data) // 2:])


def abandon(path: Path, data: bytes) -> None:
    """A copy that dies half-way and never comes back: judged after incomplete_seconds, not before."""
    path.write_bytes(data[: len(data) // 2])


WRITERS = {"append.jpg": append_open, "reopen.jpg": append_reopen, "prealloc.jpg": preallocate,
           "stall.jpg": stall, "abandoned.jpg": abandon}


def test_writers_are_waited_for(daemon, record):
    rec = record("slow (20 KB / 2 s), reopen-per-chunk, preallocating (SMB), stalled (4 s) and abandoned writers")
    d = daemon()
    photos = {name: make_photo(i, size=(640, 480)) for i, name in enumerate(WRITERS)}
    started = time.monotonic()
    threads = [threading.Thread(target=write, args=(d.inbox / name, photos[name])) for name, write in WRITERS.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writing_took = time.monotonic() - started
    d.wait_for(lambda: settled(d, len(WRITERS)), "every written file to end", 240)
    d.stop()
    result = audit(d, list(WRITERS))
    rec.audit(result, f"4 published, byte-identical; the abandoned half file failed after it stood still; no split"
                      f" files (writers took {writing_took:.0f} s)", jobs=len(d.jobs()))
    result.assert_clean()
    assert sorted(result.published) == sorted(set(WRITERS) - {"abandoned.jpg"})
    assert result.failed == ["abandoned.jpg"]
    for name in set(WRITERS) - {"abandoned.jpg"}:
        (job,) = [j for j in d.jobs() if j.source_name == name]
        assert job.state == "done" and job.bytes == len(photos[name]), name  # the whole photo was taken
    archived = {p.name for p in (d.root / "archive").rglob("*.jpg")}
    assert archived == set(WRITERS) - {"abandoned.jpg"}  # no x-2.jpg: nothing was split or moved mid-write
    assert len(d.jobs()) == len(WRITERS) and result.left_in_inbox == []


def test_abandoned_copy_is_judged_only_after_it_stood_still(daemon, record):
    rec = record("a copy cut off half-way: failed only after watch.incomplete_seconds unchanged")
    d = daemon({"watch": {"incomplete_seconds": 5.0}})
    data = make_photo(3, size=(640, 480))
    path = d.inbox / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    written = time.time()
    status = d.wait_for(lambda: "cut.jpg" in (out := d.cli("status").stdout) and out, "status to list it", 30)
    assert "incomplete" in status and "looks incomplete" in status  # visible while it waits, with the reason
    d.wait_for(lambda: (d.root / "failed" / "cut.jpg.error.json").exists(), "the cut file to fail", 60)
    (job,) = d.jobs("failed")
    d.stop()
    result = audit(d, ["cut.jpg"])
    rec.audit(result, f"listed as incomplete by `status`, failed {job.finished_at - written:.1f} s after the last"
                      " write (limit 5 s)", jobs=1)
    result.assert_clean()
    assert job.finished_at - written >= 5.0 and "truncated" in job.error_message
