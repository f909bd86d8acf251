"""Where the shared test data lives: ``../shared/<name>`` beside the repository, or ``$GLIMPSED_SHARED_DIR/<name>``
(the GPU machine and other checkouts point there). Tests that use it skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_dir(name: str) -> Path:
    """The folder of one shared data set, e.g. ``shared_dir("trellis")``."""
    env = os.environ.get("GLIMPSED_SHARED_DIR")
    return (Path(env) if env else REPO.parent / "shared") / name
