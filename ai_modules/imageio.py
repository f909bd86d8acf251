"""Array and image files: .npy and PNG (atomic writes), photo loading (numpy, Pillow; no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import FormatError, InputError
from .fileio import atomic_path


def save_npy(path: Path, array: np.ndarray) -> None:
    """Save one array as .npy atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def load_npy(path: Path, shape_ndim: int, dtype: Any = np.float32) -> np.ndarray:
    """Load a .npy written by `save_npy`, checking its rank and dtype.

    Raises:
        FormatError: the file is not a .npy of that rank and dtype.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable .npy file ({exc})") from exc
    if array.ndim != shape_ndim or array.dtype != dtype:
        raise FormatError(f"{path}: expected a {shape_ndim}-d {np.dtype(dtype)} array, "
                          f"got {array.ndim}-d {array.dtype}")
    return array


def save_png(path: Path, image: np.ndarray) -> None:
    """Save a [H,W] / [H,W,3] / [H,W,4] float image in 0..1 (or uint8) as PNG atomically."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")


def load_image(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a PNG/JPEG (RGB, RGBA, L, LA, P, I;16...) as 8-bit arrays.

    Args:
        path: an image file on local disk (already EXIF-oriented by the caller).

    Returns:
        rgb: [H,W,3] uint8.
        alpha: [H,W] uint8, or None when the image has no alpha channel.

    Raises:
        InputError: the file cannot be decoded as an image.
    """
    try:
        with Image.open(path) as im:
            im.load()
            return _to_arrays(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"cannot read {path} as an image ({exc}); supply a PNG or JPEG file") from exc


def load_rgba(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an RGBA artifact written by a stage: (rgb [H,W,3], alpha [H,W]) float32 0..1.

    Raises:
        FormatError: not a readable image, or no alpha channel.
    """
    try:
        rgb, alpha = load_image(path)
    except InputError as exc:
        raise FormatError(f"{path}: not a readable PNG") from exc
    if alpha is None:
        raise FormatError(f"{path}: expected an RGBA image")
    return rgb.astype(np.float32) / 255.0, alpha.astype(np.float32) / 255.0


def _to_arrays(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        scale = 255.0 if im.mode == "F" else 255.0 / 65535.0
        grey = np.clip(np.asarray(im, dtype=np.float32) * scale + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2), None
    has_alpha = im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (im.mode == "P" and "transparency" in im.info)
    data = np.asarray(im.convert("RGBA" if has_alpha else "RGB"), dtype=np.uint8)
    if has_alpha:
        return np.ascontiguousarray(data[..., :3]), np.ascontiguousarray(data[..., 3])
    return np.ascontiguousarray(data), None
