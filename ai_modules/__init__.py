"""glimpsed's AI pipeline: photo of an object -> 3D Gaussian splats.

Knows nothing of folders, SQLite or daemons; the daemon calls `run`. Importing
this package is cheap (no torch): the stages are imported when `run` runs.

Example:
    >>> import ai_modules
    >>> result = ai_modules.run(Path("mug.jpg"), {}, Path("work/job-1"))   # doctest: +SKIP
    >>> sorted(result.outputs)                                           # doctest: +SKIP
    ['ply', 'preview', 'splat']
"""

from .errors import (AIModuleError, InputError, ModelNotAvailable, NoObjectFound, PipelineStopped,
                     SettingsError, StageFailed)
from .pipeline import PIPELINE_VERSION, STAGES, run
from .records import PipelineResult, StageRecord
from .settings import PipelineSettings, default_settings, parse_settings

__all__ = [
    "PIPELINE_VERSION", "STAGES", "AIModuleError", "InputError", "ModelNotAvailable", "NoObjectFound",
    "PipelineResult", "PipelineSettings", "PipelineStopped", "SettingsError", "StageFailed", "StageRecord",
    "default_settings", "parse_settings", "run",
]
