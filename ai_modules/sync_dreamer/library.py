"""`generate_multiview`: the library call, from an RGBA cutout to 16 view files and their cameras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..models import resolve_models_dir
from .generate import SyncDreamer

_CACHE: dict[tuple[Path, str], SyncDreamer] = {}


def generate_multiview(image: str | Path | Image.Image, out_dir: str | Path, elevation: float = 30.0, *,
                       models_dir: str | Path | None = None, device: str | None = None, seed: int = 6033,
                       steps: int = 50, cfg_scale: float = 2.0) -> list[Path]:
    """16 views of the object in `image` on SyncDreamer's ring, written as ``view_00.png`` ... ``view_15.png``
    (256x256 RGB on white) with ``cameras.json`` (world-to-camera matrices, K, azimuths, elevation).

    Args:
        image: an RGBA cutout (alpha marks the object), as a path or a PIL image.
        out_dir: where the files go (created if missing).
        elevation: the elevation the photo was taken from, degrees.
        models_dir: where ``syncdreamer/syncdreamer-pretrain.ckpt`` is (`resolve_models_dir` when None).
        device: "cuda", "cuda:N" or "cpu" (default: CUDA when available). The model stays loaded for
            later calls with the same models dir and device.
        seed, steps, cfg_scale: sampling (generate.py's defaults: 6033, 50 DDIM steps, 2.0).

    Returns:
        The 16 view paths, in azimuth order (view i at 22.5 deg * i).

    Raises:
        ModelNotAvailable: the checkpoint is missing (the message names the path and `glimpsed models pull
            syncdreamer`).
        InputError: `image` is not readable or has no alpha channel.
    """
    rgba = _rgba(image)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (resolve_models_dir(models_dir), str(device))
    if key not in _CACHE:
        _CACHE.clear()                                          # one model at a time: it is large
        _CACHE[key] = SyncDreamer.from_models_dir(key[0], device=device)
    sd = _CACHE[key]
    views = sd.generate(rgba, elevation_deg=elevation, seed=seed, steps=steps, cfg_scale=cfg_scale)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, view in enumerate(views):
        paths.append(out / f"view_{i:02d}.png")
        view.save(paths[-1])
    viewmats, ks = sd.cameras()
    (out / "cameras.json").write_text(json.dumps({
        "azimuths": [22.5 * i for i in range(len(views))], "elevation": 30.0, "input_elevation": elevation,
        "viewmats": viewmats.tolist(), "Ks": ks.tolist(), "width": 256, "height": 256}, indent=1))
    return paths


def _rgba(image: str | Path | Image.Image) -> Image.Image:
    if not isinstance(image, Image.Image):
        try:
            with Image.open(image) as opened:
                image = opened.copy()
        except OSError as exc:
            raise InputError(f"cannot read {image} as an image ({exc})") from exc
    if image.mode not in ("RGBA", "LA") or not (np.asarray(image.getchannel("A")) > 0).any():
        raise InputError("`image` must be an RGBA cutout whose alpha marks the object, got mode "
                         f"{image.mode}; cut the object out first (e.g. with rembg or glimpsed's segment stage)")
    return image.convert("RGBA")
