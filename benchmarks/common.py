"""Shared by the benchmark scripts: where the repo is, which commit ran, the Gaussians' tensor names."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GAUSSIAN_TENSORS = ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest")


def commit() -> str:
    """Short hash of HEAD, or "unknown" outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=False, timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"
