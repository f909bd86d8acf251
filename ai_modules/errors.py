"""The exception tree of `ai_modules`.

Importing this module is cheap (no torch, no numpy): the daemon validates its
configuration with `ai_modules.settings` in a light process.

Tree::

    AIModuleError
    ├── InputError            bad input; retrying the same file never helps
    │   └── NoObjectFound     segmentation found no object in the photo
    ├── SettingsError         a pipeline setting is invalid (names the dotted key)
    ├── PipelineStopped       `should_stop()` returned True at a stage boundary
    ├── ModelNotAvailable     a learned backend's weights are not on disk
    ├── FormatError           a file (e.g. a .ply) does not have the expected layout
    │   └── FeatureModelError a DINOv2 feature-model folder cannot be loaded (names the folder)
    └── StageFailed           an unexpected error inside a stage (cause chained)
"""

from __future__ import annotations


class AIModuleError(Exception):
    """Base class of every error `ai_modules` raises on purpose.

    Pickles whole (class, message and attributes such as `hint`), whatever its constructor takes, so an
    error crosses from a worker process or a remote actor to the daemon unchanged."""

    def __reduce__(self) -> tuple[object, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[AIModuleError], args: tuple[object, ...], state: dict[str, object]) -> AIModuleError:
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class InputError(AIModuleError):
    """The input cannot be processed; retrying the same file will fail the same way."""


class NoObjectFound(InputError):
    """Segmentation found no usable object in the photo.

    Args:
        reason: what was measured, e.g. "the foreground covers 0.1% of the frame".
        hint: what the user can do about it.
    """

    def __init__(self, reason: str, hint: str) -> None:
        self.reason = reason
        self.hint = hint
        super().__init__(f"no object found: {reason}. {hint}")


class SettingsError(AIModuleError):
    """A pipeline setting is invalid.

    The message reads "`<key>` must be <expectation>, got <value>".

    Args:
        key: dotted key, e.g. ``pipeline.segment.size``.
        expectation: what a valid value looks like, e.g. "an integer >= 64".
        value: the value received (shown with ``repr``) ...
        got: ... or, when given, this text instead of ``repr(value)``.
    """

    def __init__(self, key: str, expectation: str, value: object = None, got: str | None = None) -> None:
        self.key = key
        self.expectation = expectation
        self.value = value
        shown = got if got is not None else f"{value!r} ({type(value).__name__})"
        super().__init__(f"`{key}` must be {expectation}, got {shown}")


class PipelineStopped(AIModuleError):
    """`should_stop()` returned True; completed stages stay on disk for a later resume.

    Args:
        next_stage: the stage that would have run next (where a later run resumes).
    """

    def __init__(self, next_stage: str) -> None:
        self.next_stage = next_stage
        super().__init__(f"pipeline stopped before stage `{next_stage}`; a later run resumes there")


class ModelNotAvailable(AIModuleError):
    """A learned backend needs a model file that is not on disk.

    Args:
        stage: the stage, e.g. "segment".
        backend: the backend, e.g. "rembg".
        path: where the file is expected.
        source: where to fetch it from (a URL or a hub id).
    """

    def __init__(self, stage: str, backend: str, path: str, source: str) -> None:
        self.stage = stage
        self.backend = backend
        self.path = path
        self.source = source
        super().__init__(
            f"stage `{stage}` backend `{backend}` needs {path}, which is missing; "
            f"run `glimpsed models pull {backend}` on a machine with internet, or fetch it from {source} "
            f"and put it there (or pick the embedded backend)"
        )


class FormatError(AIModuleError):
    """A file does not have the layout its reader expects (truncated, wrong header...)."""


class FeatureModelError(FormatError):
    """A feature-model folder (timm layout: ``config.json`` + ``model.safetensors``) cannot be loaded.

    A `FormatError` of its own so that a caller can tell a broken feature model from other broken files.

    Args:
        folder: the model folder.
        problem: what is wrong, e.g. "config.json is not valid JSON (...)".
        fix: what to do about it, e.g. "run `glimpsed models pull dinov2`".
    """

    def __init__(self, folder: str, problem: str, fix: str) -> None:
        self.folder = folder
        self.problem = problem
        super().__init__(f"feature model folder {folder}: {problem}; {fix}")


class StageFailed(AIModuleError):
    """An unexpected error inside a stage. The original exception is ``__cause__``.

    Not wrapped: `AIModuleError`s (e.g. `InputError`), and environment trouble
    worth a retry (OSError, MemoryError, torch.cuda.OutOfMemoryError).

    Args:
        stage: the stage that failed.
        cause: the original exception.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        super().__init__(f"stage `{stage}` failed: {type(cause).__name__}: {cause}")
