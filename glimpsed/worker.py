"""Worker: claims one job per `loop()` and runs it through its pipeline, then publishes it.

A worker opens one pipeline, through one entry (`worker.pipeline`, by default
`ai_modules.pipeline:open_pipeline`), on its first job and keeps it for its life: the learned
models stay loaded between jobs. Stages resume from their artifacts in `work/<job>/`, so a
requeued job continues at its first unfinished stage.
"""

from __future__ import annotations

import errno
import importlib
import os
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import structlog

from glimpsed import __version__
from glimpsed.config import DaemonConfig
from glimpsed.errors import InvalidTransition, OutboxUnavailable, PublishError, WorkerLost
from glimpsed.names import display
from glimpsed.outbox import (DISK_FULL_ERRNOS, already_published, check_outbox, dispose_original, error_file,
                             iso_utc, publish, reserve_target, set_aside_failed)
from glimpsed.store import Job, JobStore, owner_id

log = structlog.get_logger(__name__)

PipelineFactory = Callable[..., Any]
PROGRESS_WRITE_INTERVAL = 0.5  # seconds between progress rows written to SQLite
CANCEL_CHECK_INTERVAL = 1.0  # seconds between looks at a job's cancel flag while it runs


def load_pipeline(entry: str) -> PipelineFactory:
    """Import `module:callable` (the `worker.pipeline` setting): called as ``factory(settings, device=,
    models_dir=, vram_budget=)``, it returns the pipeline a worker keeps (an object with ``run(input_path,
    workdir, on_progress=, should_stop=)`` and, optionally, ``close()``)."""
    module, _, func = entry.partition(":")
    return getattr(importlib.import_module(module), func)


# OSErrors that say something about the job's own files, so another attempt fails the same way.
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EINVAL, errno.EILSEQ, errno.ENOTDIR, errno.EISDIR,
                              errno.ELOOP})


def is_transient(exc: BaseException) -> bool:
    """Errors worth another attempt: I/O trouble, a lost worker and running out of GPU memory."""
    if isinstance(exc, OSError):
        return exc.errno not in PERMANENT_ERRNOS
    if isinstance(exc, (PublishError, WorkerLost)):
        return True
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def machine_fault(exc: BaseException) -> str | None:
    """Why `exc` is the machine's fault rather than the job's (outbox away, a disk full), or None."""
    if isinstance(exc, OutboxUnavailable):
        return exc.reason
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.errno in DISK_FULL_ERRNOS:  # waits for space, no attempt spent
        return f"{cause.strerror} writing {display(cause.filename or '?')}; free space and the job continues"
    return None


def is_bad_input(exc: BaseException) -> bool:
    from ai_modules.errors import InputError

    return isinstance(exc, InputError)


class _LeaseKeeper(threading.Thread):
    """Renews the job's lease in the background and notices cancel requests; own SQLite connection."""

    def __init__(self, db_path: Path, job_id: str, owner: str, lease_seconds: float) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.db_path, self.job_id, self.owner, self.lease_seconds = db_path, job_id, owner, lease_seconds
        self.cancelled = False
        self.lost = False
        self._done = threading.Event()

    def run(self) -> None:
        store = JobStore(self.db_path, migrate=False)
        try:
            while not self._done.wait(max(self.lease_seconds / 3, 0.2)):
                if not store.renew_lease(self.job_id, self.owner, self.lease_seconds):
                    self.lost = True
                    return
                self.cancelled = store.cancel_requested(self.job_id)
        finally:
            store.close()

    def stop(self) -> None:
        self._done.set()
        self.join()


