"""What `glimpsed status | jobs | show --json` print and the web API serves: one schema, built here.

Every shape is plain JSON (strings, numbers, lists, dicts): a job as its store row (paths as display
text, the result parsed), the status as the daemons' heartbeats, the queue counts and the running jobs.
"""

from __future__ import annotations

import json
from typing import Any

from glimpsed.names import display
from glimpsed.store import Job, JobStore


def job_dict(job: Job) -> dict[str, Any]:
    """One job as JSON: every column of its row, `source_path`/`aside_path` as text, `result` parsed."""
    data = dict(job.__dict__)
    data.pop("source_raw", None)  # bytes: `source_path` is their display text
    aside = data.pop("aside_raw", None)
    data["aside_path"] = display(aside) if aside else None
    if data.get("result"):
        data["result"] = json.loads(data["result"])
    return data


def status(store: JobStore, running_limit: int = 20) -> dict[str, Any]:
    """``{"daemon": newest heartbeat or None, "daemons": [...], "counts": {state: n}, "running": [job...]}``."""
    daemons = store.daemons()
    return {"daemon": daemons[0] if daemons else None, "daemons": daemons, "counts": store.counts(),
            "running": [job_dict(j) for j in store.jobs("running", limit=running_limit)]}


def jobs(store: JobStore, state: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """Jobs newest first, as `job_dict`s."""
    return [job_dict(j) for j in store.jobs(state, limit, offset=offset)]


def job_detail(store: JobStore, job_id: str) -> dict[str, Any]:
    """``{"job": job_dict, "events": [...]}`` for a job id or unique prefix.

    Raises:
        JobNotFound: no job, or the prefix is not unique.
    """
    job = store.get(job_id)
    return {"job": job_dict(job), "events": store.events(job.id)}
