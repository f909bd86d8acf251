"""The stage interface every `ai_modules/<stage>/stage.py` implements.

A stage is a small object with class data (`name`, `backends`), a frozen
`settings`, and five methods::

    load(device)            load models / move to the device (cheap for embedded backends)
    run(inputs, hooks)      check_inputs() first, then compute; returns an outputs dataclass
    unload()                free models and device memory
    save(outputs, dir)      write the artifacts atomically; returns kind -> file name
    load_outputs(dir)       read the artifacts back (for resuming a pipeline)

Stages know nothing of job folders or daemons; `ai_modules.pipeline` drives them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .errors import PipelineStopped, SettingsError
from .models import BACKEND_MODELS, ModelStatus, model_status
from .settings import EMBEDDED_BACKENDS, LEARNED_BACKENDS, backend_choices


@dataclass(frozen=True)
class StageHooks:
    """Callbacks a stage may use inside long loops.

    Attributes:
        progress: ``(fraction 0..1, message)`` -> None.
        should_stop: () -> bool; a stage calls `check_stop` between steps.
    """

    progress: Callable[[float, str], None] | None = None
    should_stop: Callable[[], bool] | None = None
    stage: str = ""

    def report(self, fraction: float, message: str) -> None:
        """Report progress inside the stage (no-op without a callback)."""
        if self.progress is not None:
            self.progress(fraction, message)

    def check_stop(self) -> None:
        """Raise `PipelineStopped` (naming this stage, which a later run redoes) when asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise PipelineStopped(self.stage)


NO_HOOKS = StageHooks()


class Stage:
    """Base class: shared plumbing for backend choice and no-op load/unload.

    Subclasses set `name` and implement `check_inputs`, `run`, `save`, `load_outputs`.
    """

    name: ClassVar[str] = ""

    def __init__(self, settings: Any, models_dir: Path | None = None, unused: str | None = None) -> None:
        """`unused`: why this stage's outputs would go unused in this pipeline; then `auto` means `none`."""
        self.settings = settings
        self.device = "cpu"
        self.models_dir = models_dir
        self.backend, self.reason = resolve_backend(self.name, settings.backend, models_dir)
        if unused and settings.backend == "auto":
            self.backend, self.reason = "none", f"{unused}; {self.reason}"

    def load(self, device: str) -> None:
        """Prepare to run on `device` (embedded backends hold no models)."""
        self.device = device

    def unload(self) -> None:
        """Free models and device memory (embedded backends hold none)."""

    def model_files(self) -> list[dict[str, Any]]:
        """Model files used by the backend: ``[{"path", "bytes"}]`` (none for embedded backends)."""
        out = []
        for status in backend_models(self.backend, self.models_dir):
            if status.path is not None and status.path.exists():
                files = [status.path] if status.path.is_file() else sorted(
                    f for f in status.path.rglob("*") if f.is_file())
                out.append({"name": status.name, "path": str(status.path),
                            "bytes": sum(f.stat().st_size for f in files)})
        return out

    def require_models(self) -> list[ModelStatus]:
        """The backend's model files; raise `ModelNotAvailable` for the first one missing."""
        models = backend_models(self.backend, self.models_dir)
        for status in models:
            if not status.present:
                raise status.error()
        return models

    def check_inputs(self, inputs: Any) -> None:  # pragma: no cover - overridden
        """Raise a clear error if `inputs` are not what `run` expects."""
        raise NotImplementedError

    def run(self, inputs: Any, hooks: StageHooks = NO_HOOKS) -> Any:  # pragma: no cover - overridden
        """Compute the outputs."""
        raise NotImplementedError

    def save(self, outputs: Any, directory: Path) -> dict[str, str]:  # pragma: no cover - overridden
        """Write the artifacts into `directory`; return kind -> file name."""
        raise NotImplementedError

    def load_outputs(self, directory: Path) -> Any:  # pragma: no cover - overridden
        """Read the outputs written by `save`."""
        raise NotImplementedError


def backend_models(backend: str, models_dir: Path | None) -> list[ModelStatus]:
    """The model files a backend needs (none for embedded backends)."""
    return [model_status(name, models_dir) for name in BACKEND_MODELS.get(backend, ())]


def resolve_backend(stage: str, requested: str, models_dir: Path | None = None) -> tuple[str, str]:
    """Pick the backend of `stage` for the setting `requested` ("auto" or a name).

    `auto` takes the first learned backend whose model files are all present, else the
    embedded one; the reason says which files were looked for and where.

    Returns:
        (backend name, why it was chosen).

    Raises:
        SettingsError: an unknown backend.
    """
    if requested not in backend_choices(stage):
        raise SettingsError(f"pipeline.{stage}.backend", "one of " + ", ".join(
            f"`{c}`" for c in backend_choices(stage)), requested)
    if requested != "auto":
        return requested, f"requested by `pipeline.{stage}.backend`"
    missing = []
    for learned in LEARNED_BACKENDS.get(stage, ()):
        models = backend_models(learned, models_dir)
        absent = [m for m in models if not m.present]
        if not absent:
            return learned, f"{learned} model files found in {models[0].path.parent if models else '?'}"
        missing.append(f"{learned} weights not found ({', '.join(str(m.path) for m in absent)})")
    embedded = EMBEDDED_BACKENDS[stage]
    return embedded, "; ".join(missing) + "; embedded backend" if missing else "embedded backend (no learned one)"


def check_array(name: str, value: Any, ndim: int, dtype: Any = None, channels: int | None = None) -> None:
    """Raise ValueError unless `value` is a numpy array of rank `ndim` (and dtype, last dim) as given."""
    import numpy as np

    ok = isinstance(value, np.ndarray) and value.ndim == ndim
    ok = ok and (dtype is None or value.dtype == dtype) and (channels is None or value.shape[-1] == channels)
    if not ok:
        got = f"{type(value).__name__} {getattr(value, 'dtype', '')} {list(getattr(value, 'shape', []))}"
        want = f"a {ndim}-d {'' if dtype is None else np.dtype(dtype)} array" + (
            f" with {channels} channels" if channels else "")
        raise ValueError(f"`{name}` must be {want}, got {got}")
