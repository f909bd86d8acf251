"""The pipeline a worker holds for its life (`Pipeline`, made by `open_pipeline`), and `run`, the one-call
form for scripts and notebooks.

A `Pipeline` builds its stage objects once (from `ai_modules.stages.STAGES`); each keeps its backends,
and each learned backend its loaded model, so a second job on the same pipeline reads no model file.
A `Residency` keeps the models on the GPU between jobs within `vram_budget`, moving the least recently
used to CPU memory when a stage needs room. A stage that runs out of GPU memory is retried once in
its low-memory form.

Stages run in `STAGES` order; each writes its artifacts into
``workdir/<stage>/`` (every file to a temporary name, then renamed) and, last,
``workdir/<stage>/done.json`` holding its `StageRecord` plus a fingerprint of
everything its outputs depend on (pipeline version, backend, the stage's
settings, its model files, the input file's sha256, the previous stage's fingerprint).

On a later call with the same workdir the leading stages whose done.json
matches are not re-run (their record comes back with ``resumed=True``); from
the first stage that has to run, every later stage runs too. A stage directory
without a matching done.json is wiped first.

Importing this module does not import torch; building a `Pipeline` imports the stages.

Example:
    >>> from ai_modules.pipeline import open_pipeline
    >>> pipeline = open_pipeline({"device": "cpu"})                               # doctest: +SKIP
    >>> result = pipeline.run(Path("mug.jpg"), Path("work/job-1"))                 # doctest: +SKIP
    >>> result.outputs["ply"]                                                     # doctest: +SKIP
    PosixPath('work/job-1/export/model.ply')
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .backends import import_impl
from .base import Stage, StageHooks
from .errors import AIModuleError, FormatError, InputError, PipelineStopped, SettingsError, StageFailed
from .fileio import sha256_file, write_json
from .models import resolve_models_dir
from .records import PipelineResult, StageRecord
from .model_cache import FileIdentity, HashBook
from .settings import STAGE_NAMES, PipelineSettings, parse_settings
from .stages import STAGES as STAGE_SPECS
from .stages import model_identity, unused_reasons

PIPELINE_VERSION: str = "0.6"  # 0.6: multiview `trellis`; the multiview object is object.ply
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
    pipeline = open_pipeline(settings, models_dir=models_dir)
    try:
        return pipeline.run(Path(input_path), Path(workdir), on_progress, should_stop)
    finally:
        pipeline.close()


def open_pipeline(settings: Mapping[str, Any] | PipelineSettings, device: str | None = None,
                  models_dir: Path | None = None, vram_budget: int | None = None) -> Pipeline:
    """The pipeline a worker keeps: settings validated, the device resolved (`device` overrides
    `settings.device`), models found under `models_dir` (`models.resolve_models_dir` when None).

    Raises:
        SettingsError: invalid settings, or a device that is not available.
    """
    parsed = parse_settings(settings)
    if device is not None:
        parsed = dataclasses.replace(parsed, device=device)
    return Pipeline(parsed, resolve_device(parsed.device), resolve_models_dir(models_dir), vram_budget)


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
    """The stages of one worker, built once, with their backends and models kept between jobs.

    Args:
        settings: validated settings (`parse_settings`).
        device: a resolved torch device ("cpu", "cuda", "cuda:1").
        models_dir: where learned backends find their files; `auto` backends use them when present.
        vram_budget: bytes of GPU memory the models may keep between jobs; None = `residency.auto_budget`.
    """

    stages: tuple[str, ...] = STAGES
    needs: dict[str, tuple[str, ...]] = {s.name: s.needs for s in STAGE_SPECS}

    def __init__(self, settings: PipelineSettings, device: str, models_dir: Path | None = None,
                 vram_budget: int | None = None) -> None:
        from .residency import Residency

        self.settings = settings
        self.device = device
        self.models_dir = models_dir
        self.residency = Residency(device, vram_budget)
        self.hashes = HashBook(models_dir)
        self._stages: dict[str, Stage] = {}
        self._models: list[dict[str, Any]] = []
        for spec in STAGE_SPECS:
            self._stages[spec.name] = import_impl(spec.impl)(getattr(settings, spec.name), models_dir, None,
                                                             self.residency)

    def stage(self, name: str) -> Stage:
        """The stage object `name` (kept for the pipeline's life)."""
        return self._stages[name]

    def close(self) -> None:
        """Release every model (the worker is stopping)."""
        for stage in self._stages.values():
            stage.unload()

    def choose(self) -> None:
        """Pick each stage's backend for the files on disk now: a model pulled while the worker runs is used
        from the next job on (`auto`), without a restart."""
        for name, why in unused_reasons(self.settings, self.models_dir).items():
            self._stages[name].choose(why)

    def fingerprint(self, stage: Stage, upstream: str) -> str:
        """Hash of everything the stage's outputs depend on.

        Args:
            stage: the stage object (name, backend).
            upstream: the previous stage's fingerprint (the input file's sha256 for the first stage).
        """
        models = [(m["path"], m["bytes"], m["mtime_ns"]) for m in self._models if m["stage"] == stage.name]
        data = {"version": PIPELINE_VERSION, "stage": stage.name, "backend": stage.backend,
                "settings": self.settings.to_dict()[stage.name], "models": models, "upstream": upstream}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def run(self, input_path: Path, workdir: Path, on_progress: ProgressFn | None = None,
            should_stop: Callable[[], bool] | None = None) -> PipelineResult:
        """Run or resume every stage on one photo; see `run` (the function) for the arguments and errors."""
        if not input_path.is_file():
            raise InputError(f"input {str(input_path)!r} does not exist or is not a file")
        workdir.mkdir(parents=True, exist_ok=True)
        self.choose()
        self._models = model_identity(self.settings, self.models_dir)
        stages = [self._stages[name] for name in self.stages]
        fingerprints, upstream = [], sha256_file(input_path)
        for stage in stages:
            upstream = self.fingerprint(stage, upstream)
            fingerprints.append(upstream)
        resumed = self._resumable_prefix(workdir, fingerprints)
        outputs = self._load_needed(stages, workdir, resumed)
        return self._run_from(stages, resumed, outputs, fingerprints, input_path, workdir, on_progress, should_stop)

    def continue_from(self, stage: str, outputs: Any, workdir: Path, on_progress: ProgressFn | None = None,
                      should_stop: Callable[[], bool] | None = None) -> PipelineResult:
        """Run every stage after `stage` on that stage's `outputs` (e.g. views made elsewhere, for a benchmark);
        nothing is resumed. The stages that read an earlier output than `stage`'s cannot run this way.

        Raises:
            KeyError: an unknown stage, or a later stage needs an output before `stage`.
        """
        workdir.mkdir(parents=True, exist_ok=True)
        self.choose()
        self._models = model_identity(self.settings, self.models_dir)
        start = self.stages.index(stage) + 1
        later = [self._stages[name] for name in self.stages[start:]]
        for s in later:
            missing = [n for n in self.needs[s.name] if self.stages.index(n) < start - 1]
            if missing:
                raise KeyError(f"stage {s.name} needs {missing}, which continue_from({stage!r}) does not have")
        fingerprints = [f"continued-{s.name}-{time.time_ns()}" for s in later]
        return self._run_from(later, [], {stage: outputs}, fingerprints, None, workdir, on_progress, should_stop)

    def _run_from(self, stages: list[Stage], resumed: list[StageRecord], outputs: dict[str, Any],
                  fingerprints: list[str], input_path: Path | None, workdir: Path, on_progress: ProgressFn | None,
                  should_stop: Callable[[], bool] | None) -> PipelineResult:
        progress = on_progress or (lambda stage, fraction, message: None)
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
                stage, workdir / stage.name, fingerprints[i], type(stage).make_inputs(input_path, outputs), hooks)
            summary = _summary(record)
            log.info("%s (%s): %s", stage.name, stage.backend, summary)
            progress(stage.name, 1.0, summary)
            records.append(record)
        for record in records:                        # the manifest names each model file by its sha256
            for entry, identity in zip(record.model_files, _identities(record.model_files)):
                entry["sha256"] = self.hashes.sha256(identity)
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
        low_memory, retry, load_s = self.settings.low_memory, None, 0.0
        try:
            while True:
                try:
                    stage.load(self.device, low_memory)
                    load_s += stage.load_seconds()
                    out = stage.run(inputs, hooks)
                    break
                except Exception as exc:  # noqa: BLE001 - only a device OOM is retried, the rest re-raised
                    if low_memory or not _is_device_oom(exc):
                        raise
                    retry = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    log.warning("%s ran out of GPU memory (%s); retrying it once in its low-memory form",
                                stage.name, retry)
                    hooks.report(0.0, "out of GPU memory: retrying in the low-memory form")
                    self.residency.release_all_but(stage.backend)
                    self._free_device()
                    low_memory = True
            self._free_device()
            artifacts = stage.save(out, stage_dir)
        except (AIModuleError, OSError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else is wrapped with the stage's name
            if _is_device_oom(exc):
                raise
            raise StageFailed(stage.name, exc) from exc
        duration = round(time.perf_counter() - start, 4)
        files = stage.model_files()
        self.hashes.prefetch(_identities(files))               # hashed beside the next stages' GPU work
        record = StageRecord(name=stage.name, backend=stage.backend, reason=stage.reason, model_files=files,
                             duration_s=duration, load_s=round(load_s, 3),
                             peak_rss_mb=peak_rss_mb(), peak_vram_mb=peak_vram_mb(self.device),
                             low_memory=low_memory, low_memory_retry=retry, residency=self.residency.take_moves(),
                             metrics=dict(getattr(out, "metrics", {})), resumed=False, artifacts=artifacts)
        write_json(stage_dir / DONE, {"record": record.to_dict(), "fingerprint": fingerprint,
                                      "pipeline_version": PIPELINE_VERSION})
        return record, out

    def _free_device(self) -> None:
        if self.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()


def _identities(model_files: list[dict[str, Any]]) -> list[FileIdentity]:
    return [FileIdentity(m["path"], m["bytes"], m.get("mtime_ns", -1)) for m in model_files]


def _summary(record: StageRecord) -> str:
    """The stage's end message (progress and the job's events): time, load, peak VRAM, what moved, a retry."""
    parts = [f"done in {record.duration_s:.2f} s"]
    if record.load_s:
        parts.append(f"models loaded in {record.load_s:.2f} s")
    if record.peak_vram_mb is not None:
        parts.append(f"peak VRAM {record.peak_vram_mb / 1024:.2f} GiB")
    if record.low_memory_retry:
        parts.append(f"retried in the low-memory form after {record.low_memory_retry}")
    parts.extend(record.residency)
    return "; ".join(parts)


__all__ = ["PIPELINE_VERSION", "STAGES", "Pipeline", "PipelineResult", "StageRecord", "open_pipeline", "run"]
