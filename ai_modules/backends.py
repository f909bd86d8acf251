"""Where backends are registered: one line per backend.

Standard library only, so that settings validation, `glimpsed models` and the daemon's light
process can list backends without importing torch. Each line names the stage, the backend, the
class that implements it (imported only when a pipeline builds it), the model files it needs
(names in `ai_modules.models`; none for embedded backends) and those it uses when present.
Everything else is derived from this table: the values `pipeline.<stage>.backend` accepts, what
`auto` picks (the learned backends in table order whose files are all present, else the stage's one
embedded backend), which stages may be switched off (those with a `none` line) and which files
`models pull <backend>` fetches.

Adding a backend: write its class (a `base.Backend` subclass of the stage's backend base) and add
its line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BackendSpec:
    """One backend of one stage.

    Attributes:
        stage: the stage it computes, e.g. "depth".
        name: the value of `pipeline.<stage>.backend`, e.g. "dpt".
        impl: ``"module:Class"`` of its `Backend` class; "" for `none` (the stage passes its input on).
        models: the model files it needs (all of them); empty for embedded backends.
        optional: model files it uses when they are present and does without otherwise (an embedded
            backend with optional files stays embedded: `auto` takes it either way).
    """

    stage: str
    name: str
    impl: str
    models: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    @property
    def learned(self) -> bool:
        """Whether it needs model files (`auto` prefers it when they are present)."""
        return bool(self.models)


BACKENDS: tuple[BackendSpec, ...] = (
    BackendSpec("segment", "rembg", "ai_modules.segment.backends:Rembg", ("isnet-general-use",)),
    BackendSpec("segment", "alpha_grabcut", "ai_modules.segment.backends:AlphaGrabcut"),
    BackendSpec("multiview", "trellis", "ai_modules.multiview.trellis:Trellis",
                ("trellis-image-large", "dinov2-vitl14-reg")),
    BackendSpec("multiview", "syncdreamer", "ai_modules.multiview.backends:SyncDreamerViews", ("syncdreamer-pretrain",)),
    BackendSpec("multiview", "relief", "ai_modules.multiview.backends:Relief"),
    BackendSpec("depth", "dpt", "ai_modules.depth.backends:DPT", ("dpt-hybrid-midas",)),
    BackendSpec("depth", "inflation", "ai_modules.depth.backends:Inflation"),
    BackendSpec("depth", "none", ""),
    BackendSpec("reconstruct", "fit", "ai_modules.reconstruct.stage:Fit"),
    BackendSpec("enhance", "sdxl_lightning", "ai_modules.enhance.backends:SDXLLightning",
                ("sdxl-base", "sdxl-lightning-4step-unet", "controlnet-depth-sdxl")),
    BackendSpec("enhance", "classical", "ai_modules.enhance.backends:Classical"),
    BackendSpec("enhance", "none", ""),
    BackendSpec("refine", "mvcrm", "ai_modules.refine.backends:MVCRM", optional=("dinov2", "dpt-hybrid-midas")),
    BackendSpec("refine", "none", ""),
    BackendSpec("export", "inria", "ai_modules.export.stage:Inria"),
)


def backends_of(stage: str) -> tuple[BackendSpec, ...]:
    """The registered backends of `stage`, in table order."""
    return tuple(b for b in BACKENDS if b.stage == stage)


def spec(stage: str, name: str) -> BackendSpec:
    """The registered backend `name` of `stage`.

    Raises:
        KeyError: no such backend.
    """
    for b in BACKENDS:
        if b.stage == stage and b.name == name:
            return b
    raise KeyError(f"no backend {name!r} for stage {stage!r}")


def embedded(stage: str) -> str:
    """The stage's embedded backend (needs no files): `auto`'s last resort. `none` when the stage has no other."""
    names = [b.name for b in backends_of(stage) if not b.learned and b.name != "none"]
    return names[0] if names else "none"


def learned(stage: str) -> tuple[str, ...]:
    """The stage's learned backends, in the order `auto` tries them."""
    return tuple(b.name for b in backends_of(stage) if b.learned)


def optional(stage: str) -> bool:
    """Whether the stage may be switched off (`backend: none`)."""
    return any(b.name == "none" for b in backends_of(stage))


def models_of(backend: str) -> tuple[str, ...]:
    """The model files backend `backend` needs or uses when present (by name; backend names are unique across
    stages): what `models pull <backend>` fetches and what a result's identity stats."""
    return next((b.models + b.optional for b in BACKENDS if b.name == backend), ())


def import_impl(impl: str) -> Any:
    """The class named by ``"module:Class"`` (a registry line's or a stage declaration's `impl`)."""
    module, _, name = impl.partition(":")
    return getattr(importlib.import_module(module), name)
