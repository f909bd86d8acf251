"""JobStore: the SQLite job store, the only module with SQL besides its schema (`schema.py`).

SQLite lives on local disk (never on the NAS), in WAL mode with a busy timeout so the
daemon, its worker processes and the CLI can share it. A job is claimed in one
`UPDATE ... RETURNING`; a claim is a lease that a crashed worker lets expire.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlite_utils

from glimpsed.errors import InvalidTransition, JobNotFound, StoreError
from glimpsed.names import display, from_raw, raw
from glimpsed.schema import migrations

STATES = ("queued", "running", "done", "failed", "cancelled", "skipped")
ACTIVE_STATES = ("queued", "running")
# How long a write waits for another connection's lock (a backup, `sqlite3` in a shell, a long
# transaction of another instance). Above 30 s, as a user's lock of that length is a known case;
# below the unit's WatchdogSec (120 s), so a store held for longer still restarts a stuck daemon.
BUSY_TIMEOUT_MS = 90_000
HEARTBEAT_FRESH_SECONDS = 30.0  # a daemon whose heartbeat is older than this is not running

@dataclass(frozen=True)
class Job:
    """One row of `jobs`. Times are Unix seconds."""

    id: str
    source_path: str
    source_name: str
    rel_dir: str
    tags: str
    sha256: str | None
    bytes: int | None
    src_size: int | None
    src_mtime_ns: int | None
    pipeline_version: str
    config_hash: str
    dedupe_key: str | None
    duplicate_of: str | None
    state: str
    stage: str | None
    progress: float | None
    progress_message: str | None
    attempts: int
    max_attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires_at: float | None
    cancel_requested: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    updated_at: float
    error_type: str | None
    error_message: str | None
    workdir: str | None
    output_dir: str | None
    result: str | None
    source_raw: bytes | None = None
    aside_raw: bytes | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})

    @property
    def source_file(self) -> Path:
        """The original's path with its exact bytes (`source_path` is only its display text)."""
        return from_raw(self.source_raw) if self.source_raw else Path(self.source_path)

    @property
    def aside_file(self) -> Path | None:
        """Where the original was moved when the job failed (in `failed/`), if it was."""
        return from_raw(self.aside_raw) if self.aside_raw else None

    @property
    def tag_list(self) -> list[str]:
        return json.loads(self.tags)


