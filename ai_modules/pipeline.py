"""The one entry the daemon calls: `run(input_path, settings, workdir, ...)`.

Stages run in `STAGES` order; each writes its artifacts into
``workdir/<stage>/`` (every file to a temporary name, then renamed) and, last,
``workdir/<stage>/done.json`` holding its `StageRecord` plus a fingerprint of
everything its outputs depend on (pipeline version, backend, the stage's
settings, the input file's sha256, the previous stage's fingerprint).

On a later call with the same workdir the leading stages whose done.json
matches are not re-run (their record comes back with ``resumed=True``); from
the first stage that has to run, every later stage runs too. A stage directory
without a matching done.json is wiped first.

Importing this module does not import torch; `run` imports the stages lazily.

Example:
    >>> from ai_modules.pipeline import run
    >>> result = run(Path("mug.jpg"), {"device": "cpu"}, Path("work/job-1"))   # doctest: +SKIP
    >>> result.outputs["ply"]                                                  # doctest: +SKIP
    PosixPath('work/job-1/export/model.ply')
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .base import Stage, StageHooks, resolve_backend
from .errors import AIModuleError, FormatError, InputError, PipelineStopped, SettingsError, StageFailed
from .fileio import sha256_file, write_json
from .models import resolve_models_dir
from .records import PipelineResult, StageRecord
from .settings import STAGE_NAMES, PipelineSettings, parse_settings

PIPELINE_VERSION: str = "0.3"
STAGES: tuple[str, ...] = STAGE_NAMES
DONE = "done.json"

ProgressFn = Callable[[str, float, str], None]
log = logging.getLogger(__name__)


def run(input_path: Path, settings: Mapping[str, Any] | PipelineSettings, workdir: Path,
        on_progress: ProgressFn | None = None,
        should_stop: Callable[[], bool] | None = None, models_dir: Path | None = None) -> PipelineResult:
    """Run (or resume) the pipeline on one photo.

    Args:
        input_path: a PNG/JPEG on local disk (RGB, RGBA, L, LA or P), EXIF-oriented.
        settings: the `pipeline:` section (validated here) or parsed `PipelineSettings`.
        workdir: the job's work directory; created if missing.
        on_progress: called as ``(stage, fraction 0..1 of that stage, message)``,
            at least at each stage's start (0.0) and end (1.0); a resumed stage
            reports only its end ("resumed from disk"), so 0.0 means "really runs".
        should_stop: checked before each stage; True raises `PipelineStopped`.
        models_dir: where learned backends' model files are (`models.resolve_models_dir` when None);
            `auto` backends use them when present.

    Returns:
        The outputs (kind -> file), the stage records, the version and the device.

    Raises:
        SettingsError: invalid settings, or a device that is not available.
        InputError: the photo cannot be used (e.g. `NoObjectFound`); never worth retrying.
        PipelineStopped: `should_stop()` returned True; a later call resumes.
        OSError, MemoryError, torch.cuda.OutOfMemoryError: propagate unchanged (worth a retry).
        StageFailed: any other unexpected error in a stage (the original is ``__cause__``).
    """
    parsed = parse_settings(settings)
    device = resolve_device(parsed.device)
    return Pipeline(parsed, device, resolve_models_dir(models_dir)).run(Path(input_path), Path(workdir), on_progress,
                                                                        should_stop)


def resolve_device(requested: str) -> str:
    """Map `pipeline.device` to a torch device string ("auto" -> "cuda" if available else "cpu").

    Raises:
        SettingsError: a CUDA device was requested but none is available.
    """
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise SettingsError("pipeline.device", "a CUDA device present on this machine (or `cpu`/`auto`)",
                                requested)
    return requested


def peak_rss_mb() -> float:
    """The process's resident-memory high-water mark, MiB, since the last `reset_peak_memory` (Linux: VmHWM;
    elsewhere the whole process's; 0.0 where the platform cannot tell)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # not on Linux/macOS
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def reset_peak_memory(device: str) -> None:
    """Start measuring peak memory afresh: Linux's VmHWM (writing 5 to clear_refs) and CUDA's peak counter."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole process
        pass
    if device.startswith("cuda"):
        import torch
        torch.cuda.reset_peak_memory_stats(device)


def peak_vram_mb(device: str) -> float | None:
    """Peak memory allocated by torch on a CUDA device since `reset_peak_memory`, MiB (None on the CPU)."""
    if not device.startswith("cuda"):
        return None
    import torch
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def _is_device_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


class Pipeline:
    """Drives the stages in order with resume, progress and stop checks.

    Pipeline facts are class data: the stage order and, per stage, which
    earlier stages' outputs it reads.
    """

    stages: tuple[str, ...] = STAGES
    needs: dict[str, tuple[str, ...]] = {
        "segment": (), "multiview": ("segment",), "depth": ("multiview",), "reconstruct": ("multiview", "depth"),
        "enhance": ("multiview", "reconstruct"), "refine": ("reconstruct", "enhance"), "export": ("refine",)}

    def __init__(self, settings: PipelineSettings, device: str, models_dir: Path | None = None) -> None:
        self.settings = settings
        self.device = device
        self.models_dir = models_dir

    def build(self, name: str) -> Stage:
        """Instantiate stage `name` (imports it, and with it torch/numpy, only now)."""
        s, models = self.settings, self.models_dir
        if name == "segment":
            from .segment.stage import SegmentStage
            return SegmentStage(s.segment, models)
        if name == "multiview":
            from .multiview.stage import MultiviewStage
            return MultiviewStage(s.multiview, models)
        if name == "depth":
            from .depth.stage import DepthStage
            return DepthStage(s.depth, models, self.unused(name))
        if name == "reconstruct":
            from .reconstruct.stage import ReconstructStage
            return ReconstructStage(s.reconstruct, models)
        if name == "enhance":
            from .enhance.stage import EnhanceStage
            return EnhanceStage(s.enhance, models, self.unused(name))
        if name == "refine":
            from .refine.stage import RefineStage
            return RefineStage(s.refine, models)
        from .export.stage import ExportStage
        return ExportStage(s.export, models)

    def unused(self, name: str) -> str | None:
        """Why stage `name`'s outputs would go unused with these settings (its `auto` then means `none`), or None."""
        def backend(stage: str) -> str:
            return resolve_backend(stage, getattr(self.settings, stage).backend, self.models_dir)[0]

        if name == "depth" and backend("multiview") == "relief":
            return ("the relief's views carry its own geometry, so reconstruct starts from the relief without a "
                    "depth term")
        if name == "enhance" and backend("refine") == "none":
            return "refine.backend is none, so nothing would use enhanced views"
        return None

    def inputs_for(self, name: str, input_path: Path, done: dict[str, Any]) -> Any:
        """Build stage `name`'s inputs from the input file and earlier outputs."""
        if name == "segment":
            from .segment.stage import SegmentInputs
            return SegmentInputs(path=input_path)
        if name == "multiview":
            from .multiview.stage import MultiviewInputs
            return MultiviewInputs(done["segment"].image, done["segment"].alpha)
        if name == "depth":
            return done["multiview"]
        if name == "reconstruct":
            from .reconstruct.stage import ReconstructInputs
            return ReconstructInputs(done["multiview"], done["depth"])
        if name == "enhance":
            from .enhance.stage import EnhanceInputs
            return EnhanceInputs(done["reconstruct"].gaussians, done["multiview"])
        if name == "refine":
            from .refine.stage import RefineInputs
            return RefineInputs(done["reconstruct"].gaussians, done["enhance"])
        from .export.stage import ExportInputs
        return ExportInputs(done["refine"].gaussians)

    def fingerprint(self, stage: Stage, upstream: str) -> str:
        """Hash of everything the stage's outputs depend on.

        Args:
            stage: the stage object (name, backend).
            upstream: the previous stage's fingerprint (the input file's sha256 for the first stage).
        """
        data = {"version": PIPELINE_VERSION, "stage": stage.name, "backend": stage.backend,
                "settings": self.settings.to_dict()[stage.name], "upstream": upstream}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def run(self, input_path: Path, workdir: Path, on_progress: ProgressFn | None = None,
            should_stop: Callable[[], bool] | None = None) -> PipelineResult:
        """Run or resume every stage; see the module docstring."""
        if not input_path.is_file():
            raise InputError(f"input {str(input_path)!r} does not exist or is not a file")
        progress = on_progress or (lambda stage, fraction, message: None)
        workdir.mkdir(parents=True, exist_ok=True)
        stages = [self.build(name) for name in self.stages]
        fingerprints, upstream = [], sha256_file(input_path)
        for stage in stages:
            upstream = self.fingerprint(stage, upstream)
            fingerprints.append(upstream)
        resumed = self._resumable_prefix(workdir, fingerprints)
        outputs = self._load_needed(stages, workdir, resumed)
        records: list[StageRecord] = []
        for i, stage in enumerate(stages):
            if should_stop is not None and should_stop():
                raise PipelineStopped(stage.name)
            if i < len(resumed):                         # no 0.0 event: the stage does not run again
                records.append(resumed[i])
                progress(stage.name, 1.0, "resumed from disk")
                continue
            hooks = StageHooks(progress=lambda f, m, n=stage.name: progress(n, f, m), should_stop=should_stop,
                               stage=stage.name)
            record, outputs[stage.name] = self._run_stage(
                stage, workdir / stage.name, fingerprints[i], self.inputs_for(stage.name, input_path, outputs), hooks)
            progress(stage.name, 1.0, f"done in {record.duration_s:.2f} s")
            records.append(record)
        files = {kind: workdir / "export" / fname for kind, fname in records[-1].artifacts.items()}
        return PipelineResult(outputs=files, stages=records, pipeline_version=PIPELINE_VERSION, device=self.device,
                              settings=self.settings.to_dict())

    def _resumable_prefix(self, workdir: Path, fingerprints: list[str]) -> list[StageRecord]:
        records = []
        for name, fp in zip(self.stages, fingerprints):
            record = self._resumable(workdir / name, fp)
            if record is None:
                break
            record.resumed = True
            records.append(record)
        return records

    def _load_needed(self, stages: list[Stage], workdir: Path, resumed: list[StageRecord]) -> dict[str, Any]:
        """Load the resumed outputs that the first stage to run needs; shorten `resumed` if one is unreadable."""
        while len(resumed) < len(stages):
            first = stages[len(resumed)]
            outputs: dict[str, Any] = {}
            try:
                for need in self.needs[first.name]:
                    outputs[need] = stages[self.stages.index(need)].load_outputs(workdir / need)
                return outputs
            except (FormatError, OSError) as exc:
                log.warning("cannot resume from %s (%s); redoing it", workdir / need, exc)
                del resumed[self.stages.index(need):]
        return {}

    def _resumable(self, stage_dir: Path, fingerprint: str) -> StageRecord | None:
        done = stage_dir / DONE
        if not done.is_file():
            return None
        try:
            data = json.loads(done.read_text())
            record = StageRecord.from_dict(data["record"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable %s (%s); redoing the stage", done, exc)
            return None
        if data.get("fingerprint") != fingerprint:
            return None
        if not all((stage_dir / f).is_file() for f in record.artifacts.values()):
            return None
        return record

    def _run_stage(self, stage: Stage, stage_dir: Path, fingerprint: str, inputs: Any,
                   hooks: StageHooks) -> tuple[StageRecord, Any]:
        hooks.report(0.0, f"started ({stage.backend})")
        if stage_dir.exists():
            shutil.rmtree(stage_dir)
        stage_dir.mkdir(parents=True)
        reset_peak_memory(self.device)
        start = time.perf_counter()
        try:
            stage.load(self.device)
            try:
                out = stage.run(inputs, hooks)
            finally:
                stage.unload()
                self._free_device()
            artifacts = stage.save(out, stage_dir)
        except (AIModuleError, OSError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is wrapped with the stage's name
            if _is_device_oom(exc):
                raise
            raise StageFailed(stage.name, exc) from exc
        record = StageRecord(name=stage.name, backend=stage.backend, reason=stage.reason,
                             model_files=stage.model_files(), duration_s=round(time.perf_counter() - start, 4),
                             peak_rss_mb=peak_rss_mb(), peak_vram_mb=peak_vram_mb(self.device),
                             metrics=dict(getattr(out, "metrics", {})),
                             resumed=False, artifacts=artifacts)
        write_json(stage_dir / DONE, {"record": record.to_dict(), "fingerprint": fingerprint,
                                      "pipeline_version": PIPELINE_VERSION})
        return record, out

    def _free_device(self) -> None:
        if self.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()


__all__ = ["PIPELINE_VERSION", "STAGES", "Pipeline", "PipelineResult", "StageRecord", "run"]
