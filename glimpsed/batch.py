"""Running without the daemon: `glimpsed run --once` and `glimpsed submit FILE...`, in this process."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.daemon import prepare, recover_dead_local, recover_lost_jobs, resolve_devices
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
    while (job := worker.loop()) is not None:  # one pipeline for all of them: models load once
        ran.append(job)
    worker.close()
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
        # queued now, or a job of this file (or its content) queued or running already: run it or wait for it
        follow = taken.outcome in ("queued", "known") and taken.job is not None
        job = _follow(config, store, worker, taken.job) if follow else None
        results.append((Path(path), taken, job))
    worker.close()
    store.close()
    return results


def _follow(config: DaemonConfig, store: JobStore, worker: Worker, job: Job, poll: float = 0.5) -> Job:
    """Run `job` here, or wait for whoever runs it; take it over when its owner is gone (a killed `submit`,
    a crashed daemon), so a file is never blocked by a job nobody will finish."""
    first = True  # the user asked for this file now: the first claim does not wait out a crash's backoff
    while True:
        job = store.get(job.id)
        if job.state == "queued" and (first or job.next_attempt_at <= time.time()):
            first = False
            ran = worker.loop(job_id=job.id)
            if worker.paused_reason:
                return job  # the outbox cannot take results; the job stays queued for a daemon or a later submit
            if ran is not None and ran.state != "queued":
                return ran
            continue
        if job.state not in ("queued", "running"):
            return job
        recover_dead_local(config, store, "its worker is gone (crash or kill)")
        recover_lost_jobs(config, store, store.requeue_expired(), "lease expired")
        time.sleep(poll)
