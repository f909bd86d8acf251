"""The job store contract, run against an in-memory and a file database."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from glimpsed.errors import InvalidTransition, JobNotFound
from glimpsed.store import DuplicateJob, JobStore


@pytest.fixture(params=["memory", "file"])
def store(request, tmp_path):
    s = JobStore(":memory:" if request.param == "memory" else tmp_path / "jobs.db")
    yield s
    s.close()


def enqueue(store, name="a.jpg", sha="aa" * 32, **kw):
    args = dict(source_path=f"/inbox/{name}", source_name=name, sha256=sha, size=10, src_size=10,
                src_mtime_ns=1, pipeline_version="v1", config_hash="h", max_attempts=3)
    args.update(kw)
    return store.enqueue(**args)


def test_schema_is_versioned(store):
    assert store.schema_version() == ["m001_jobs_and_events", "m002_raw_names_instances_inbox", "m003_daemon_cluster",
                                     "m004_daemon_web_url"]


def test_enqueue_then_claim_is_fifo(store):
    a = enqueue(store, "a.jpg", "a" * 64, now=1.0)
    b = enqueue(store, "b.jpg", "b" * 64, now=2.0)
    first = store.claim("w1", 60, now=3.0)
    second = store.claim("w2", 60, now=3.0)
    assert (first.id, second.id) == (a.id, b.id)
    assert first.state == "running" and first.lease_owner == "w1" and first.attempts == 1
    assert store.claim("w3", 60, now=3.0) is None


def test_duplicate_content_raises_with_the_existing_job(store):
    a = enqueue(store)
    with pytest.raises(DuplicateJob) as info:
        enqueue(store, "copy.jpg")
    assert info.value.existing.id == a.id
    assert enqueue(store, "copy.jpg", dedupe=False).dedupe_key is None
    assert enqueue(store, "other-version.jpg", pipeline_version="v2").state == "queued"


def test_failed_job_gives_up_its_dedupe_key(store):
    a = enqueue(store)
    store.claim("w", 60)
    store.fail(a.id, "w", "InputError", "bad")
    again = enqueue(store, "again.jpg")
    assert again.state == "queued" and store.get(a.id).dedupe_key is None


def test_retry_backoff_makes_job_due_later(store):
    a = enqueue(store, now=0.0)
    store.claim("w", 60, now=1.0)
    store.fail(a.id, "w", "OSError", "share went away", retry_at=100.0, now=1.0)
    assert store.claim("w", 60, now=50.0) is None
    job = store.claim("w", 60, now=100.0)
    assert job.id == a.id and job.attempts == 2


def test_finish_requires_the_lease(store):
    a = enqueue(store)
    store.claim("w1", 60)
    with pytest.raises(InvalidTransition):
        store.finish(a.id, "someone-else", "/out/a", {})
    done = store.finish(a.id, "w1", "/out/a", {"stages": []})
    assert done.state == "done" and done.output_dir == "/out/a" and done.lease_owner is None


def test_expired_lease_requeues_then_fails_when_attempts_are_spent(store):
    a = enqueue(store, max_attempts=2)
    store.claim("w", 10, now=0.0)
    assert store.requeue_expired(now=5.0) == []
    assert [j.id for j in store.requeue_expired(now=11.0)] == [a.id]
    assert store.get(a.id).state == "queued"
    store.claim("w", 10, now=12.0)
    assert [j.id for j in store.requeue_expired(now=30.0)] == [a.id]
    job = store.get(a.id)
    assert job.state == "failed" and job.error_type == "WorkerLost"


def test_renew_lease_only_for_the_holder(store):
    a = enqueue(store)
    store.claim("w", 10, now=0.0)
    assert store.renew_lease(a.id, "w", 10, now=5.0)
    assert not store.renew_lease(a.id, "x", 10, now=5.0)
    assert store.requeue_expired(now=12.0) == []


def test_recover_dead_local_workers(store):
    a = enqueue(store, "a.jpg", "a" * 64)
    b = enqueue(store, "b.jpg", "b" * 64)
    store.claim("host1:100", 600)
    store.claim("host1:200", 600)
    recovered = store.recover_dead_local("host1", lambda pid: pid == 200)
    assert [j.id for j in recovered] == [a.id]
    assert store.get(b.id).state == "running"


def test_release_does_not_spend_an_attempt(store):
    a = enqueue(store)
    store.claim("w", 60)
    store.release(a.id, "w", "shutting down")
    job = store.get(a.id)
    assert job.state == "queued" and job.attempts == 0


def test_cancel_queued_and_running(store):
    a = enqueue(store, "a.jpg", "a" * 64)
    b = enqueue(store, "b.jpg", "b" * 64)
    assert store.cancel(a.id).state == "cancelled"
    store.claim("w", 60)
    assert store.cancel(b.id).state == "running" and store.cancel_requested(b.id)
    store.mark_cancelled(b.id, "w")
    assert store.get(b.id).state == "cancelled"
    with pytest.raises(InvalidTransition):
        store.cancel(b.id)


def test_retry_needs_saved_input(store, tmp_path):
    (tmp_path / "w" / "input").mkdir(parents=True)
    a = enqueue(store, workdir=str(tmp_path / "w"))
    store.claim("w", 60)
    store.fail(a.id, "w", "RuntimeError", "boom")
    job = store.retry(a.id)
    assert job.state == "queued" and job.attempts == 0 and job.error_type is None
    rejected = store.record_outcome_without_run(state="failed", source_path="/inbox/x.jpg", source_name="x.jpg",
                                                rel_dir="", sha256=None, size=None, pipeline_version="v1",
                                                config_hash="h", error_type="RejectedFile", error_message="empty")
    with pytest.raises(InvalidTransition, match="drop it into the inbox again"):
        store.retry(rejected.id)


def test_skipped_duplicates_are_events_on_both_jobs(store):
    a = enqueue(store)
    dup = store.record_outcome_without_run(state="skipped", source_path="/inbox/b.jpg", source_name="b.jpg",
                                           rel_dir="", sha256=a.sha256, size=10, pipeline_version="v1",
                                           config_hash="h", duplicate_of=a.id, src_size=10, src_mtime_ns=5)
    assert store.counts()["skipped"] == 1
    assert [e["event"] for e in store.events(a.id)] == ["job_queued", "duplicate_skipped"]
    assert store.is_known_file("/inbox/b.jpg", 10, 5) and not store.is_known_file("/inbox/b.jpg", 10, 6)
    assert dup.duplicate_of == a.id


def test_known_files(store):
    a = enqueue(store)
    assert store.is_known_file(a.source_path, 999, 999)  # queued: whatever the share did to it
    store.claim("w", 60)
    store.finish(a.id, "w", "/out", {})
    assert store.is_known_file(a.source_path, 10, 1)
    assert not store.is_known_file(a.source_path, 11, 1)


def test_get_by_prefix_and_missing(store):
    a = enqueue(store)
    assert store.get(a.id[:12]).id == a.id
    with pytest.raises(JobNotFound, match="glimpsed jobs"):
        store.get("nope")


def test_concurrent_claims_never_share_a_job(tmp_path):
    path = tmp_path / "jobs.db"
    setup = JobStore(path)
    for i in range(40):
        enqueue(setup, f"{i}.jpg", f"{i:064x}")
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(owner: str) -> None:
        s = JobStore(path, migrate=False)
        while (job := s.claim(owner, 60)) is not None:
            with lock:
                claimed.append(job.id)
        s.close()

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40


def test_store_uses_wal_and_busy_timeout(tmp_path):
    s = JobStore(tmp_path / "x.db")
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s.db.execute("PRAGMA busy_timeout").fetchone()[0] >= 1000


def test_corrupt_database_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    from glimpsed.errors import StoreError

    with pytest.raises(StoreError, match="cannot open the job store"):
        JobStore(bad)


def test_migration_keeps_older_jobs_findable(tmp_path):
    """A store from before names were kept as bytes: its jobs gain their path's bytes and stay known."""
    import sqlite_utils

    from glimpsed.schema import migrations

    db = sqlite_utils.Database(tmp_path / "old.db")
    migrations.apply(db, stop_before="m002_raw_names_instances_inbox")
    db["jobs"].insert(dict(id="old", source_path="/inbox/chair.jpg", source_name="chair.jpg", pipeline_version="v",
                           config_hash="h", state="queued", max_attempts=3, created_at=0, updated_at=0))
    db.close()
    store = JobStore(tmp_path / "old.db")
    assert store.get("old").source_file == Path("/inbox/chair.jpg")
    assert store.is_known_file("/inbox/chair.jpg", 1, 1)


def test_every_instance_has_its_own_heartbeat(store):
    import os
    import socket

    store.set_daemon_state("running", now=100.0)
    store.db.execute("INSERT INTO daemons (owner, host, pid, state, started_at, heartbeat_at) VALUES"
                     " ('otherhost:42', 'otherhost', 42, 'running', 90, 95)")
    rows = store.daemons(now=101.0)
    assert [r["owner"] for r in rows] == [f"{socket.gethostname()}:{os.getpid()}", "otherhost:42"]
    assert all(r["fresh"] for r in rows)
    assert [r["fresh"] for r in store.daemons(now=140.0)] == [False, False]