class Worker:
    """Runs jobs from the store on one device.

    Args:
        config: the daemon's config.
        store: a job store connection for this thread.
        device: "cpu", "cuda" or "cuda:N", handed to the pipeline.
        stop: set it to stop at the next stage boundary; the running job goes back to the queue.
        pipeline: the pipeline to keep (an object with `run`); default: opened from `worker.pipeline` on the
            first job.
        parent_pid: in a worker process, the daemon's pid: if the daemon dies, stop.
        listener: called with every progress report, e.g. by a progress bar.
    """

    def __init__(self, config: DaemonConfig, store: JobStore, device: str = "cpu",
                 stop: threading.Event | None = None, pipeline: Any | None = None,
                 clock: Callable[[], float] = time.time, parent_pid: int | None = None,
                 listener: Callable[[str, str, float, str], None] | None = None) -> None:
        self.config = config
        self.store = store
        self.device = device
        self.stop = stop or threading.Event()
        self._pipeline = pipeline
        self.clock = clock
        self.owner = owner_id()
        self.parent_pid = parent_pid
        self.listener = listener  # (job_id, stage, fraction, message), e.g. a progress bar
        self.paused_reason = ""  # why no job is claimed now (the outbox is away), "" when none

    @property
    def pipeline(self) -> Any:
        """The pipeline this worker keeps (opened on first use: importing torch and the stages takes seconds)."""
        if self._pipeline is None:
            factory = load_pipeline(self.config.worker.pipeline)
            self._pipeline = factory(self.config.pipeline, device=self.device, models_dir=self.config.path("models"),
                                     vram_budget=self.config.worker.vram_budget_bytes())
        return self._pipeline

    def close(self) -> None:
        """Release the pipeline's models (the worker is stopping)."""
        if self._pipeline is not None and hasattr(self._pipeline, "close"):
            self._pipeline.close()
        self._pipeline = None

    def outbox_ready(self) -> bool:
        """False (with `paused_reason` set) while the outbox cannot take results: no job is claimed then."""
        ok, reason = check_outbox(self.config.path("outbox"), self.config.outbox.sentinel)
        if not ok and reason != self.paused_reason:
            log.warning("outbox_unavailable", reason=reason)
        elif ok and self.paused_reason:
            log.info("outbox_available", outbox=str(self.config.path("outbox")))
        self.paused_reason = "" if ok else reason
        return ok

    def loop(self, now: float | None = None, job_id: str | None = None) -> Job | None:
        """Claim one due job (or `job_id`) and run it to an end state; None when nothing was due or the
        outbox cannot take results."""
        if not self.outbox_ready():
            return None
        job = self.store.claim(self.owner, self.config.jobs.lease_seconds, now=now, job_id=job_id)
        if job is None:
            return None
        return self.run_job(job)

    def _orphaned(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def run_job(self, job: Job) -> Job:
        """Run a claimed job and record how it ended."""
        from ai_modules.errors import PipelineStopped

        bound = log.bind(source=job.source_name)
        structlog.contextvars.bind_contextvars(job_id=job.id)  # also on the pipeline's own (stdlib) log records
        bound.info("job_started", attempt=job.attempts, device=self.device)
        keeper = _LeaseKeeper(self.config.path("db"), job.id, self.owner, self.config.jobs.lease_seconds)
        keeper.start()
        started = self.clock()
        timed_out = threading.Event()
        last = {"stage": None, "at": 0.0}

        cancel_checked = [0.0]

        def should_stop() -> bool:
            now = time.monotonic()
            if self.clock() - started > self.config.jobs.timeout_seconds:
                timed_out.set()
            if now - cancel_checked[0] >= CANCEL_CHECK_INTERVAL:
                cancel_checked[0] = now
                keeper.cancelled = keeper.cancelled or self.store.cancel_requested(job.id)
            return self.stop.is_set() or keeper.cancelled or keeper.lost or timed_out.is_set() or self._orphaned()

        def on_progress(stage: str, fraction: float, message: str) -> None:
            if self.listener is not None:
                self.listener(job.id, stage, fraction, message)
            now = self.clock()
            if stage != last["stage"]:
                structlog.contextvars.bind_contextvars(stage=stage)
                bound.info("stage_started", message=message)
                self.store.add_event(job.id, "stage_started", stage, message)
            if fraction >= 1.0:  # its time, model loading, peak VRAM and what moved, for the job's events
                self.store.add_event(job.id, "stage_finished", stage, message)
            if stage != last["stage"] or fraction >= 1.0 or now - last["at"] >= PROGRESS_WRITE_INTERVAL:
                self.store.set_progress(job.id, stage, fraction, message)
                last.update(stage=stage, at=now)

        workdir = Path(job.workdir or self.config.path("work") / job.id)
        try:
            result = self.pipeline.run(workdir / "input" / "image.png", workdir, on_progress=on_progress,
                                       should_stop=should_stop)
            if keeper.lost:
                raise PipelineStopped("publish")
            return self._publish(job, result, bound)
        except PipelineStopped as exc:
            return self._stopped(job, keeper, timed_out.is_set(), exc, bound)
        except Exception as exc:  # noqa: BLE001 - every failure of a job is recorded, the worker goes on
            return self._failed(job, exc, last["stage"], bound)
        finally:
            keeper.stop()
            structlog.contextvars.unbind_contextvars("job_id", "stage")

    def _publish(self, job: Job, result: Any, bound: Any) -> Job:
        outbox = self.config.path("outbox")
        name = Path(job.source_name).stem
        target = Path(job.output_dir) if job.output_dir else None
        if target is None or not already_published(target, job.id):
            if target is None:
                target = reserve_target(outbox, job.rel_dir, name)
                self.store.set_output_dir(job.id, str(target))
            target = publish(outbox=outbox, rel_dir=job.rel_dir, name=name, job_id=job.id,
                             outputs=result.outputs, manifest=self._manifest(job, result), config=self.config.outbox,
                             target=target)
        done = self.store.finish(job.id, self.owner, str(target), result.to_dict())
        bound.info("job_published", output_dir=str(target), seconds=round(done.finished_at - done.started_at, 2))
        if self._from_inbox(job):
            what = dispose_original(job.source_file, self.config.outbox.after_success,
                                    self.config.path("archive"), job.rel_dir, job.src_size, job.src_mtime_ns)
            self.store.add_event(job.id, "original_handled", None, what)
        if job.aside_file is not None:  # a retry of a failed job: its original and error.json sit in failed/
            error_file(job.aside_file).unlink(missing_ok=True)
            what = dispose_original(job.aside_file, self.config.outbox.after_success, self.config.path("archive"),
                                    job.rel_dir, None, None)
            self.store.set_aside_path(job.id, None)
            self.store.add_event(job.id, "original_handled", None, f"from failed/: {what}; error.json removed")
        if not self.config.jobs.keep_workdir and job.workdir:
            shutil.rmtree(job.workdir, ignore_errors=True)
        return done

    def _manifest(self, job: Job, result: Any) -> dict[str, Any]:
        data = result.to_dict()
        return {
            "source": {"name": job.source_name, "sha256": job.sha256, "bytes": job.bytes, "subfolder": job.rel_dir},
            "tags": job.tag_list,
            "timestamps": {"queued_at": iso_utc(job.created_at), "started_at": iso_utc(job.started_at),
                           "finished_at": iso_utc(self.clock())},
            "glimpsed_version": __version__,
            "pipeline_version": data.get("pipeline_version"),
            "config_hash": job.config_hash,
            "device": data.get("device", self.device),
            "attempts": job.attempts,
            "settings": data.get("settings", {}),
            "models": [{"stage": s["name"], **m} for s in data.get("stages", []) for m in s.get("model_files", [])],
            "stages": data.get("stages", []),
        }

    def _stopped(self, job: Job, keeper: _LeaseKeeper, timed_out: bool, exc: Exception, bound: Any) -> Job:
        if keeper.lost:
            bound.warning("lease_lost", detail="another worker took the job over; dropping this run")
            return self.store.get(job.id)
        if timed_out:
            message = f"ran longer than jobs.timeout_seconds={self.config.jobs.timeout_seconds:g}"
            return self._final_failure(job, "JobTimeout", message, None, bound)
        if keeper.cancelled:
            self.store.mark_cancelled(job.id, self.owner)
            bound.info("job_cancelled")
            self._set_aside(job, "Cancelled", "cancelled by the user", None)
            return self.store.get(job.id)
        self.store.release(job.id, self.owner, f"stopped before {exc}: the daemon is shutting down")
        bound.info("job_interrupted", next_stage=str(exc))
        return self.store.get(job.id)

    def _failed(self, job: Job, exc: Exception, stage: str | None, bound: Any) -> Job:
        error_type, message = type(exc).__name__, str(exc) or repr(exc)
        try:
            if (why := machine_fault(exc)) is not None:
                delay = self.config.jobs.retry_backoff_seconds
                bound.warning("job_waiting", stage=stage, reason=why, delay=delay)
                self.store.release(job.id, self.owner, f"waiting, no attempt spent: {why}",
                                   retry_at=self.clock() + delay, event="job_waiting")
                return self.store.get(job.id)
            if is_transient(exc) and job.attempts < job.max_attempts:
                delay = min(self.config.jobs.retry_backoff_seconds * 2 ** (job.attempts - 1),
                            self.config.jobs.retry_backoff_max_seconds)
                bound.warning("job_retry_scheduled", stage=stage, error=f"{error_type}: {message}", delay=delay)
                return self.store.fail(job.id, self.owner, error_type, message, retry_at=self.clock() + delay,
                                       stage=stage)
            if not is_bad_input(exc) and not is_transient(exc):
                bound.error("job_crashed", stage=stage, traceback=traceback.format_exc())
            return self._final_failure(job, error_type, message, stage, bound, advice(job.id, error_type, exc))
        except InvalidTransition:
            bound.warning("lease_lost", detail="the job was taken over while failing")
            return self.store.get(job.id)

    def _final_failure(self, job: Job, error_type: str, message: str, stage: str | None, bound: Any,
                       hint: str | None = None) -> Job:
        bound.error("job_failed", stage=stage, error=f"{error_type}: {message}")
        failed = self.store.fail(job.id, self.owner, error_type, message, stage=stage)
        self._set_aside(job, error_type, message, stage, hint)
        return failed

    def _set_aside(self, job: Job, error_type: str, message: str, stage: str | None, hint: str | None = None) -> None:
        set_aside(self.config, self.store, job, error_type, message, stage, self.clock(), hint)

    def _from_inbox(self, job: Job) -> bool:
        return from_inbox(self.config, job)


def from_inbox(config: DaemonConfig, job: Job) -> bool:
    """Whether the job's original sits in the inbox (`submit` runs files from elsewhere, left alone)."""
    return job.source_file.is_relative_to(config.path("inbox"))


def advice(job_id: str, error_type: str, exc: BaseException | None = None) -> str:
    """What a user can do about a failure, for error.json."""
    if exc is not None and is_bad_input(exc):
        hint = getattr(exc, "hint", "") or "Use a sharper photo of one object on a plain background"
        return f"{hint}. The photo itself is the problem, so `glimpsed retry` would fail the same way: drop a" \
               " new photo into the inbox"
    if error_type == "WorkerLost":
        return (f"the worker process died on this photo every time (out of memory?); check the log"
                f" (`journalctl -u glimpsed`), then `glimpsed retry {job_id}`")
    if error_type == "JobTimeout":
        return f"raise jobs.timeout_seconds or use a smaller photo, then `glimpsed retry {job_id}`"
    return f"see `glimpsed show {job_id}`; `glimpsed retry {job_id}` runs it again from its saved input"


def set_aside(config: DaemonConfig, store: JobStore, job: Job, error_type: str, message: str,
              stage: str | None, now: float, hint: str | None = None) -> None:
    """Move an inbox original into failed/ with `<name>.error.json`, so the inbox only holds new work.

    Never raises: the job's failure is already in the store, and a failure here (a full disk, a
    share gone) must not kill the worker. The original then stays in the inbox; intake sees its job
    failed and does not take that version of the file again.
    """
    if not from_inbox(config, job):
        return
    try:
        if not os.path.lexists(job.source_file):
            return
        dest = set_aside_failed(job.source_file, config.path("failed") / job.rel_dir, {
            "job_id": job.id, "source": job.source_name, "error_type": error_type, "message": message,
            "stage": stage, "attempts": job.attempts, "failed_at": iso_utc(now),
            "hint": hint or advice(job.id, error_type),
        })
        store.set_aside_path(job.id, dest)
        store.add_event(job.id, "original_handled", stage, f"moved to {display(dest)}")
    except OSError as exc:
        log.error("original_not_moved", job_id=job.id, source=job.source_path, error=str(exc))
        store.add_event(job.id, "original_not_moved", stage, f"left in the inbox: {exc}")
