"""What makes two results the same: the photo's content, the pipeline version, the settings that change
outputs (as coerced, so `"256"` and `256` agree) and the model files used.

Standard library only: the daemon computes these in its light process at intake.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .settings import PipelineSettings, parse_settings
from .stages import model_identity


def _digest(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_hash(settings: Mapping[str, Any] | PipelineSettings | None) -> str:
    """16 hex digits over the effective (validated, coerced, defaults filled in) pipeline settings.

    Raises:
        SettingsError: invalid settings.
    """
    return _digest(parse_settings(settings).to_dict())


def result_identity(settings: Mapping[str, Any] | PipelineSettings | None, models_dir: Path | None,
                    pipeline_version: str) -> dict[str, Any]:
    """``{"pipeline_version", "config_hash", "models": [...], "key"}``: `key` changes whenever a job would
    produce a different result for the same photo (another version, setting, backend or model file)."""
    parsed = parse_settings(settings)
    models = [{k: m[k] for k in ("stage", "name", "path", "bytes", "mtime_ns")} for m in model_identity(parsed, models_dir)]
    identity = {"pipeline_version": pipeline_version, "config_hash": config_hash(parsed), "models": models}
    return {**identity, "key": _digest(identity)}
