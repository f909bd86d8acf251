"""The stage and backend interfaces every `ai_modules/<stage>/` implements.

A stage (`Stage` subclass, one per pipeline step) owns what is the same whatever computes it: the
type of its inputs and outputs, their checks, how they are saved and read back. A backend (`Backend`
subclass, one class per way of computing it, registered in `ai_modules.backends`) computes the
outputs from the inputs and owns the models it loads::

    stage.load(device)          pick the backend's model up (from its cache when warm) onto the device
    stage.run(inputs, hooks)    check_inputs(), then the backend's run(inputs, hooks) -> outputs
    stage.save(outputs, dir)    write the artifacts atomically; returns kind -> file name
    stage.load_outputs(dir)     read the artifacts back (for resuming a pipeline)
    stage.unload()              release every model its backends hold

A pipeline keeps its stage objects, and so their backends and models, for as long as it lives.
Stages know nothing of job folders or daemons; `ai_modules.pipeline` drives them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .backends import import_impl, models_of, spec
from .errors import PipelineStopped, SettingsError
from .model_cache import ModelCache, identify
from .models import ModelStatus, model_status
from .residency import Residency
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


class Backend:
    """One way of computing a stage; a learned one owns the cache of the model it loads.

    Subclasses implement `run` (the stage's backend signature: the stage's inputs -> its outputs) and,
    when they need model files (their registry line names them), `load_model`, and `model_bytes`/
    `move` so that a `Residency` can keep the model on the GPU or move it to CPU memory.

    Attributes:
        name: the registered name, e.g. "dpt".
        settings: the stage's settings.
        cache: the loaded model, keyed by its files' identity, the device and the precision.
        low_memory: whether it runs in its low-memory form (set by `prepare`).
    """

    def __init__(self, name: str, settings: Any, models_dir: Path | None = None,
                 residency: Residency | None = None) -> None:
        self.name = name
        self.settings = settings
        self.models_dir = models_dir
        self.residency = residency if residency is not None else Residency("cpu")
        self.cache: ModelCache[Any] = ModelCache(name)
        self.device = "cpu"
        self.low_memory = False

    @property
    def model(self) -> Any:
        """The loaded model (None before `prepare`, and for embedded backends)."""
        return self.cache.value

    def model_names(self) -> tuple[str, ...]:
        """The model files it needs, by name (from the registry)."""
        return models_of(self.name)

    def require_models(self) -> list[ModelStatus]:
        """Its model files; raise `ModelNotAvailable` for the first one missing."""
        models = [model_status(name, self.models_dir) for name in self.model_names()]
        for status in models:
            if not status.present:
                raise status.error()
        return models

    def cache_key(self) -> tuple[Any, ...]:
        """What the loaded model depends on: its files as they are now, the device, the precision."""
        paths = [m.path for m in self.require_models() if m.path is not None]
        return identify(paths), self.device, self.precision()

    def precision(self) -> str:
        """The precision the model is loaded in (part of the cache key); subclasses refine it."""
        return "fp16" if self.device.startswith("cuda") else "fp32"

    def prepare(self, device: str, low_memory: bool = False) -> None:
        """Have the model loaded on `device` (from the cache when its key matches: no file is read then) and
        resident there, in the low-memory form when asked."""
        self.device, self.low_memory = device, low_memory
        if not self.model_names():
            return
        key = self.cache_key()
        if self.cache.value is not None and key != self.cache.key:
            self.release()
        fresh = self.cache.value is None
        model = self.cache.get(key, self.load_model)
        if fresh:
            self.residency.register(self.name, self.model_bytes(model), lambda: self.move(self.device),
                                    lambda: self.move("cpu"))
        self.residency.acquire(self.name)

    def load_model(self) -> Any:  # pragma: no cover - learned backends override
        """Read the model files and build the model on `self.device`."""
        raise NotImplementedError

    def model_bytes(self, model: Any) -> int:
        """Device bytes the model keeps while resident (0 when it places itself, e.g. with offload hooks)."""
        return 0

    def move(self, device: str) -> None:
        """Move the loaded model to `device` ("cpu" to make room on the GPU)."""

    def release(self) -> None:
        """Drop the loaded model and give its memory back."""
        self.residency.forget(self.name)
        self.cache.clear()
        if self.device.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()

    def model_files(self) -> list[dict[str, Any]]:
        """The model files it uses: ``[{"name", "path", "bytes", "mtime_ns"}]`` (stat only; `Pipeline` adds the
        sha256 of each)."""
        out = []
        for status in self.require_models() if self.model_names() else []:
            out.extend({"name": status.name, "path": i.path, "bytes": i.bytes, "mtime_ns": i.mtime_ns}
                       for i in identify([status.path]))
        return out

    def run(self, inputs: Any, hooks: StageHooks = NO_HOOKS) -> Any:  # pragma: no cover - overridden
        """Compute the stage's outputs."""
        raise NotImplementedError


