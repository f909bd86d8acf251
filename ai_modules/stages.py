"""The stages, declared once as data: name, settings class, the earlier outputs each reads, its class,
and when `auto` switches it off. Their backends are registered in `ai_modules.backends`.

Standard library only (no torch): the daemon computes a result's identity — which backends and so
which model files a job would use — from this table in its light process.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import choose_backend, resolve_backend
from .backends import models_of
from .model_cache import identify
from .models import model_status
from .settings import (DepthSettings, EnhanceSettings, ExportSettings, MultiviewSettings, PipelineSettings,
                       ReconstructSettings, RefineSettings, SegmentSettings)


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage.

    Attributes:
        name: e.g. "depth"; also its settings section and its folder in a job's workdir.
        settings: its settings dataclass.
        needs: the earlier stages whose outputs it reads.
        impl: ``"module:Class"`` of its `base.Stage` subclass (imported when a pipeline is built).
        off_when: ``(stage, backends, why)``: with `backend: auto`, the stage is `none` while that other stage
            runs one of those backends (its outputs would go unused).
        auto_paths: with `backend: auto`, the stage runs only where the other stages' backends are one of these
            paths (each a tuple of ``(stage, backend)``): where a benchmark measured a gain. None: everywhere.
        auto_why: what that measurement was (for the record of a job where the stage stays off).
    """

    name: str
    settings: type
    needs: tuple[str, ...]
    impl: str
    off_when: tuple[str, tuple[str, ...], str] | None = None
    auto_paths: tuple[tuple[tuple[str, str], ...], ...] | None = None
    auto_why: str = ""


#: Where `refine: auto` runs MVCRM: the paths on which `benchmarks/bench_refine.py` measured a held-out gain
#: (docs/refine.md). Views that are better than the renders and agree between views gain (+1.6 dB for true
#: renders, +1.6 dB for blurred, compressed, colour-shifted ones); SDXL-Lightning's views are meant to be
#: such views, and what of them is invented, the gates reject. The `classical` enhancer (colour matching
#: and an unsharp mask) showed no clear gain (+0.13 ± 0.33 dB on the SyncDreamer-like path, -0.08 dB on
#: the relief path), so it does not turn refine on.
REFINE_GAINS: tuple[tuple[tuple[str, str], ...], ...] = ((("multiview", "syncdreamer"), ("enhance", "sdxl_lightning")),)
REFINE_GAINS_WHY = ("bench_refine measured a held-out gain only with multiview syncdreamer and enhance "
                    "sdxl_lightning (docs/refine.md)")

STAGES: tuple[StageSpec, ...] = (
    StageSpec("segment", SegmentSettings, (), "ai_modules.segment.stage:SegmentStage"),
    StageSpec("multiview", MultiviewSettings, ("segment",), "ai_modules.multiview.stage:MultiviewStage"),
    StageSpec("depth", DepthSettings, ("multiview",), "ai_modules.depth.stage:DepthStage",
              off_when=("multiview", ("relief", "trellis"), "the multiview stage built the object itself, so "
                        "reconstruct starts from it without a depth term")),
    StageSpec("reconstruct", ReconstructSettings, ("multiview", "depth"), "ai_modules.reconstruct.stage:ReconstructStage"),
    StageSpec("enhance", EnhanceSettings, ("multiview", "reconstruct"), "ai_modules.enhance.stage:EnhanceStage",
              off_when=("refine", ("none",), "refine does not run, so nothing would use enhanced views")),
    StageSpec("refine", RefineSettings, ("multiview", "reconstruct", "enhance"), "ai_modules.refine.stage:RefineStage",
              auto_paths=REFINE_GAINS, auto_why=REFINE_GAINS_WHY),
    StageSpec("export", ExportSettings, ("refine",), "ai_modules.export.stage:ExportStage"),
)
STAGE_BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def unused_reasons(settings: PipelineSettings, models_dir: Path | None) -> dict[str, str | None]:
    """Per stage, why `auto` means `none` for it with these settings and the files on disk now (None: it runs):
    off the paths where it was measured to help (`auto_paths`), or its outputs would go unused (`off_when`,
    judged after the first rule)."""
    raw = {s.name: resolve_backend(s.name, getattr(settings, s.name).backend, models_dir)[0] for s in STAGES}
    reasons: dict[str, str | None] = {s.name: None for s in STAGES}
    for s in STAGES:
        if s.auto_paths is not None and not any(all(raw[st] == b for st, b in path) for path in s.auto_paths):
            here = ", ".join(f"{st} {raw[st]}" for st in dict.fromkeys(st for path in s.auto_paths for st, _ in path))
            reasons[s.name] = f"{s.auto_why}; this job has {here}"
    runs = {n: "none" if reasons[n] and getattr(settings, n).backend == "auto" else b for n, b in raw.items()}
    for s in STAGES:
        if s.off_when and runs[s.off_when[0]] in s.off_when[1]:
            reasons[s.name] = s.off_when[2]
    return reasons


def chosen_backends(settings: PipelineSettings, models_dir: Path | None) -> dict[str, tuple[str, str]]:
    """Per stage, the backend a job would run now and why (what `Stage.choose` decides, without building it)."""
    unused = unused_reasons(settings, models_dir)
    return {s.name: choose_backend(s.name, getattr(settings, s.name).backend, models_dir, unused[s.name])
            for s in STAGES}


def model_identity(settings: PipelineSettings, models_dir: Path | None) -> list[dict[str, Any]]:
    """The model files a job would use now: ``[{"stage", "name", "path", "bytes", "mtime_ns"}]`` (stat only).

    A newly pulled or replaced file changes its bytes or mtime, and so a result's identity.
    """
    out = []
    for stage, (backend, _) in chosen_backends(settings, models_dir).items():
        for name in models_of(backend):
            status = model_status(name, models_dir)
            if status.path is None or not status.present:
                continue
            for ident in identify([status.path]):
                out.append({"stage": stage, "name": name, "path": ident.path, "bytes": ident.bytes,
                            "mtime_ns": ident.mtime_ns})
    return out
