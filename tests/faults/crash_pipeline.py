"""A pipeline entry that pulls the plug: the real pipeline, with `kill -9` of the whole daemon at planned points.

`worker.pipeline: tests.faults.crash_pipeline:CrashPipeline` with GLIMPSED_FAULT_PLAN=<dir> holding `plan.json`, a
list of points `"<stage>:<point>"` taken in order, one per kill:

- `boundary`: the stage is complete (artifacts and done marker written), the next has not started;
  after `export` this is between the last stage and the publish;
- `run`: inside the stage, its models loaded and its computation started;
- `save`: inside the stage, its artifacts written but not its done marker (a half-finished stage dir).

Each kill is appended to `<dir>/kills.log` (fsynced) before SIGKILL goes to the process group — the
daemon and all its workers at once, as a power cut would. `worker.pipeline: …:OomPipeline` instead kills only
the worker, for photos that carry OOM_MARK, every time, as the kernel's OOM killer would.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from ai_modules import pipeline as pipeline_module

_real_run_stage = pipeline_module.Pipeline._run_stage


def _plan_dir() -> Path:
    return Path(os.environ["GLIMPSED_FAULT_PLAN"])


def _next_point() -> str | None:
    if "GLIMPSED_FAULT_PLAN" not in os.environ or not (_plan_dir() / "plan.json").exists():
        return None
    plan = json.loads((_plan_dir() / "plan.json").read_text())
    log = _plan_dir() / "kills.log"
    fired = len(log.read_text().splitlines()) if log.exists() else 0
    return plan[fired] if fired < len(plan) else None


def _kill(point: str, target: str = "group") -> None:
    with open(_plan_dir() / "kills.log", "a") as fh:
        fh.write(f"{point} {os.getpid()}\n")
        fh.flush()
        os.fsync(fh.fileno())
    if target == "group":
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _run_stage(self: Any, stage: Any, stage_dir: Path, fingerprint: str, inputs: Any, hooks: Any) -> Any:
    point = _next_point()
    if point == f"{stage.name}:run":
        real_run = stage.run

        def run(*args: Any, **kwargs: Any) -> Any:
            _kill(point)
            return real_run(*args, **kwargs)

        stage.run = run
    elif point == f"{stage.name}:save":
        real_save = stage.save

        def save(*args: Any, **kwargs: Any) -> Any:
            artifacts = real_save(*args, **kwargs)
            _kill(point)
            return artifacts

        stage.save = save
    return _real_run_stage(self, stage, stage_dir, fingerprint, inputs, hooks)


def _install() -> None:
    """Wrap the pipeline's stage runner, in the worker process only (importing this module changes nothing)."""
    pipeline_module.Pipeline._run_stage = _run_stage


class CrashPipeline:
    """The real pipeline, killed at the planned points (the factory is the class)."""

    def __init__(self, settings, device=None, models_dir=None, vram_budget=None):  # noqa: ANN001 - the factory
        self.inner = pipeline_module.open_pipeline(settings, device, models_dir, vram_budget)

    def run(self, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001 - the pipeline's run
        _install()

        def progress(stage: str, fraction: float, message: str) -> None:
            if on_progress is not None:
                on_progress(stage, fraction, message)
            if fraction >= 1.0 and message.startswith("done in") and _next_point() == f"{stage}:boundary":
                _kill(f"{stage}:boundary")

        return self.inner.run(input_path, workdir, on_progress=progress, should_stop=should_stop)


OOM_MARK = b"GLIMPSED-OOM-TEST"  # bytes after a JPEG's end marker: Pillow ignores them, this pipeline does not


class OomPipeline(CrashPipeline):
    """The real pipeline, except that a photo carrying OOM_MARK kills its worker every time."""

    def run(self, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001
        original = next(Path(workdir, "input").glob("original.*"), None)
        if original is not None and OOM_MARK in original.read_bytes():
            _kill("oom", target="worker")
        return self.inner.run(input_path, workdir, on_progress=on_progress, should_stop=should_stop)