def build_backend(stage: str, name: str, settings: Any, models_dir: Path | None = None,
                  residency: Residency | None = None) -> Backend:
    """Instantiate the registered backend `name` of `stage` (imports its module only now)."""
    return import_impl(spec(stage, name).impl)(name, settings, models_dir, residency)


class Stage:
    """Base class: backend choice, delegation to the backend, and its models' life.

    Subclasses set `name` and implement `check_inputs`, `save`, `load_outputs`, `make_inputs`, and `skip`
    when the stage may be switched off.
    """

    name: ClassVar[str] = ""

    def __init__(self, settings: Any, models_dir: Path | None = None, unused: str | None = None,
                 residency: Residency | None = None) -> None:
        """`unused`: why this stage's outputs would go unused in this pipeline; then `auto` means `none`."""
        self.settings = settings
        self.device = "cpu"
        self.low_memory = False
        self.models_dir = models_dir
        self.residency = residency if residency is not None else Residency("cpu")
        self._backends: dict[str, Backend] = {}
        self.choose(unused)

    def choose(self, unused: str | None = None) -> None:
        """(Re)pick the backend for the files on disk now (`auto` takes a learned one once its files appear)."""
        self.backend, self.reason = choose_backend(self.name, self.settings.backend, self.models_dir, unused)

    @property
    def impl(self) -> Backend | None:
        """The chosen backend's object (built once and kept: it holds the model), or None for `none`."""
        if self.backend == "none":
            return None
        if self.backend not in self._backends:
            self._backends[self.backend] = build_backend(self.name, self.backend, self.settings, self.models_dir,
                                                         self.residency)
        return self._backends[self.backend]

    def load(self, device: str, low_memory: bool = False) -> None:
        """Prepare the chosen backend on `device` (raises ModelNotAvailable when its files are missing)."""
        self.device, self.low_memory = device, low_memory
        if self.impl is not None:
            self.impl.prepare(device, low_memory)

    def load_seconds(self) -> float:
        """Seconds the last `load` spent reading model files (0.0 when the model was warm)."""
        return self.impl.cache.last_load_s if self.impl is not None else 0.0

    def unload(self) -> None:
        """Release the models of every backend this stage has built."""
        for backend in self._backends.values():
            backend.release()

    def model_files(self) -> list[dict[str, Any]]:
        """Model files used by the chosen backend (none for embedded backends)."""
        return self.impl.model_files() if self.impl is not None else []

    def run(self, inputs: Any, hooks: StageHooks = NO_HOOKS) -> Any:
        """Check the inputs, then compute with the chosen backend (or `skip` for `none`)."""
        self.check_inputs(inputs)
        impl = self.impl
        if impl is None:
            return self.skip(inputs)
        if impl.device != self.device or (impl.model_names() and impl.model is None):
            impl.prepare(self.device, self.low_memory)
        return impl.run(inputs, hooks)

    def skip(self, inputs: Any) -> Any:  # pragma: no cover - optional stages override
        """The outputs of `none`."""
        raise NotImplementedError(f"stage {self.name} cannot be switched off")

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> Any:  # pragma: no cover - overridden
        """The stage's inputs from the photo's path and the earlier stages' outputs (those it `needs`)."""
        raise NotImplementedError

    def check_inputs(self, inputs: Any) -> None:  # pragma: no cover - overridden
        """Raise a clear error if `inputs` are not what `run` expects."""
        raise NotImplementedError

    def save(self, outputs: Any, directory: Path) -> dict[str, str]:  # pragma: no cover - overridden
        """Write the artifacts into `directory`; return kind -> file name."""
        raise NotImplementedError

    def load_outputs(self, directory: Path) -> Any:  # pragma: no cover - overridden
        """Read the outputs written by `save`."""
        raise NotImplementedError


def backend_models(backend: str, models_dir: Path | None) -> list[ModelStatus]:
    """The model files a backend needs (none for embedded backends)."""
    return [model_status(name, models_dir) for name in models_of(backend)]


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


def choose_backend(stage: str, requested: str, models_dir: Path | None, unused: str | None) -> tuple[str, str]:
    """`resolve_backend`, except that `auto` means `none` when the stage's outputs would go unused (`unused`
    says why)."""
    backend, reason = resolve_backend(stage, requested, models_dir)
    if unused and requested == "auto":
        return "none", f"{unused}; {reason}"
    return backend, reason


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
