"""The job store's schema: sqlite-utils migrations, applied in order by `JobStore` (the daemon and the CLI).

Each migration is named for what it adds and never changes once released; a new column or table is a new
migration at the end. With `store.py`, the only SQL in glimpsed.
"""

from __future__ import annotations

import sqlite_utils
from sqlite_utils import Migrations

migrations = Migrations("glimpsed")


@migrations()
def m001_jobs_and_events(db: sqlite_utils.Database) -> None:
    db.execute(
        """
        CREATE TABLE jobs (
            id TEXT PRIMARY KEY,
            source_path TEXT NOT NULL,
            source_name TEXT NOT NULL,
            rel_dir TEXT NOT NULL DEFAULT '',
            tags TEXT NOT NULL DEFAULT '[]',
            sha256 TEXT,
            bytes INTEGER,
            src_size INTEGER,
            src_mtime_ns INTEGER,
            pipeline_version TEXT NOT NULL,
            config_hash TEXT NOT NULL,
            dedupe_key TEXT UNIQUE,
            duplicate_of TEXT,
            state TEXT NOT NULL CHECK (state IN ('queued','running','done','failed','cancelled','skipped')),
            stage TEXT,
            progress REAL,
            progress_message TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            next_attempt_at REAL NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires_at REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            updated_at REAL NOT NULL,
            error_type TEXT,
            error_message TEXT,
            workdir TEXT,
            output_dir TEXT,
            result TEXT
        )
        """
    )
    db.execute("CREATE INDEX jobs_state ON jobs (state, next_attempt_at, created_at)")
    db.execute("CREATE INDEX jobs_source ON jobs (source_path, state)")
    db.execute(
        """
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            job_id TEXT,
            at REAL NOT NULL,
            event TEXT NOT NULL,
            stage TEXT,
            message TEXT,
            data TEXT
        )
        """
    )
    db.execute("CREATE INDEX events_job ON events (job_id, id)")
    db.execute(
        """
        CREATE TABLE daemon (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER,
            host TEXT,
            state TEXT,
            message TEXT,
            watch_mode TEXT,
            started_at REAL,
            heartbeat_at REAL
        )
        """
    )


@migrations()
def m002_raw_names_instances_inbox(db: sqlite_utils.Database) -> None:
    """Names as bytes (non-UTF-8 names on SMB shares), one heartbeat row per daemon instance, and what
    intake is waiting for or ignoring in the inbox (so `status` can say it)."""
    db.execute("ALTER TABLE jobs ADD COLUMN source_raw BLOB")
    db.execute("UPDATE jobs SET source_raw = CAST(source_path AS BLOB)")  # older rows: their UTF-8 bytes
    db.execute("ALTER TABLE jobs ADD COLUMN aside_raw BLOB")
    db.execute("CREATE INDEX jobs_source_raw ON jobs (source_raw, state)")
    db.execute(
        """
        CREATE TABLE daemons (
            owner TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            state TEXT NOT NULL,
            message TEXT,
            watch_mode TEXT,
            workers TEXT,
            inbox TEXT,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL
        )
        """
    )
    db.execute("DROP TABLE daemon")


@migrations()
def m003_daemon_cluster(db: sqlite_utils.Database) -> None:
    """What a daemon's remote workers run on (`worker.backend: ray`: nodes, GPUs, actors), for `status`."""
    db.execute("ALTER TABLE daemons ADD COLUMN cluster TEXT")


@migrations()
def m004_daemon_web_url(db: sqlite_utils.Database) -> None:
    """Where a daemon serves its web page (`status` says it; `web.port: 0` picks any free port)."""
    db.execute("ALTER TABLE daemons ADD COLUMN web_url TEXT")
