"""Intake: from a stable inbox file to a queued job (or to failed/ with a reason).

Watcher events and periodic rescans only nominate paths; the stability gate decides when a
file is complete; `take()` ingests a copy into `work/<job>/input` and enqueues it.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.errors import RejectedFile
from glimpsed.ingest import FileChanged, IngestedImage, IngestLimits, ingest
from glimpsed.outbox import dispose_original, iso_utc, set_aside_failed
from glimpsed.store import DuplicateJob, Job, JobStore, new_job_id
from glimpsed.watcher import IgnoreRules, InboxWatcher, StabilityTracker, check_inbox, scan_folder

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Taken:
    """What became of one file: `queued`, `skipped` (duplicate), `rejected`, `known` or `retry`."""

    outcome: str
    job: Job | None = None
    message: str = ""


class Intake:
    """Finds stable inbox files and turns them into jobs.

    Args:
        config: the daemon's config.
        store: the job store.
        pipeline_version: recorded on each job and part of the dedupe key.
        clock: monotonic clock for the stability gate and the rescan timer (injectable for tests).
    """

    def __init__(self, config: DaemonConfig, store: JobStore, pipeline_version: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.store = store
        self.pipeline_version = pipeline_version
        self.clock = clock
        self.inbox = config.path("inbox")
        watch = config.watch
        self.rules = IgnoreRules(extra_patterns=watch.ignore, extra_dirs=watch.ignore_dirs,
                                 extensions=watch.extensions, sentinel=watch.sentinel)
        self.tracker = StabilityTracker(watch.stability_seconds, clock=clock)
        self.watcher: InboxWatcher | None = None
        self.paused_reason = ""
        self._next_rescan = 0.0
        self._lock = threading.Lock()

    # -- nominating paths -------------------------------------------------------------

    def start_watching(self) -> None:
        """Start the watchdog observer (native or polling, as configured and detected)."""
        self.watcher = InboxWatcher(self.inbox, self.rules, recursive=self.config.watch.recursive,
                                    mode=self.config.watch.mode, poll_interval=self.config.watch.poll_interval,
                                    on_path=self.tracker.track)
        self.watcher.start()  # logs watcher_started with the mode and why, or why it could not start

    def stop_watching(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    def watcher_alive(self) -> bool:
        return self.watcher is not None and self.watcher.is_alive()

    def rescan(self) -> int:
        """Track every candidate file in the inbox; events are hints, this finds what they missed."""
        n = 0
        for path in scan_folder(self.inbox, self.rules, self.config.watch.recursive):
            self.tracker.track(path)
            n += 1
        return n

    def poll(self) -> list[Taken]:
        """One intake step: check the share, rescan when due, take the files that became stable."""
        ok, reason = check_inbox(self.inbox, self.config.watch.sentinel)
        if not ok:
            if reason != self.paused_reason:
                log.warning("intake_paused", reason=reason)
            self.paused_reason = reason
            return []
        if self.paused_reason:
            log.info("intake_resumed", inbox=str(self.inbox))
            self.paused_reason = ""
            self._next_rescan = 0.0
        now = self.clock()
        if now >= self._next_rescan:
            self.rescan()
            self._next_rescan = now + self.config.watch.rescan_interval
        taken = []
        for path in self.tracker.get_stable_files():
            try:
                taken.append(self.take(path))
            except Exception as exc:  # noqa: BLE001 - one bad file must never stop intake; the rescan retries it
                log.error("intake_failed", source=str(path), error=f"{type(exc).__name__}: {exc}")
        return taken

    # -- taking one file --------------------------------------------------------------

    def take(self, path: Path, from_inbox: bool = True) -> Taken:
        """Ingest one stable file and queue it; reject, skip or ignore it with a recorded reason."""
        with self._lock:
            return self._take(path, from_inbox)

    def _take(self, path: Path, from_inbox: bool) -> Taken:
        path = path.absolute()
        rel_dir = str(path.parent.relative_to(self.inbox)) if from_inbox else ""
        rel_dir = "" if rel_dir == "." else rel_dir
        try:
            st = path.stat()
        except FileNotFoundError:
            return Taken("known", message="vanished before intake")
        if from_inbox and self.store.is_known_file(str(path), st.st_size, st.st_mtime_ns):
            return Taken("known", message="already queued or processed")
        job_id = new_job_id()
        workdir = self.config.path("work") / job_id
        limits = IngestLimits(max_bytes=self.config.ingest.max_bytes, max_pixels=self.config.ingest.max_pixels,
                              min_side=self.config.ingest.min_side)
        try:
            image = ingest(path, workdir / "input", limits)
        except FileChanged as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            self.tracker.track(path)
            return Taken("retry", message=exc.reason)
        except RejectedFile as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return self._reject(path, rel_dir, exc, from_inbox)
        fields = dict(source_path=str(path), source_name=path.name, sha256=image.sha256, size=image.bytes,
                      src_size=image.src_size, src_mtime_ns=image.src_mtime_ns,
                      pipeline_version=self.pipeline_version, config_hash=self.config.pipeline_hash(),
                      max_attempts=self.config.jobs.max_attempts, rel_dir=rel_dir,
                      tags=[p for p in Path(rel_dir).parts], job_id=job_id, workdir=str(workdir))
        try:
            job = self.store.enqueue(**fields, dedupe=True)
        except DuplicateJob as dup:
            if dup.existing.source_path == str(path) and dup.existing.state in ("queued", "running"):
                shutil.rmtree(workdir, ignore_errors=True)  # another daemon on this store took it first
                return Taken("known", dup.existing, "taken in by another daemon")
            if self.config.jobs.on_duplicate == "reprocess":
                job = self.store.enqueue(**fields, dedupe=False)
                self.store.add_event(job.id, "duplicate_reprocessed", None, f"same content as job {dup.existing.id}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                return self._skip(path, rel_dir, image, dup.existing, from_inbox)
        log.info("job_queued", job_id=job.id, source=str(path), sha256=image.sha256[:12])
        return Taken("queued", job)

    def _reject(self, path: Path, rel_dir: str, exc: RejectedFile, from_inbox: bool) -> Taken:
        job = self.store.record_outcome_without_run(
            state="failed", source_path=str(path), source_name=path.name, rel_dir=rel_dir, sha256=None, size=None,
            pipeline_version=self.pipeline_version, config_hash=self.config.pipeline_hash(),
            error_type="RejectedFile", error_message=f"{exc.reason}. {exc.hint}")
        log.warning("file_rejected", job_id=job.id, source=str(path), reason=exc.reason)
        if from_inbox and path.exists():
            set_aside_failed(path, self.config.path("failed") / rel_dir, {
                "job_id": job.id, "source": path.name, "error_type": "RejectedFile", "message": exc.reason,
                "hint": exc.hint, "failed_at": iso_utc(time.time())})
        return Taken("rejected", job, exc.reason)

    def _skip(self, path: Path, rel_dir: str, image: IngestedImage, existing: Job, from_inbox: bool) -> Taken:
        job = self.store.record_outcome_without_run(
            state="skipped", source_path=str(path), source_name=path.name, rel_dir=rel_dir,
            sha256=image.sha256, size=image.bytes, pipeline_version=self.pipeline_version,
            config_hash=self.config.pipeline_hash(), duplicate_of=existing.id, output_dir=existing.output_dir,
            src_size=image.src_size, src_mtime_ns=image.src_mtime_ns)
        log.info("duplicate_skipped", job_id=job.id, source=str(path), duplicate_of=existing.id,
                 output_dir=existing.output_dir)
        if from_inbox:
            dispose_original(path, self.config.outbox.after_success, self.config.path("archive"), rel_dir,
                             image.src_size, image.src_mtime_ns)
        return Taken("skipped", job, f"same content as job {existing.id}")
