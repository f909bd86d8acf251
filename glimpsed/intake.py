"""Intake: from a stable inbox file to a queued job (or to failed/ with a reason).

Watcher events and periodic rescans only nominate paths; the stability gate decides when a
file is complete; `take()` ingests a copy into `work/<job>/input` and enqueues it. A file that
looks cut off waits (bounded) for its writer; a file whose intake fails for reasons of the machine
(the work disk full) stays in the inbox and is tried again; every file that waits or is ignored is
listed with the reason in :meth:`Intake.summary`, which `glimpsed status` shows.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.errors import IncompleteFile, RejectedFile
from glimpsed.ingest import FileChanged, IngestedImage, IngestLimits, ingest
from glimpsed.names import display
from glimpsed.outbox import dispose_original, iso_utc, set_aside_failed
from glimpsed.store import ACTIVE_STATES, DuplicateJob, Job, JobStore, new_job_id
from glimpsed.watcher import IgnoreRules, InboxWatcher, StabilityTracker, check_inbox, scan_folder

log = structlog.get_logger(__name__)

STEP_BUDGET_SECONDS = 1.0  # one poll takes files for about this long, so the heartbeat and signals keep up
INTAKE_ERROR_LIMIT = 3  # unexpected errors on one file before it is set aside as failed
SUMMARY_LIMIT = 50  # files listed per kind in the summary that `status` shows
LINGER_SECONDS = 60.0  # an original still here this long after its job ended was missed by the worker


@dataclass(frozen=True)
class Taken:
    """What became of one file: `queued`, `skipped` (duplicate), `rejected`, `known`, `retry` (it changed
    while read, or the machine failed), or `waiting` (it looks cut off, or its content is queued already)."""

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
        self._ready: dict[Path, None] = {}  # stable files not taken yet (an ordered set; a poll has a budget)
        self._notes: dict[Path, dict[str, Any]] = {}  # files that wait: cut off, same content queued, errors
        self._ignored: dict[Path, str] = {}  # entries skipped on purpose, with the reason (from the last rescan)

    # -- nominating paths -------------------------------------------------------------

    def start_watching(self) -> None:
        """Start the watchdog observer (native or polling, as configured and detected)."""
        self.watcher = InboxWatcher(self.inbox, self.rules, recursive=self.config.watch.recursive,
                                    mode=self.config.watch.mode, poll_interval=self.config.watch.poll_interval,
                                    on_path=self.tracker.track, on_ignored=self._ignore)
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
        ignored: dict[Path, str] = {}
        for path in scan_folder(self.inbox, self.rules, self.config.watch.recursive,
                                on_ignored=ignored.__setitem__):
            self.tracker.track(path)
            n += 1
        self._ignored = ignored
        return n

    def _ignore(self, path: Path, reason: str) -> None:
        self._ignored[path] = reason

    def summary(self) -> dict[str, Any]:
        """What intake is waiting for or ignoring, for `glimpsed status`: counts and the first files of each
        kind with the reason (display names)."""
        for kind in (self._ignored, self._notes):  # renamed into place, removed by their owner
            for path in [p for p in kind if not os.path.lexists(p)]:
                kind.pop(path, None)
        notes = sorted(self._notes.items(), key=lambda kv: kv[1]["since"])
        ignored = sorted(self._ignored.items())
        return {
            "settling": self.tracker.pending_count, "ready": len(self._ready),
            "waiting": len(notes), "ignored": len(ignored),
            "files": [{"path": display(p.relative_to(self.inbox) if p.is_relative_to(self.inbox) else p),
                       "state": note["state"], "reason": note["reason"], "since": note["since"]}
                      for p, note in notes[:SUMMARY_LIMIT]]
                     + [{"path": display(p.relative_to(self.inbox) if p.is_relative_to(self.inbox) else p),
                         "state": "ignored", "reason": why, "since": None} for p, why in ignored[:SUMMARY_LIMIT]],
        }

    def poll(self, budget: float = STEP_BUDGET_SECONDS) -> list[Taken]:
        """One intake step: check the share, rescan when due, take the files that became stable — for about
        `budget` seconds, so that a backlog of thousands never starves the heartbeat or a stop signal."""
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
        self._ready.update(dict.fromkeys(self.tracker.get_stable_files()))
        taken = []
        deadline = time.monotonic() + budget
        while self._ready and time.monotonic() < deadline:
            path = next(iter(self._ready))
            del self._ready[path]
            taken.append(self.take(path))
        return taken

    @property
    def backlog(self) -> int:
        """Stable files waiting for their turn in the next polls."""
        return len(self._ready)

    # -- taking one file --------------------------------------------------------------

    def take(self, path: Path, from_inbox: bool = True) -> Taken:
        """Ingest one stable file and queue it; reject, skip or ignore it with a recorded reason."""
        with self._lock:
            return self._take(path, from_inbox)

    def _take(self, path: Path, from_inbox: bool) -> Taken:
        try:
            return self._take_checked(path, from_inbox)
        except Exception as exc:  # noqa: BLE001 - one file must never stop intake; it is retried, then set aside
            return self._intake_error(path, from_inbox, exc)

    def _rel_dir(self, path: Path, from_inbox: bool) -> str:
        """The inbox subfolder a file came from ("" for the top, and for files `submit` runs)."""
        rel_dir = str(path.parent.relative_to(self.inbox)) if from_inbox else ""
        return "" if rel_dir == "." else rel_dir

    def _take_checked(self, path: Path, from_inbox: bool) -> Taken:
        path = path.absolute()
        rel_dir = self._rel_dir(path, from_inbox)
        try:
            st = path.stat()
        except FileNotFoundError:
            self._notes.pop(path, None)
            return Taken("known", message="vanished before intake")
        signature = (st.st_size, st.st_mtime_ns)
        if from_inbox:
            known = self.store.known_job_for_file(path, *signature)
            if known is not None:
                self._notes.pop(path, None)
                return self._known(path, known)
            if (waited := self._still_waiting(path, signature)) is not None:
                return waited
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
        except IncompleteFile as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            if from_inbox and (waiting := self._wait_incomplete(path, signature, exc)) is not None:
                return waiting
            return self._reject(path, rel_dir, exc, from_inbox, signature)
        except RejectedFile as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            return self._reject(path, rel_dir, exc, from_inbox, signature)
        except OSError as exc:  # the work folder, not the photo: a full disk, a permission; try again later
            shutil.rmtree(workdir, ignore_errors=True)
            return self._machine_error(path, signature, f"cannot copy into {self.config.path('work')}: {exc}")
        self._notes.pop(path, None)
        fields = dict(source_path=path, source_name=path.name, sha256=image.sha256, size=image.bytes,
                      src_size=image.src_size, src_mtime_ns=image.src_mtime_ns,
                      pipeline_version=self.pipeline_version, config_hash=self.config.pipeline_hash(),
                      max_attempts=self.config.jobs.max_attempts, rel_dir=rel_dir,
                      tags=[p for p in Path(rel_dir).parts], job_id=job_id, workdir=str(workdir))
        try:
            job = self.store.enqueue(**fields, dedupe=True, identity=self.result_key())
        except DuplicateJob as dup:
            existing = dup.existing
            if existing.source_file == path and existing.state in ACTIVE_STATES:
                shutil.rmtree(workdir, ignore_errors=True)  # another daemon on this store took it first
                return Taken("known", existing, "taken in by another daemon")
            if self.config.jobs.on_duplicate == "reprocess":
                job = self.store.enqueue(**fields, dedupe=False)
                self.store.add_event(job.id, "duplicate_reprocessed", None, f"same content as job {existing.id}")
            elif existing.state in ACTIVE_STATES:
                # Not a success yet: if that job fails, this copy becomes the job. Look again when it ends.
                shutil.rmtree(workdir, ignore_errors=True)
                reason = f"same content as job {existing.id} ({existing.state}); taken when that job ends"
                if not from_inbox:
                    return Taken("known", existing, reason)  # `submit` follows that job
                return self._defer(path, signature, "duplicate", reason, existing_id=existing.id)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                return self._skip(path, rel_dir, image, existing, from_inbox)
        log.info("job_queued", job_id=job.id, source=display(path), sha256=image.sha256[:12])
        return Taken("queued", job)

    # -- files that wait ----------------------------------------------------------------

    def _defer(self, path: Path, signature: tuple[int, int], state: str, reason: str, since: float | None = None,
               recheck: float | None = None, **extra: Any) -> Taken:
        """Keep a file in the inbox, listed with `reason`, and look at it again later (sooner if it changes)."""
        now = self.clock()
        note = self._notes.get(path)
        if note is None or note["signature"] != signature or note["state"] != state:
            note = {"state": state, "signature": signature, "since": now if since is None else since}
            log.info("intake_waiting", source=display(path), state=state, reason=reason)
        note.update(reason=reason, **extra)
        self._notes[path] = note
        wait = recheck if recheck is not None else max(self.config.watch.stability_seconds, 10.0)
        self.tracker.track(path, not_before=now + wait)
        return Taken("waiting", message=reason)

    def _still_waiting(self, path: Path, signature: tuple[int, int]) -> Taken | None:
        """A file waiting for a duplicate's job to end: keep waiting without reading it again."""
        note = self._notes.get(path)
        if note is None or note["state"] != "duplicate" or note["signature"] != signature:
            return None
        try:
            existing = self.store.get(note["existing_id"])
        except Exception:  # noqa: BLE001 - the job is gone (store replaced): judge the file afresh
            return None
        if existing.state not in ACTIVE_STATES:
            return None
        return self._defer(path, signature, "duplicate", note["reason"])

    def _wait_incomplete(self, path: Path, signature: tuple[int, int], exc: IncompleteFile) -> Taken | None:
        """Give a file that looks cut off `watch.incomplete_seconds` unchanged before judging it; looks
        again at growing intervals, and at once when it changes. None when its time is up."""
        now = self.clock()
        note = self._notes.get(path)
        since = note["since"] if note and note["state"] == "incomplete" and note["signature"] == signature else now
        limit = self.config.watch.incomplete_seconds
        if now - since >= limit:
            self._notes.pop(path, None)
            return None
        recheck = min(max(self.config.watch.stability_seconds, now - since, 1.0), since + limit - now)
        reason = f"looks incomplete ({exc.reason}); judged if still unchanged {limit:g} s after it stopped changing"
        return self._defer(path, signature, "incomplete", reason, since=since, recheck=recheck)

    def _machine_error(self, path: Path, signature: tuple[int, int], reason: str) -> Taken:
        log.error("intake_failed", source=display(path), error=reason)
        self._defer(path, signature, "error", reason, recheck=max(self.config.watch.stability_seconds, 30.0))
        return Taken("retry", message=reason)

    def _intake_error(self, path: Path, from_inbox: bool, exc: Exception) -> Taken:
        """An unexpected error while taking a file in: try again; after a few, set the file aside as failed."""
        error = f"{type(exc).__name__}: {exc}"
        log.error("intake_failed", source=display(path), error=error)
        note = self._notes.get(path, {})
        count = note.get("errors", 0) + 1 if note.get("state") == "error" else 1
        try:
            st = path.stat()
        except OSError:
            self._notes.pop(path, None)
            return Taken("known", message="vanished")
        signature = (st.st_size, st.st_mtime_ns)
        if count < INTAKE_ERROR_LIMIT:
            self._defer(path, signature, "error", f"intake failed ({error}); try {count} of {INTAKE_ERROR_LIMIT}",
                        recheck=max(self.config.watch.stability_seconds, 5.0), errors=count)
            return Taken("retry", message=error)
        self._notes.pop(path, None)
        rejected = RejectedFile(display(path), f"intake failed {count} times: {error}",
                                "This is a bug in glimpsed or its libraries; please report it with the file")
        return self._reject(path, self._rel_dir(path.absolute(), from_inbox), rejected, from_inbox, signature,
                            error_type="IntakeError")

    def result_key(self) -> str:
        """What besides the content decides a result now: the settings and the model files the backends would
        use (stat only). A newly pulled model or a changed setting gives another key, so a re-dropped photo runs
        again instead of being skipped as a duplicate."""
        from ai_modules.identity import result_identity

        return result_identity(self.config.pipeline, self.config.path("models"), self.pipeline_version)["key"]

    def _known(self, path: Path, job: Job) -> Taken:
        """A file whose job exists. An original still here after its job was done or skipped (the share
        was away when it should have been archived) is disposed of now."""
        ended_a_while_ago = job.finished_at is not None and time.time() - job.finished_at > LINGER_SECONDS
        if job.state in ("done", "skipped") and self.config.outbox.after_success != "keep" and ended_a_while_ago:
            what = dispose_original(path, self.config.outbox.after_success, self.config.path("archive"), job.rel_dir,
                                    job.src_size, job.src_mtime_ns)
            self.store.add_event(job.id, "original_handled", None, f"later: {what}")
        return Taken("known", job, f"job {job.id} is {job.state}")

    def _reject(self, path: Path, rel_dir: str, exc: RejectedFile, from_inbox: bool, signature: tuple[int, int],
                error_type: str = "RejectedFile") -> Taken:
        job = self.store.record_outcome_without_run(
            state="failed", source_path=path, source_name=path.name, rel_dir=rel_dir, sha256=None, size=None,
            pipeline_version=self.pipeline_version, config_hash=self.config.pipeline_hash(),
            error_type=error_type, error_message=f"{exc.reason}. {exc.hint}", src_size=signature[0],
            src_mtime_ns=signature[1])
        log.warning("file_rejected", job_id=job.id, source=display(path), reason=exc.reason)
        if from_inbox and os.path.lexists(path):
            try:
                dest = set_aside_failed(path, self.config.path("failed") / rel_dir, {
                    "job_id": job.id, "source": display(path.name), "error_type": error_type,
                    "message": exc.reason, "hint": exc.hint, "failed_at": iso_utc(time.time())})
                self.store.set_aside_path(job.id, dest)
            except OSError as err:  # the job says failed; the file stays, and is not taken again unchanged
                log.error("original_not_moved", job_id=job.id, source=display(path), error=str(err))
                self.store.add_event(job.id, "original_not_moved", None, f"left in the inbox: {err}")
        return Taken("rejected", job, exc.reason)

    def _skip(self, path: Path, rel_dir: str, image: IngestedImage, existing: Job, from_inbox: bool) -> Taken:
        job = self.store.record_outcome_without_run(
            state="skipped", source_path=path, source_name=path.name, rel_dir=rel_dir,
            sha256=image.sha256, size=image.bytes, pipeline_version=self.pipeline_version,
            config_hash=self.config.pipeline_hash(), duplicate_of=existing.id, output_dir=existing.output_dir,
            src_size=image.src_size, src_mtime_ns=image.src_mtime_ns)
        log.info("duplicate_skipped", job_id=job.id, source=display(path), duplicate_of=existing.id,
                 output_dir=existing.output_dir)
        if from_inbox:
            dispose_original(path, self.config.outbox.after_success, self.config.path("archive"), rel_dir,
                             image.src_size, image.src_mtime_ns)
        return Taken("skipped", job, f"same content as job {existing.id}")
