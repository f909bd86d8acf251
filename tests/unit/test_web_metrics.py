"""`/metrics`' collector over a real store: the figures come from the jobs and events tables at scrape time."""

from __future__ import annotations

import json

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from glimpsed import __version__
from glimpsed.store import JobStore
from glimpsed.web.metrics import StoreCollector


def scrape(db) -> dict[tuple[str, tuple], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(lambda: JobStore(db, migrate=False), "0.5"))
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples}


def test_counts_durations_and_a_result_without_stage_times(tmp_path):
    store = JobStore(tmp_path / "g.db")
    jobs = [store.enqueue(source_path=f"/inbox/{i}.jpg", source_name=f"{i}.jpg", sha256=f"{i}" * 64, size=1,
                          pipeline_version="v", config_hash="h", max_attempts=3, now=100.0 + i) for i in range(4)]
    for job, result in zip(jobs[:2], ('{"stages": [{"name": "fit", "backend": "fit", "duration_s": 3.0}]}',
                                      '{"stages": [{"name": "export", "backend": "fast-test"}]}')):  # no seconds
        claimed = store.claim("me:1", 60, now=200.0, job_id=job.id)
        store.finish(claimed.id, "me:1", "/outbox/x", json.loads(result), now=212.0)
    failed = store.claim("me:1", 60, now=200.0, job_id=jobs[2].id)
    store.fail(failed.id, "me:1", "OSError", "disk", retry_at=300.0)
    values = scrape(tmp_path / "g.db")
    assert values[("glimpsed_jobs", (("state", "done"),))] == 2
    assert values[("glimpsed_jobs", (("state", "queued"),))] == 2
    assert values[("glimpsed_jobs_finished_total", (("outcome", "done"),))] == 2
    assert values[("glimpsed_job_retries_total", ())] == 1
    assert values[("glimpsed_job_duration_seconds_count", ())] == 2
    assert values[("glimpsed_job_duration_seconds_sum", ())] == 24.0
    assert values[("glimpsed_stage_duration_seconds_count", (("backend", "fit"), ("stage", "fit")))] == 1
    assert values[("glimpsed_oldest_queued_job_age_seconds", ())] > 0
    assert values[("glimpsed_build_info", (("pipeline_version", "0.5"), ("version", __version__)))] == 1
