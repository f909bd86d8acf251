"""Pure image helpers of the enhance backend: input checks, processing size, depth -> control image.

No diffusers here: these run (and are tested) without the models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..errors import InputError

_ASPECT_TOLERANCE = 0.02  # depth map and image may differ in size, not in shape


def processing_size(width: int, height: int, resolution: int = 1024, multiple: int = 8) -> tuple[int, int]:
    """The (width, height) the diffusion model runs at: about ``resolution**2`` pixels, the input's aspect.

    SDXL was trained on ~1024x1024 pixel areas (in aspect buckets); small rendered views
    are scaled up to that area and large photos down. Both sides are rounded to a
    multiple of `multiple` (the VAE downsamples by 8).

    Example:
        >>> processing_size(256, 256)
        (1024, 1024)
        >>> processing_size(640, 480)
        (1184, 888)
    """
    scale = resolution / math.sqrt(width * height)
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def as_rgb_image(image: Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """`image` as an 8-bit RGB PIL image; alpha (RGBA, LA) is composited on white, the pipeline's background.

    Accepts a PIL image, or an array/tensor ``[H,W,3|4]`` that is uint8 (0..255) or float (0..1).

    Raises:
        InputError: wrong shape, dtype or value range.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")
    array = _as_numpy(image, "image")
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise InputError(f"`image` must be [H,W,3] or [H,W,4], got shape {tuple(array.shape)}")
    if array.dtype == np.uint8:
        rgb = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        rgb = array.astype(np.float32)
        if not np.isfinite(rgb).all() or rgb.min() < 0.0 or rgb.max() > 1.0:
            raise InputError(f"`image` must hold finite values in 0..1 when float, got range "
                             f"{np.nanmin(rgb):.4g}..{np.nanmax(rgb):.4g}")
    else:
        raise InputError(f"`image` must be uint8 (0..255) or float (0..1), got dtype {array.dtype}")
    if rgb.shape[2] == 4:
        alpha = rgb[..., 3:]
        rgb = rgb[..., :3] * alpha + (1.0 - alpha)
    return Image.fromarray(np.round(rgb * 255.0).astype(np.uint8), "RGB")


def depth_control_image(depth_map: Image.Image | np.ndarray | torch.Tensor, size: tuple[int, int],
                        image_size: tuple[int, int] | None = None) -> Image.Image:
    """The ControlNet's conditioning image: depth normalised to 0..1, near = bright, grey as RGB.

    An array is min-max normalised, as the controlnet-depth-sdxl-1.0 model card does with
    DPT's output; larger values must mean nearer (the `depth` stage's height, MiDaS/DPT
    relative inverse depth). For metric distance (larger = farther) pass ``-distance``.
    A constant map gives an all-black control image. A PIL image is taken as an
    already-made control image (its luminance).

    Args:
        depth_map: ``[H,W]`` (or ``[H,W,1]``) array/tensor of any scale, or a PIL image.
        size: (width, height) of the result, the processing size.
        image_size: (width, height) of the image it guides; the aspect ratios must agree.

    Raises:
        InputError: wrong shape, non-finite values, or an aspect ratio unlike the image's.
    """
    if isinstance(depth_map, Image.Image):
        grey = depth_map.convert("L")
        shape_wh = grey.size
        resized = grey.resize(size, Image.Resampling.BILINEAR)
    else:
        depth = _as_numpy(depth_map, "depth_map")
        if depth.ndim == 3 and depth.shape[2] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2:
            raise InputError(f"`depth_map` must be [H,W], got shape {tuple(depth.shape)}")
        if not np.issubdtype(depth.dtype, np.number) or depth.dtype == np.bool_:
            raise InputError(f"`depth_map` must be numeric, got dtype {depth.dtype}")
        depth = depth.astype(np.float32)
        bad = int((~np.isfinite(depth)).sum())
        if bad:
            raise InputError(f"`depth_map` must be finite everywhere, got NaN or inf in {bad} pixels "
                             "(fill the background with the farthest value)")
        lo, hi = float(depth.min()), float(depth.max())
        unit = (depth - lo) / (hi - lo) if hi > lo else np.zeros_like(depth)
        shape_wh = (depth.shape[1], depth.shape[0])
        resized_f = Image.fromarray(unit, "F").resize(size, Image.Resampling.BILINEAR)
        resized = Image.fromarray(np.clip(np.round(np.asarray(resized_f) * 255.0), 0, 255).astype(np.uint8), "L")
    if image_size is not None:
        aspect_depth = shape_wh[0] / shape_wh[1]
        aspect_image = image_size[0] / image_size[1]
        if abs(aspect_depth / aspect_image - 1.0) > _ASPECT_TOLERANCE:
            raise InputError(f"`depth_map` must have the image's aspect ratio ({image_size[0]}x{image_size[1]}), "
                             f"got {shape_wh[0]}x{shape_wh[1]}")
    return resized.convert("RGB")


def _as_numpy(value: object, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu")
        return (tensor.float() if tensor.is_floating_point() else tensor).numpy()
    if isinstance(value, np.ndarray):
        return value
    raise InputError(f"`{name}` must be a PIL image, a numpy array or a torch tensor, got {type(value).__name__}")