def owner_id() -> str:
    """Lease owner of this process: host:pid, so a restart can tell its own dead workers."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobStore:
    """All reads and writes of jobs, events and the daemon's heartbeat.

    Args:
        path: the SQLite file, or ":memory:".
        migrate: apply pending schema migrations (the daemon and the CLI do; worker processes don't).
    """

    def __init__(self, path: Path | str, migrate: bool = True) -> None:
        self.path = str(path)
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if self.path != ":memory:":
                self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            if migrate:
                migrations.apply(self.db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open the job store {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that it waits on busy_timeout
        instead of failing when a read would have to be upgraded."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    def schema_version(self) -> list[str]:
        """Names of the applied migrations, oldest first."""
        return [m.name for m in migrations.applied(self.db)]

    # -- writing jobs -------------------------------------------------------------------

    def enqueue(self, *, source_path: str, source_name: str, sha256: str | None, size: int | None,
                src_size: int | None = None, src_mtime_ns: int | None = None, pipeline_version: str,
                config_hash: str, max_attempts: int, rel_dir: str = "", tags: list[str] | None = None,
                dedupe: bool = True, job_id: str | None = None, workdir: str | None = None,
                identity: str | None = None, now: float | None = None) -> Job:
        """Add a queued job. With `dedupe`, a second job for the same content, pipeline version and `identity`
        (what else decides the result: settings, model files; `ai_modules.identity.result_identity`) raises
        :class:`DuplicateJob` carrying the existing job, unless that one failed or was cancelled (then it
        gives up its key and the new job proceeds)."""
        now = time.time() if now is None else now
        job_id = job_id or new_job_id()
        key = ":".join(filter(None, (sha256, pipeline_version, identity))) if dedupe and sha256 else None
        row = dict(id=job_id, source_path=display(source_path), source_raw=raw(source_path),
                   source_name=display(source_name), rel_dir=display(rel_dir),
                   tags=json.dumps([display(t) for t in tags or []]), sha256=sha256, bytes=size, src_size=src_size,
                   src_mtime_ns=src_mtime_ns, pipeline_version=pipeline_version, config_hash=config_hash,
                   dedupe_key=key, state="queued", max_attempts=max_attempts, created_at=now, updated_at=now,
                   workdir=workdir)
        with self._write():
            if key is not None:
                existing = self._one("SELECT * FROM jobs WHERE dedupe_key = ?", [key])
                if existing is not None and existing.state in ("failed", "cancelled"):
                    self.db.execute("UPDATE jobs SET dedupe_key = NULL WHERE id = ?", [existing.id])
                elif existing is not None:
                    raise DuplicateJob(existing)
            self.db["jobs"].insert(row)
            self._event(job_id, "job_queued", None, f"queued {source_name}", {"sha256": sha256}, now)
        return self.get(job_id)

    def record_outcome_without_run(self, *, state: str, source_path: str, source_name: str, rel_dir: str,
                                   sha256: str | None, size: int | None, pipeline_version: str, config_hash: str,
                                   error_type: str | None = None, error_message: str | None = None,
                                   duplicate_of: str | None = None, output_dir: str | None = None,
                                   src_size: int | None = None, src_mtime_ns: int | None = None,
                                   now: float | None = None) -> Job:
        """Record a file that never ran: rejected at ingest (`failed`) or a duplicate (`skipped`)."""
        if state not in ("failed", "skipped"):
            raise ValueError(f"`state` must be failed or skipped, got {state!r}")
        now = time.time() if now is None else now
        job_id = new_job_id()
        with self._write():
            self.db["jobs"].insert(dict(
                id=job_id, source_path=display(source_path), source_raw=raw(source_path),
                source_name=display(source_name), rel_dir=display(rel_dir), sha256=sha256,
                bytes=size, src_size=src_size, src_mtime_ns=src_mtime_ns, pipeline_version=pipeline_version,
                config_hash=config_hash, state=state,
                max_attempts=0, created_at=now, updated_at=now, finished_at=now, error_type=error_type,
                error_message=error_message, duplicate_of=duplicate_of, output_dir=output_dir))
            if state == "skipped":
                self._event(job_id, "duplicate_skipped", None, f"{source_name} is a duplicate of job {duplicate_of}",
                            {"duplicate_of": duplicate_of}, now)
                self._event(duplicate_of, "duplicate_skipped", None, f"{source_name} (job {job_id}) had the same"
                            " content and was not recomputed", {"job_id": job_id}, now)
            else:
                self._event(job_id, "file_rejected", None, error_message, {"error_type": error_type}, now)
        return self.get(job_id)

    def claim(self, owner: str, lease_seconds: float, now: float | None = None,
              job_id: str | None = None) -> Job | None:
        """Take the oldest due queued job (or `job_id`) in one statement; None when there is none."""
        now = time.time() if now is None else now
        pick = "id = ?" if job_id else "id = (SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ?" \
                                           " ORDER BY next_attempt_at, created_at LIMIT 1)"
        args: list[Any] = [owner, now + lease_seconds, now, now, job_id if job_id else now]
        cursor = self.db.execute(
            "UPDATE jobs SET state = 'running', lease_owner = ?, lease_expires_at = ?, attempts = attempts + 1,"
            " started_at = ?, updated_at = ?, error_type = NULL, error_message = NULL"
            f" WHERE state = 'queued' AND {pick} RETURNING *", args)
        rows = cursor.fetchall()  # drain it: an unfinished RETURNING statement keeps the write lock
        if not rows:
            return None
        job = Job.from_row(dict(zip([c[0] for c in cursor.description], rows[0])))
        self.add_event(job.id, "job_claimed", None, f"attempt {job.attempts} of {job.max_attempts} by {owner}",
                       now=now)
        return job

    def renew_lease(self, job_id: str, owner: str, lease_seconds: float, now: float | None = None) -> bool:
        """Extend a running job's lease; False when this owner no longer holds it."""
        now = time.time() if now is None else now
        cur = self.db.execute(
            "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
            [now + lease_seconds, job_id, owner])
        return cur.rowcount == 1

    def set_progress(self, job_id: str, stage: str, fraction: float, message: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self.db.execute("UPDATE jobs SET stage = ?, progress = ?, progress_message = ?, updated_at = ? WHERE id = ?",
                        [stage, fraction, message, now, job_id])

    def set_output_dir(self, job_id: str, output_dir: str) -> None:
        """Remember where a job publishes before the rename, so a crash mid-publish is not published twice."""
        self.db.execute("UPDATE jobs SET output_dir = ? WHERE id = ?", [output_dir, job_id])

    def finish(self, job_id: str, owner: str, output_dir: str, result: dict[str, Any],
               now: float | None = None) -> Job:
        """Mark a running job done."""
        now = time.time() if now is None else now
        self._transition(job_id, owner, "done", now, output_dir=output_dir, result=json.dumps(result),
                         progress=1.0, progress_message="published")
        self.add_event(job_id, "job_done", None, f"published to {output_dir}", now=now)
        return self.get(job_id)

    def fail(self, job_id: str, owner: str, error_type: str, message: str, retry_at: float | None = None,
             stage: str | None = None, now: float | None = None) -> Job:
        """Record an error: requeue for `retry_at`, or mark the job failed when it is None."""
        now = time.time() if now is None else now
        message = display(message)
        if retry_at is None:
            self._transition(job_id, owner, "failed", now, error_type=error_type, error_message=message)
            self.add_event(job_id, "job_failed", stage, f"{error_type}: {message}", now=now)
        else:
            self._transition(job_id, owner, "queued", now, error_type=error_type, error_message=message,
                             next_attempt_at=retry_at, finished_at=None)
            self.add_event(job_id, "job_retry_scheduled", stage, f"{error_type}: {message}; retry in"
                           f" {retry_at - now:.0f} s", now=now)
        return self.get(job_id)

    def release(self, job_id: str, owner: str, reason: str, retry_at: float | None = None,
                event: str = "job_interrupted", now: float | None = None) -> None:
        """Put a running job back in the queue without spending an attempt: a shutdown, or a fault of the
        machine rather than the job (outbox unreachable, a disk full); `retry_at` delays the next claim."""
        now = time.time() if now is None else now
        self._transition(job_id, owner, "queued", now, finished_at=None, attempts_delta=-1,
                         next_attempt_at=retry_at or 0)
        self.add_event(job_id, event, None, reason, now=now)

    def mark_cancelled(self, job_id: str, owner: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        self._transition(job_id, owner, "cancelled", now)
        self.add_event(job_id, "job_cancelled", None, "stopped at a stage boundary", now=now)

    def _transition(self, job_id: str, owner: str, state: str, now: float, attempts_delta: int = 0,
                    **columns: Any) -> None:
        sets = {"state": state, "lease_owner": None, "lease_expires_at": None, "updated_at": now,
                "finished_at": now, **columns}
        assignments = ", ".join(f"{k} = ?" for k in sets)
        cur = self.db.execute(
            f"UPDATE jobs SET {assignments}, attempts = attempts + ? WHERE id = ? AND state = 'running'"
            " AND lease_owner = ?", [*sets.values(), attempts_delta, job_id, owner])
        if cur.rowcount != 1:
            raise InvalidTransition(f"job {job_id} is not running under {owner}; its lease was lost")

    # -- user actions -------------------------------------------------------------------

    def cancel(self, job_id: str, now: float | None = None) -> Job:
        """Cancel a queued job now, or ask a running one to stop at its next stage boundary."""
        now = time.time() if now is None else now
        job = self.get(job_id)
        with self._write():
            if job.state == "queued":
                self.db.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?,"
                                " dedupe_key = NULL WHERE id = ? AND state = 'queued'", [now, now, job.id])
                self._event(job.id, "job_cancelled", None, "cancelled while queued", None, now)
            elif job.state == "running":
                self.db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", [now, job.id])
                self._event(job.id, "cancel_requested", job.stage, "will stop at the next stage boundary", None, now)
            else:
                raise InvalidTransition(f"job {job.id} is {job.state}; only queued or running jobs can be cancelled")
        return self.get(job.id)

    def retry(self, job_id: str, now: float | None = None) -> Job:
        """Queue a failed or cancelled job again with fresh attempts."""
        now = time.time() if now is None else now
        job = self.get(job_id)
        if job.state not in ("failed", "cancelled"):
            raise InvalidTransition(f"job {job.id} is {job.state}; only failed or cancelled jobs can be retried")
        if not job.workdir or not (Path(job.workdir) / "input").is_dir():
            raise InvalidTransition(f"job {job.id} has no saved input (it was rejected at intake);"
                                    " fix the file and drop it into the inbox again")
        with self._write():
            self.db.execute("UPDATE jobs SET state = 'queued', attempts = 0, next_attempt_at = 0, cancel_requested = 0,"
                            " error_type = NULL, error_message = NULL, finished_at = NULL, updated_at = ?"
                            " WHERE id = ?", [now, job.id])
            self._event(job.id, "job_retried", None, "queued again by the user", None, now)
        return self.get(job.id)

    # -- recovery -----------------------------------------------------------------------

    def requeue_expired(self, backoff: float = 0.0, now: float | None = None) -> list[Job]:
        """Requeue running jobs whose lease expired (their worker died); fail those out of attempts.

        Returns the jobs recovered, in their new state: a `failed` one still has its original where it was,
        and the caller sets it aside. `backoff` delays the next claim, so a photo that kills its worker
        does not do so in a tight loop."""
        now = time.time() if now is None else now
        rows = self.db.execute("SELECT id, lease_owner, attempts, max_attempts FROM jobs WHERE state = 'running'"
                               " AND lease_expires_at < ?", [now]).fetchall()
        return [job for job_id, owner, attempts, max_attempts in rows
                if (job := self._recover(job_id, owner, attempts, max_attempts, "lease expired", backoff, now))]

    def recover_dead_local(self, host: str, is_alive: Any, backoff: float = 0.0,
                           now: float | None = None) -> list[Job]:
        """Requeue (or fail, see :meth:`requeue_expired`) running jobs leased by processes of this host
        that no longer exist: a crash, `kill -9`, the OOM killer."""
        now = time.time() if now is None else now
        rows = self.db.execute("SELECT id, lease_owner, attempts, max_attempts FROM jobs WHERE state = 'running'"
                               " AND lease_owner LIKE ?", [f"{host}:%"]).fetchall()
        recovered = []
        for job_id, owner, attempts, max_attempts in rows:
            pid = int(owner.rsplit(":", 1)[1])
            if not is_alive(pid) and (job := self._recover(job_id, owner, attempts, max_attempts,
                                                           f"worker {owner} is gone", backoff, now)):
                recovered.append(job)
        return recovered

    def _recover(self, job_id: str, owner: str, attempts: int, max_attempts: int, why: str, backoff: float,
                 now: float) -> Job | None:
        if attempts >= max_attempts:
            message = f"{why} during attempt {attempts} of {max_attempts} (the worker crashed each time)"
            cur = self.db.execute("UPDATE jobs SET state = 'failed', error_type = 'WorkerLost', error_message = ?,"
                                  " lease_owner = NULL, finished_at = ?, updated_at = ? WHERE id = ? AND"
                                  " lease_owner = ? AND state = 'running'", [message, now, now, job_id, owner])
            event = "job_failed"
        else:
            delay = backoff * 2 ** max(attempts - 1, 0)
            message = f"{why}; requeued" + (f", next attempt in {delay:.0f} s" if delay else "")
            cur = self.db.execute("UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,"
                                  " next_attempt_at = ?, updated_at = ? WHERE id = ? AND lease_owner = ? AND"
                                  " state = 'running'", [now + delay, now, job_id, owner])
            event = "job_requeued"
        if cur.rowcount != 1:
            return None
        self.add_event(job_id, event, None, message, now=now)
        return self.get(job_id)

    # -- reading ------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """A job by id, or by a unique prefix of at least 4 characters."""
        job = self._one("SELECT * FROM jobs WHERE id = ?", [job_id])
        if job is None and len(job_id) >= 4:
            rows = list(self.db.query("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", [f"{job_id}%"]))
            if len(rows) == 1:
                job = Job.from_row(rows[0])
        if job is None:
            raise JobNotFound(job_id)
        return job

    def jobs(self, state: str | None = None, limit: int = 50, offset: int = 0) -> list[Job]:
        """Newest first, optionally only one state; `offset` jobs skipped (paging)."""
        where, args = ("WHERE state = ?", [state]) if state else ("", [])
        return [Job.from_row(r) for r in self.db.query(
            f"SELECT * FROM jobs {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
            [*args, limit, offset])]

    def event_counts(self, events: Sequence[str]) -> dict[str, int]:
        """How many events of each name the store holds (for counters: events are only ever added)."""
        counts = dict.fromkeys(events, 0)
        marks = ", ".join("?" * len(events))
        for event, n in self.db.execute(
                f"SELECT event, count(*) FROM events WHERE event IN ({marks}) GROUP BY event", list(events)):
            counts[event] = n
        return counts

    def finished_runs(self, limit: int = 10_000) -> list[tuple[float, dict[str, Any] | None]]:
        """The newest `limit` done jobs: (seconds from the start of their last attempt to done, result)."""
        return [(r["finished_at"] - r["started_at"], json.loads(r["result"]) if r["result"] else None)
                for r in self.db.query("SELECT started_at, finished_at, result FROM jobs WHERE state = 'done'"
                                       " AND started_at IS NOT NULL ORDER BY finished_at DESC LIMIT ?", [limit])]

    def oldest_queued_at(self) -> float | None:
        """When the oldest queued job was queued (None: the queue is empty)."""
        return self.db.execute("SELECT min(created_at) FROM jobs WHERE state = 'queued'").fetchone()[0]

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for state, n in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall():
            counts[state] = n
        return counts

    def known_job_for_file(self, source_path: str | os.PathLike[str], size: int, mtime_ns: int) -> Job | None:
        """The job that makes an inbox file no new work: one queued or running for it, or one that already
        ended this very version of it (same size and mtime: done, skipped, or failed with the original left
        in the inbox because it could not be moved); None when the file is new work."""
        return self._one(
            "SELECT * FROM jobs WHERE source_raw = ? AND"
            " (state IN ('queued','running') OR (src_size = ? AND src_mtime_ns = ? AND (state IN ('done','skipped')"
            " OR aside_raw IS NULL)))"
            " ORDER BY state IN ('queued','running') DESC, created_at DESC LIMIT 1",
            [raw(source_path), size, mtime_ns])

    def is_known_file(self, source_path: str | os.PathLike[str], size: int, mtime_ns: int) -> bool:
        """True when an inbox file must not become a new job (see :meth:`known_job_for_file`)."""
        return self.known_job_for_file(source_path, size, mtime_ns) is not None

    def set_aside_path(self, job_id: str, path: Path | None) -> None:
        """Remember where a failed job's original went (`failed/`), so a successful retry can clear it."""
        self.db.execute("UPDATE jobs SET aside_raw = ? WHERE id = ?", [raw(path) if path else None, job_id])

    def cancel_requested(self, job_id: str) -> bool:
        row = self.db.execute("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id]).fetchone()
        return bool(row and row[0])

    def events(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.db.query("SELECT * FROM events WHERE job_id = ? ORDER BY id", [job_id]))

    def add_event(self, job_id: str | None, event: str, stage: str | None, message: str | None,
                  data: dict[str, Any] | None = None, now: float | None = None) -> None:
        self._event(job_id, event, stage, message, data, time.time() if now is None else now)

    def _event(self, job_id: str | None, event: str, stage: str | None, message: str | None,
               data: dict[str, Any] | None, now: float) -> None:
        message = None if message is None else display(message)  # paths in messages may hold non-UTF-8 bytes
        self.db["events"].insert(dict(job_id=job_id, at=now, event=event, stage=stage, message=message,
                                      data=json.dumps(data) if data else None))

    def _one(self, sql: str, args: list[Any]) -> Job | None:
        rows = list(self.db.query(sql, args))
        return Job.from_row(rows[0]) if rows else None

    # -- the daemon's heartbeat ----------------------------------------------------------

    def set_daemon_state(self, state: str, message: str = "", watch_mode: str = "", started_at: float | None = None,
                         workers: list[str] | None = None, inbox: dict[str, Any] | None = None,
                         cluster: dict[str, Any] | None = None, web_url: str | None = None,
                         now: float | None = None) -> None:
        """This daemon instance's heartbeat (one row per host:pid, so instances sharing a store all show)."""
        now = time.time() if now is None else now
        self.db.execute("DELETE FROM daemons WHERE heartbeat_at < ?", [now - 7 * 86400])  # long-gone instances
        self.db["daemons"].upsert(dict(
            owner=owner_id(), host=socket.gethostname(), pid=os.getpid(), state=state, message=message,
            watch_mode=watch_mode, workers=json.dumps(workers or []), inbox=json.dumps(inbox or {}),
            cluster=json.dumps(cluster) if cluster else None, web_url=web_url,
            started_at=started_at or now, heartbeat_at=now), pk="owner")

    def daemons(self, now: float | None = None) -> list[dict[str, Any]]:
        """Every instance's last heartbeat, newest first; `fresh` says whether it is running now."""
        now = time.time() if now is None else now
        rows = list(self.db.query("SELECT * FROM daemons ORDER BY heartbeat_at DESC"))
        for row in rows:
            row["workers"] = json.loads(row["workers"] or "[]")
            row["inbox"] = json.loads(row["inbox"] or "{}")
            row["cluster"] = json.loads(row["cluster"]) if row.get("cluster") else None
            row["fresh"] = row["state"] in ("running", "paused") and now - row["heartbeat_at"] <= HEARTBEAT_FRESH_SECONDS
        return rows

    def daemon_state(self) -> dict[str, Any] | None:
        """The most recent instance's heartbeat row, or None when no daemon ever ran on this store."""
        rows = self.daemons()
        return rows[0] if rows else None



class DuplicateJob(StoreError):
    """A job for the same content and pipeline version exists; `existing` is that job."""

    def __init__(self, existing: Job) -> None:
        self.existing = existing
        super().__init__(f"same content as job {existing.id} ({existing.source_name}, {existing.state})")


def new_job_id() -> str:
    """Short, sortable-enough, unique: date plus 8 random hex digits."""
    return time.strftime("%Y%m%d") + "-" + uuid.uuid4().hex[:8]
