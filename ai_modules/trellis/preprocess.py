"""TRELLIS's image preprocessing for an RGBA cutout, reproduced step for step (SPEC section 1, quirks 1-2).

Why Pillow itself: the crop rounds its float box with Python ``round`` (half to even) and LANCZOS resamples an RGBA
image in 8-bit premultiplied space with fixed-point weights. Calling the same library is the only practical way to
get the same bytes, so this module does the arithmetic around those two calls and leaves them to Pillow.

    rgb518 = preprocess_rgba(Image.open("cutout.png"))   # 518x518 RGB on black, uint8
    x = to_model_input(rgb518)                           # [1,3,518,518] float32, ImageNet-normalised

The rembg path (an image without a usable alpha channel) is not implemented: `preprocess_rgba` refuses it.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import InputError, NoObjectFound

SIZE = 518                       # DINOv2 input size in TRELLIS
ALPHA_THRESHOLD = 0.8 * 255      # bbox pixels have alpha strictly above this (204.0)
CROP_SCALE = 1.2                 # the square crop is 1.2x the larger bbox extent
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_box(alpha: np.ndarray) -> tuple[float, float, float, float]:
    """The float (left, top, right, bottom) box TRELLIS crops: centred on the alpha > 204 bbox, 1.2x its extent.

    The extents are max - min without +1 and the size is truncated by ``int``; the centre may be x.5, so the box
    may hold halves (Pillow rounds them half to even when cropping).

    Raises:
        NoObjectFound: no pixel has alpha > 204.
    """
    ys, xs = np.nonzero(alpha > ALPHA_THRESHOLD)
    if xs.size == 0:
        raise NoObjectFound("no pixel of the cutout has alpha > 204 (80% opacity)",
                            "give an RGBA image whose object is opaque, not only faintly visible")
    x_min, x_max, y_min, y_max = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    size = int(max(x_max - x_min, y_max - y_min) * CROP_SCALE)
    half = size // 2
    return (cx - half, cy - half, cx + half, cy + half)


def crop_and_resize(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    """(cropped RGBA, 518x518 RGBA) as TRELLIS makes them with Pillow; the outside of the image crops to (0,0,0,0).

    Raises:
        InputError: the image is not RGBA or its alpha is all 255 (TRELLIS would run rembg, not implemented here).
        NoObjectFound: no pixel has alpha > 204.
    """
    if image.mode != "RGBA":
        raise InputError(f"TRELLIS preprocessing needs an RGBA cutout, got mode {image.mode!r}; "
                         "remove the background first (the rembg path is not implemented here)")
    alpha = np.asarray(image)[:, :, 3]
    if np.all(alpha == 255):
        raise InputError("the RGBA image is fully opaque (alpha all 255), so it is not a cutout; "
                         "remove the background first (the rembg path is not implemented here)")
    cropped = image.crop(crop_box(alpha))
    return cropped, cropped.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """[H,W,4] uint8 -> [H,W,3] uint8: rgb/255 * alpha/255 in float32, times 255, truncated (TRELLIS's exact order).

    Pillow's resize already worked premultiplied; TRELLIS multiplies by alpha once more (quirk 2)."""
    f = rgba.astype(np.float32) / np.float32(255)
    rgb = f[:, :, :3] * f[:, :, 3:4]
    return (rgb * np.float32(255)).astype(np.uint8)


def preprocess_rgba(image: Image.Image) -> Image.Image:
    """TRELLIS's ``preprocess_image`` on an RGBA cutout: the 518x518 RGB image on black (mode "RGB", uint8).

    Raises:
        InputError: the image is not an RGBA cutout (see `crop_and_resize`).
        NoObjectFound: no pixel has alpha > 204.
    """
    _, resized = crop_and_resize(image)
    return Image.fromarray(premultiply(np.asarray(resized)))


def to_model_input(rgb518: Image.Image | np.ndarray) -> torch.Tensor:
    """The DINOv2 input TRELLIS's ``encode_image`` makes: [1,3,518,518] float32, x/255 then ImageNet-normalised.

    A PIL image of another size is resized to 518 with LANCZOS first, as ``encode_image`` does (a no-op at 518).
    An array must be [518,518,3] uint8.

    Raises:
        ValueError: an array of another shape or dtype.
    """
    if isinstance(rgb518, Image.Image):
        if rgb518.size != (SIZE, SIZE):
            rgb518 = rgb518.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
        arr = np.asarray(rgb518.convert("RGB"))
    else:
        arr = np.asarray(rgb518)
        if arr.shape != (SIZE, SIZE, 3) or arr.dtype != np.uint8:
            raise ValueError(f"expected a [{SIZE},{SIZE},3] uint8 array, got {list(arr.shape)} {arr.dtype}; "
                             "pass the output of preprocess_rgba")
    x = torch.from_numpy(arr.astype(np.float32) / np.float32(255)).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0).contiguous()
