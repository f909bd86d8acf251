"""Fixtures for the ai_modules unit tests: small synthetic photos written to tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def disc_photo(size: int = 200, centre: tuple[float, float] = (90.0, 110.0), radius: float = 50.0,
               fg: tuple[int, int, int] = (220, 30, 30), bg: tuple[int, int, int] = (128, 128, 128),
               ) -> tuple[np.ndarray, np.ndarray]:
    """A disc on a plain background: ([H,W,3] uint8, [H,W] bool true mask)."""
    yy, xx = np.mgrid[:size, :size]
    mask = (xx + 0.5 - centre[0]) ** 2 + (yy + 0.5 - centre[1]) ** 2 < radius ** 2
    rgb = np.empty((size, size, 3), np.uint8)
    rgb[:] = bg
    rgb[mask] = fg
    return rgb, mask


@pytest.fixture
def disc_png(tmp_path: Path) -> Path:
    """A 200x200 PNG: red disc (r=50) on grey."""
    path = tmp_path / "disc.png"
    Image.fromarray(disc_photo()[0]).save(path)
    return path


@pytest.fixture
def small_settings() -> dict:
    """Settings that keep a pipeline run well under a second."""
    return {"device": "cpu", "segment": {"size": 96, "object_size": 72, "work_size": 160},
            "multiview": {"view_size": 64}, "reconstruct": {"iterations": 4, "size": 64},
            "export": {"preview_size": 48, "preview_azimuths": [0, 180]}}


@pytest.fixture
def make_disc():
    """The `disc_photo` factory (test modules here are not a package, so they take it as a fixture)."""
    return disc_photo
