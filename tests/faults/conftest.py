"""The fault suite's harness: the daemon as a real subprocess, an audit of every dropped file, and a record
per case that `benchmarks/reliability.py` turns into docs/reliability.md.

Every case ends with :func:`audit`: each dropped file must be accounted for exactly once — published (a
complete folder with a manifest naming it), set aside in failed/ with an error.json, or a skipped duplicate
whose original was archived — and nothing may be published twice.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from glimpsed.names import display
from tests.integration.conftest import DaemonProcess, daemons, make_photo

# A fault case's daemon: fast stability gate, short incomplete wait, small pipeline (see DaemonProcess).
FAST = {"watch": {"stability_seconds": 1.0, "incomplete_seconds": 6.0, "poll_interval": 0.2, "rescan_interval": 2.0},
        "jobs": {"lease_seconds": 6.0, "retry_backoff_seconds": 0.5}}


def merge(*overrides: dict) -> dict:
    """Section-wise merge of config overrides (later wins)."""
    out: dict[str, dict] = {}
    for item in overrides:
        for section, values in item.items():
            out.setdefault(section, {}).update(values)
    return out


@dataclass
class Audit:
    """Where every dropped file ended up."""

    files: int
    published: Counter = field(default_factory=Counter)  # display name -> published folders naming it
    failed: list[str] = field(default_factory=list)  # display names in failed/ with an error.json
    failed_without_json: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    left_in_inbox: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    def assert_clean(self) -> None:
        assert not self.lost, f"lost: {self.lost}"
        assert not self.duplicated, f"published more than once: {self.duplicated}"
        assert not self.failed_without_json, f"in failed/ without error.json: {self.failed_without_json}"


def audit(d: DaemonProcess, dropped: list[str | bytes], expect_in_inbox: tuple[str, ...] = ()) -> Audit:
    """Account for every dropped file name (str, or bytes for non-UTF-8 names)."""
    names = [display(n) for n in dropped]
    result = Audit(files=len(names))
    for manifest in d.published():
        data = json.loads(manifest.read_text())
        assert set(data["outputs"]) >= {"ply", "splat", "glb"}, manifest
        for out in data["outputs"].values():
            assert (manifest.parent / out["file"]).stat().st_size == out["bytes"]
        result.published[data["source"]["name"]] += 1
    failed_dir = d.root / "failed"
    for path in (failed_dir.rglob("*") if failed_dir.exists() else []):
        if path.is_file() and not path.name.endswith(".error.json") and not path.name.startswith("."):
            error = path.with_name(path.name + ".error.json")
            (result.failed if error.exists() else result.failed_without_json).append(display(path.name))
    store = d.store()
    try:
        jobs = store.jobs(limit=100_000)
    finally:
        store.close()
    result.skipped = [j.source_name for j in jobs if j.state == "skipped"]
    result.left_in_inbox = [display(p.name) for p in d.inbox.iterdir() if not p.name.startswith(".")
                            and p.name not in expect_in_inbox]
    failed_names = Counter(_original_name(n, jobs) for n in result.failed)
    for name in names:
        if not (result.published[name] or failed_names[name] or name in result.skipped):
            result.lost.append(name)
    result.duplicated = [n for n, c in result.published.items() if c > 1]
    done = Counter(j.source_name for j in jobs if j.state == "done")
    result.duplicated += [n for n, c in done.items() if c > 1 and n not in result.duplicated]
    return result


def _original_name(aside: str, jobs: list) -> str:
    """A name in failed/ may be shortened or numbered; map it back through the jobs that put it there."""
    for job in jobs:
        if job.aside_raw and display(Path(os.fsdecode(job.aside_raw)).name) == aside:
            return job.source_name
    return aside


class Recorder:
    """One row of docs/reliability.md: what was done to the daemon and what came out."""

    def __init__(self, case: str) -> None:
        self.row: dict[str, Any] = {"case": case, "jobs": 0, "kills": 0, "files": 0, "seconds": 0.0,
                                    "lost": None, "duplicated": None, "outcome": ""}
        self.start = time.monotonic()

    def audit(self, result: Audit, outcome: str, **extra: Any) -> None:
        self.row.update(files=result.files, lost=len(result.lost), duplicated=len(result.duplicated),
                        outcome=outcome, **extra)

    def set(self, **values: Any) -> None:
        self.row.update(values)


@pytest.fixture
def record(request):
    """record("case name") -> Recorder; rows go to $GLIMPSED_FAULT_REPORT (JSON lines) when it is set."""
    made: list[Recorder] = []

    def make(case: str) -> Recorder:
        made.append(Recorder(case))
        return made[-1]

    yield make
    target = os.environ.get("GLIMPSED_FAULT_REPORT")
    for rec in made:
        rec.row["seconds"] = round(time.monotonic() - rec.start, 1)
        rec.row["passed"] = not getattr(request.node, "rep_failed", False)
        rec.row["test"] = request.node.nodeid
        if target:
            with open(target, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec.row) + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        item.rep_failed = True


@pytest.fixture
def daemon(tmp_path):
    """daemon(overrides, env=None, run=True, root=None) -> DaemonProcess with the FAST settings; stopped at the end."""
    with daemons(tmp_path, FAST) as start:
        yield start


def drop(inbox: Path, name: str | bytes, data: bytes) -> Path:
    """Copy a file into the inbox the way most tools do: a hidden temp name, then a rename."""
    target = Path(os.fsdecode(os.path.join(os.fsencode(inbox), name if isinstance(name, bytes) else os.fsencode(name))))
    tmp = inbox / f".tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.write_bytes(data)
    os.rename(tmp, target)
    return target


def settled(d: DaemonProcess, n: int) -> bool:
    """True when `n` jobs have ended and none is queued or running."""
    jobs = d.jobs()
    ended = [j for j in jobs if j.state in ("done", "failed", "skipped", "cancelled")]
    return len(ended) >= n and not [j for j in jobs if j.state in ("queued", "running")]


__all__ = ["FAST", "Audit", "audit", "drop", "make_photo", "merge", "settled"]
