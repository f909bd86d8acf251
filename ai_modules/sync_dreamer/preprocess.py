"""Input preprocessing of SyncDreamer (`ldm/util.py: prepare_inputs`) and the CLIP pixel transform.

Kept bit-exact with the original, quirks included (SYNCDREAMER_SPEC.md section 1): the alpha
bounding box is cropped with a right/bottom-exclusive PIL box (the last object row and column
are dropped), sizes are truncated, and Pillow's bicubic resampler does the resizing.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InputError
from .config import CLIP_INPUT_SIZE, CLIP_MEAN, CLIP_STD


def add_margin(image: Image.Image, size: int, color: int = 0) -> Image.Image:
    """Paste `image` centred (floor division) on a `size` x `size` canvas of the same mode filled with `color`."""
    width, height = image.size
    result = Image.new(image.mode, (size, size), color)
    result.paste(image, ((size - width) // 2, (size - height) // 2))
    return result


def prepare_image(rgba: Image.Image, crop_size: int = 200, image_size: int = 256) -> torch.Tensor:
    """Crop to the alpha, scale the long side to `crop_size`, centre on `image_size`, composite on white.

    Args:
        rgba: the cutout, mode "RGBA" (alpha > 0 marks the object).
        crop_size: long side of the object in pixels, or -1 to pad the whole image square instead.
        image_size: output side (256 for the published model).

    Returns:
        [image_size, image_size, 3] float32 in [-1, 1], HWC.

    Raises:
        InputError: the image is not RGBA or its alpha is empty.
    """
    if rgba.mode != "RGBA":
        raise InputError(f"`rgba_image` must be an RGBA cutout (alpha marks the object), got mode {rgba.mode!r}; "
                         "run the segment stage first or convert with Image.convert('RGBA')")
    if crop_size != -1:
        if crop_size < 1:
            raise ValueError(f"`crop_size` must be -1 or a positive integer, got {crop_size!r}")
        alpha = np.asarray(rgba)[:, :, 3]
        coords = np.stack(np.nonzero(alpha), 1)[:, (1, 0)]
        if coords.shape[0] == 0:
            raise InputError("`rgba_image` has an empty alpha channel: there is no object to crop")
        min_x, min_y = np.min(coords, 0)
        max_x, max_y = np.max(coords, 0)
        crop = rgba.crop((int(min_x), int(min_y), int(max_x), int(max_y)))
        h, w = crop.height, crop.width
        if h == 0 or w == 0:
            raise InputError("`rgba_image`'s object is a single row or column of pixels; it cannot be cropped")
        scale = crop_size / max(h, w)
        crop = crop.resize((int(scale * w), int(scale * h)), resample=Image.BICUBIC)
        image = add_margin(crop, size=image_size)
    else:
        image = add_margin(rgba, size=max(rgba.height, rgba.width))
        image = image.resize((image_size, image_size), resample=Image.BICUBIC)
    arr = np.asarray(image).astype(np.float32) / 255.0
    mask = arr[:, :, 3:]
    arr[:, :, :3] = arr[:, :, :3] * mask + 1 - mask          # white background, the original's op order
    arr = arr[:, :, :3] * 2.0 - 1.0
    return torch.from_numpy(arr.astype(np.float32))


def elevation_radians(elevation_deg: float) -> torch.Tensor:
    """Input elevation as the original stores it: [1] float32 radians (`np.deg2rad`)."""
    return torch.from_numpy(np.asarray([np.deg2rad(elevation_deg)], np.float32))


def clip_pixels(image_nchw: torch.Tensor) -> torch.Tensor:
    """CLIP input from the [-1,1] image: bicubic 224 (align_corners, no antialias), to [0,1], normalise.

    Args:
        image_nchw: [B,3,H,W] in [-1, 1].

    Returns:
        [B,3,224,224] float32.
    """
    x = F.interpolate(image_nchw, size=(CLIP_INPUT_SIZE, CLIP_INPUT_SIZE), mode="bicubic", align_corners=True,
                      antialias=False)
    x = (x + 1.0) / 2.0
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
