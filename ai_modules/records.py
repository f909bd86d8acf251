"""What the pipeline reports: one `StageRecord` per stage and a `PipelineResult`.

Standard library only, so the daemon can read `done.json` files and results
without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageRecord:
    """What one stage did; stored as ``workdir/<stage>/done.json``.

    Attributes:
        name: the stage, e.g. "segment".
        backend: the backend that ran, e.g. "alpha_grabcut".
        reason: why this backend was chosen.
        model_files: one dict per model file used: ``{"name", "path", "bytes", "mtime_ns", "sha256"}``; empty
            for embedded backends.
        duration_s: wall-clock seconds of the stage (of the original run when resumed), model loading included.
        load_s: seconds of it spent reading model files (0.0 when the worker had them loaded already).
        peak_rss_mb: the process's resident-memory high-water mark during the stage, MiB (Linux; elsewhere
            since the process started).
        peak_vram_mb: peak memory torch allocated on the CUDA device during the stage, MiB (None on the CPU).
        low_memory: whether it ran in its low-memory form (`pipeline.low_memory`, or after running out of memory).
        low_memory_retry: the out-of-memory error that made it retry in that form, else None.
        residency: models moved between the GPU and CPU memory for this stage, e.g. "dpt moved to cpu ...".
        metrics: stage-specific numbers, e.g. ``{"mask_area_fraction": 0.31}``.
        resumed: True when this run loaded the stage from disk instead of running it.
        artifacts: kind -> file name inside the stage directory, e.g. ``{"cutout": "cutout.png"}``.
    """

    name: str
    backend: str
    reason: str
    model_files: list[dict[str, Any]] = field(default_factory=list)
    duration_s: float = 0.0
    load_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_vram_mb: float | None = None
    low_memory: bool = False
    low_memory_retry: str | None = None
    residency: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    artifacts: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageRecord:
        """Build a record from `to_dict` output; unknown keys are ignored.

        Raises:
            KeyError: a required key (name, backend, reason) is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class PipelineResult:
    """What `ai_modules.pipeline.run` returns.

    Attributes:
        outputs: kind -> file, e.g. ``{"ply": workdir/export/model.ply, "splat": ..., "preview": ...}``.
        stages: one record per stage, in pipeline order.
        pipeline_version: `PIPELINE_VERSION` of the code that produced the outputs.
        device: the torch device the stages ran on ("cpu", "cuda", ...).
        settings: the effective settings as a plain nested dict.
    """

    outputs: dict[str, Path]
    stages: list[StageRecord]
    pipeline_version: str
    device: str
    settings: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineResult:
        """Rebuild from `to_dict` (e.g. a result that came from another host)."""
        return cls(outputs={k: Path(v) for k, v in data["outputs"].items()},
                   stages=[StageRecord.from_dict(s) for s in data["stages"]],
                   pipeline_version=data["pipeline_version"], device=data["device"],
                   settings=data.get("settings", {}))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (paths as strings)."""
        return {
            "outputs": {k: str(v) for k, v in self.outputs.items()},
            "stages": [s.to_dict() for s in self.stages],
            "pipeline_version": self.pipeline_version,
            "device": self.device,
            "settings": self.settings,
        }
