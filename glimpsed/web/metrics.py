"""`/metrics`: a Prometheus collector that reads the job store at scrape time (prometheus_client).

Nothing is counted in memory, so the figures survive restarts and agree with `glimpsed status`; counters
come from the events table, which only grows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from glimpsed import __version__
from glimpsed.store import JobStore

JOB_BUCKETS = (5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.0, 5.0, 15.0, 30.0, 60.0, 300.0)
OUTCOMES = {"job_done": "done", "job_failed": "failed", "job_cancelled": "cancelled"}


def _histogram(name: str, doc: str, buckets: tuple[float, ...], values: dict[tuple[str, ...], list[float]],
               labels: list[str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for key, seen in sorted(values.items()):
        counts = [(str(b), float(sum(v <= b for v in seen))) for b in buckets] + [("+Inf", float(len(seen)))]
        family.add_metric(list(key), counts, sum_value=float(sum(seen)))
    return family


class StoreCollector(Collector):
    """Jobs by state, finished jobs by outcome, retries, job and stage durations, the oldest queued job's age,
    busy and idle workers, build info.

    Args:
        open_store: opens a store connection for one scrape (closed after).
        pipeline_version: for build info.
    """

    def __init__(self, open_store: Callable[[], JobStore], pipeline_version: str) -> None:
        self.open_store = open_store
        self.pipeline_version = pipeline_version

    def collect(self) -> Iterator[Any]:
        store = self.open_store()
        try:
            yield from self._families(store, time.time())
        finally:
            store.close()

    def _families(self, store: JobStore, now: float) -> Iterator[Any]:
        jobs = GaugeMetricFamily("glimpsed_jobs", "Jobs in the store by state.", labels=["state"])
        counts = store.counts()
        for state, n in counts.items():
            jobs.add_metric([state], n)
        yield jobs
        events = store.event_counts([*OUTCOMES, "job_retry_scheduled"])
        finished = CounterMetricFamily("glimpsed_jobs_finished", "Jobs that ended, by outcome (a retried job "
                                       "counts again when it ends again).", labels=["outcome"])
        for event, outcome in OUTCOMES.items():
            finished.add_metric([outcome], events[event])
        yield finished
        yield CounterMetricFamily("glimpsed_job_retries", "Attempts that failed and were scheduled again.",
                                  value=events["job_retry_scheduled"])
        runs = store.finished_runs()
        stages: dict[tuple[str, ...], list[float]] = {}
        for _, result in runs:                            # a pipeline of one's own may record less: skip it
            for stage in (result or {}).get("stages", []):
                if not stage.get("resumed") and isinstance(stage.get("duration_s"), (int, float)):
                    stages.setdefault((stage.get("name", "?"), stage.get("backend", "")), []).append(
                        stage["duration_s"])
        yield _histogram("glimpsed_job_duration_seconds", "From the start of a job's last attempt to its "
                         "publication (the newest 10,000 done jobs).", JOB_BUCKETS,
                         {(): [seconds for seconds, _ in runs]} if runs else {}, [])
        yield _histogram("glimpsed_stage_duration_seconds", "Seconds each stage ran, by stage and backend (the "
                         "newest 10,000 done jobs; stages resumed from disk left out).", STAGE_BUCKETS, stages,
                         ["stage", "backend"])
        oldest = store.oldest_queued_at()
        yield GaugeMetricFamily("glimpsed_oldest_queued_job_age_seconds", "How long the oldest queued job has "
                                "waited (0: none queued).", value=max(0.0, now - oldest) if oldest else 0.0)
        workers = GaugeMetricFamily("glimpsed_workers", "Workers of the running daemons, busy with a job or idle.",
                                    labels=["state"])
        total = sum(len(d["workers"]) for d in store.daemons(now) if d["fresh"])
        busy = min(counts.get("running", 0), total)
        workers.add_metric(["busy"], busy)
        workers.add_metric(["idle"], total - busy)
        yield workers
        info = InfoMetricFamily("glimpsed_build", "The daemon's version and its pipeline's.")
        info.add_metric([], {"version": __version__, "pipeline_version": self.pipeline_version})
        yield info
