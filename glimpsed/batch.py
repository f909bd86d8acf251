"""Running without the daemon: `glimpsed run --once` and `glimpsed submit FILE...`, in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.daemon import prepare, resolve_devices
from glimpsed.intake import Intake, Taken
from glimpsed.store import Job, JobStore
from glimpsed.worker import Worker

log = structlog.get_logger(__name__)

ProgressFn = Callable[[str, str, float, str], None]  # (job_id, stage, fraction, message)


def _worker(config: DaemonConfig, store: JobStore, on_progress: ProgressFn | None) -> Worker:
    return Worker(config, store, device=resolve_devices(config.worker.devices)[0], listener=on_progress)


def run_once(config: DaemonConfig, pipeline_version: str, settle_timeout: float = 600.0,
             on_progress: ProgressFn | None = None) -> list[Job]:
    """Take every file in the inbox once it is stable, run all due jobs, return the jobs that ran."""
    store = prepare(config)
    intake = Intake(config, store, pipeline_version)
    intake.poll()
    deadline = time.monotonic() + settle_timeout
    while intake.tracker.pending_count and time.monotonic() < deadline:
        time.sleep(min(0.2, config.watch.stability_seconds or 0.2))
        intake.poll()
    worker = _worker(config, store, on_progress)
    ran = []
    while (job := worker.loop()) is not None:
        ran.append(job)
    store.close()
    return ran


def submit(config: DaemonConfig, files: list[Path], pipeline_version: str,
           on_progress: ProgressFn | None = None) -> list[tuple[Path, Taken, Job | None]]:
    """Ingest and run each file here and now; files outside the inbox are never moved or deleted."""
    store = prepare(config)
    intake = Intake(config, store, pipeline_version)
    worker = _worker(config, store, on_progress)
    results = []
    for path in files:
        taken = intake.take(Path(path), from_inbox=False)
        job = worker.loop(job_id=taken.job.id) if taken.outcome == "queued" else None
        results.append((Path(path), taken, job))
    store.close()
    return results
