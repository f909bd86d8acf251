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
        off_when: ``(stage, backend, why)``: with `backend: auto`, the stage is `none` while that other stage
            runs that backend (its outputs would go unused).
    """

    name: str
    settings: type
    needs: tuple[str, ...]
    impl: str
    off_when: tuple[str, str, str] | None = None


STAGES: tuple[StageSpec, ...] = (
    StageSpec("segment", SegmentSettings, (), "ai_modules.segment.stage:SegmentStage"),
    StageSpec("multiview", MultiviewSettings, ("segment",), "ai_modules.multiview.stage:MultiviewStage"),
    StageSpec("depth", DepthSettings, ("multiview",), "ai_modules.depth.stage:DepthStage",
              off_when=("multiview", "relief", "the relief's views carry its own geometry, so reconstruct starts "
                                               "from the relief without a depth term")),
    StageSpec("reconstruct", ReconstructSettings, ("multiview", "depth"), "ai_modules.reconstruct.stage:ReconstructStage"),
    StageSpec("enhance", EnhanceSettings, ("multiview", "reconstruct"), "ai_modules.enhance.stage:EnhanceStage",
              off_when=("refine", "none", "refine.backend is none, so nothing would use enhanced views")),
    StageSpec("refine", RefineSettings, ("reconstruct", "enhance"), "ai_modules.refine.stage:RefineStage"),
    StageSpec("export", ExportSettings, ("refine",), "ai_modules.export.stage:ExportStage"),
)
STAGE_BY_NAME: dict[str, StageSpec] = {s.name: s for s in STAGES}


def unused_reasons(settings: PipelineSettings, models_dir: Path | None) -> dict[str, str | None]:
    """Per stage, why its outputs would go unused with these settings and the files on disk now (None: used)."""
    raw = {s.name: resolve_backend(s.name, getattr(settings, s.name).backend, models_dir)[0] for s in STAGES}
    return {s.name: s.off_when[2] if s.off_when and raw[s.off_when[0]] == s.off_when[1] else None for s in STAGES}


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
