"""A pipeline entry that does no 3D work: tiny output files at once, so the daemon's own costs (intake,
SQLite, publishing, archiving) can be measured and stressed with thousands of photos."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FastResult:
    outputs: dict[str, Path]
    stages: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"pipeline_version": "fast-test", "device": "cpu", "stages": self.stages}


class FastPipeline:
    """`worker.pipeline: tests.faults.fast_pipeline:FastPipeline` (the factory is the class)."""

    def __init__(self, settings, device="cpu", models_dir=None, vram_budget=None):  # noqa: ANN001 - the factory
        self.device = device

    def run(self, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001 - the pipeline's run
        return run(input_path, workdir, on_progress)


def run(input_path, workdir, on_progress=None):  # noqa: ANN001
    out = Path(workdir) / "export"
    out.mkdir(parents=True, exist_ok=True)
    outputs = {}
    for kind in ("ply", "splat", "glb"):
        outputs[kind] = out / f"model.{kind}"
        outputs[kind].write_bytes(Path(input_path).read_bytes()[:64])
    if on_progress is not None:
        on_progress("export", 1.0, "done")
    return FastResult(outputs, [{"name": "export", "backend": "fast-test"}])
