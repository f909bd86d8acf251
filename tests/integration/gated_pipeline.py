"""A pipeline entry for daemon tests: the real pipeline, held at a stage boundary until a gate opens.

`worker.pipeline: tests.integration.gated_pipeline:GatedPipeline` with GLIMPSED_TEST_GATE=<dir> and
GLIMPSED_TEST_GATE_AFTER=<stage>: after that stage is done the worker writes `<dir>/reached`
and waits (still honouring should_stop) until `<dir>/open` exists. Every stage start is
appended to `<dir>/stages.log` so tests can count how often each stage really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ai_modules.pipeline import open_pipeline


class GatedPipeline:
    """`worker.pipeline: tests.integration.gated_pipeline:GatedPipeline`: the real pipeline, held back at a gate."""

    def __init__(self, settings, device=None, models_dir=None, vram_budget=None):  # noqa: ANN001 - the factory
        self.inner = open_pipeline(settings, device, models_dir, vram_budget)

    def run(self, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001 - the pipeline's run
        return run(self.inner, input_path, workdir, on_progress, should_stop)

    def close(self) -> None:
        self.inner.close()


def run(pipeline, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001
    gate = Path(os.environ["GLIMPSED_TEST_GATE"])
    after = os.environ.get("GLIMPSED_TEST_GATE_AFTER", "")
    finished: list[str] = []

    def progress(stage: str, fraction: float, message: str) -> None:
        if fraction == 0.0:
            with open(gate / "stages.log", "a") as fh:
                fh.write(f"{stage} {os.getpid()}\n")
        if fraction >= 1.0:
            finished.append(stage)
        if on_progress is not None:
            on_progress(stage, fraction, message)

    def gated_should_stop() -> bool:
        if finished and finished[-1] == after:
            (gate / "reached").touch()
            while not (gate / "open").exists() and not should_stop():
                time.sleep(0.05)
        return should_stop()

    return pipeline.run(input_path, workdir, on_progress=progress, should_stop=gated_should_stop)
