"""DINOv2 patch features for the refine stage's feature-consistency gate.

Why: an enhanced view (SDXL on a render of the fitted Gaussians) may invent detail that
the object does not have. Where it only sharpens what the render shows, its DINOv2 patch
tokens stay close to the render's; where it hallucinates a new part, they do not. The
per-pixel cosine similarity of the two feature maps (`feature_similarity`) therefore
marks the pixels that are safe to back-project into the Gaussians.

The model is ``timm/vit_small_patch14_dinov2.lvd142m`` (ViT-S/14, 21 M parameters), read
by timm from a local folder in the Hugging Face repo's layout (``models_dir/refine/dinov2``:
``config.json`` + ``model.safetensors``); nothing is fetched over the network. timm is
imported when a model loads, not when this module is imported.

Library calls::

    model = load_dinov2(folder, "cuda")
    fa = patch_features(model, enhanced)        # [B,H,W,3] 0..1 -> [B,h,w,C], unit length
    fb = patch_features(model, rendered)
    sim = feature_similarity(fa, fb, (H, W))    # [B,H,W] cosine similarity, -1..1
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import FeatureModelError, ModelNotAvailable
from ..models import MODEL_BY_NAME

MODEL_NAME = "dinov2"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PULL_HINT = f"run `glimpsed models pull {MODEL_NAME}` on a machine with internet"


def load_dinov2(path: Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a DINOv2 ViT with timm from `path` (``config.json`` + ``model.safetensors``), in eval mode.

    Built with ``dynamic_img_size=True``, so that any input size that is a multiple of the
    patch size works (the position embeddings are interpolated), not only the 518 px it was
    trained at. fp16 on CUDA, fp32 elsewhere.

    Args:
        path: the model folder, e.g. ``models_dir/refine/dinov2``.
        device: torch device, e.g. "cpu", "cuda", "cuda:1".

    Returns:
        The timm `VisionTransformer` (no gradients needed: call it under `torch.no_grad`).

    Raises:
        ModelNotAvailable: `path` does not exist or is empty.
        FeatureModelError: `config.json` is missing or unreadable, the weights are missing,
            unreadable or do not match the config, or the model is not a timm ViT; names the folder.
    """
    from safetensors import SafetensorError
    from timm import create_model

    path = Path(path).expanduser()
    device = torch.device(device)
    if not path.is_dir() or not any(path.iterdir()):
        spec = MODEL_BY_NAME[MODEL_NAME]
        raise ModelNotAvailable(spec.stage, spec.backend, str(path), spec.sources[0].describe())
    _check_config(path)
    if not (path / WEIGHTS_FILE).is_file():
        raise FeatureModelError(str(path), f"{WEIGHTS_FILE} is missing", PULL_HINT)
    try:
        model = create_model(f"local-dir:{path}", pretrained=True, dynamic_img_size=True)
    except (torch.cuda.OutOfMemoryError, PermissionError):
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, AssertionError, SafetensorError) as exc:
        # timm's complaints: unknown architecture, a truncated or foreign weights file, missing or
        # mismatched tensors (strict loading), a config key of the wrong type.
        raise FeatureModelError(str(path), f"timm cannot load it ({type(exc).__name__}: {_first_line(exc)})",
                                PULL_HINT) from exc
    if not all(hasattr(model, a) for a in ("patch_embed", "num_prefix_tokens", "forward_features")):
        raise FeatureModelError(str(path), f"{type(model).__name__} is not a timm ViT (no patch tokens)", PULL_HINT)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def patch_features(model: torch.nn.Module, images: torch.Tensor, *, batch_size: int = 8) -> torch.Tensor:
    """L2-normalised DINOv2 patch tokens of a batch of RGB images.

    Each image is resized (bilinear, antialiased) to the nearest multiple of the patch size
    per side (e.g. 256 -> 252 with 14 px patches), normalised with the model's mean/std and
    run through ``model.forward_features``; the prefix tokens (cls, registers) are dropped.

    Args:
        model: from `load_dinov2` (any timm ViT built with ``dynamic_img_size=True``).
        images: [B,H,W,3] float RGB in 0..1, any H and W, on any device.
        batch_size: images per forward pass (bounds the memory).

    Returns:
        [B,h,w,C] float32 on the model's device, each token of unit length;
        h = round(H / patch), w = round(W / patch) (at least 1).

    Raises:
        ValueError: `images` is not a [B,H,W,3] floating-point tensor, or `batch_size` < 1.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] != 3:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"`images` must be a [B,H,W,3] tensor, got {got}")
    if not images.is_floating_point():
        raise ValueError(f"`images` must be float RGB in 0..1, got dtype {images.dtype}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
    param = next(model.parameters())
    patch_h, patch_w = model.patch_embed.patch_size
    height, width = images.shape[1:3]
    h, w = max(1, round(height / patch_h)), max(1, round(width / patch_w))
    cfg = model.pretrained_cfg
    mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), device=param.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), device=param.device).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for chunk in images.split(batch_size):
            x = chunk.to(device=param.device, dtype=torch.float32).permute(0, 3, 1, 2)   # [b,3,H,W]
            if (height, width) != (h * patch_h, w * patch_w):
                x = F.interpolate(x, size=(h * patch_h, w * patch_w), mode="bilinear", align_corners=False,
                                  antialias=True)
            x = ((x - mean) / std).to(param.dtype)
            tokens = model.forward_features(x)[:, model.num_prefix_tokens:]               # [b,h*w,C]
            out.append(F.normalize(tokens.float(), dim=-1).reshape(len(chunk), h, w, -1))
    return torch.cat(out)


def feature_similarity(a: torch.Tensor, b: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-patch cosine similarity of two feature maps, upsampled to an image size.

    Args:
        a: [B,h,w,C] features (e.g. of the enhanced views, from `patch_features`).
        b: [B,h,w,C] features of the same shape (e.g. of the renders they came from).
        size: (H, W) of the output, usually the images' size.

    Returns:
        [B,H,W] float32 in -1..1 (1: the same feature), bilinear between patch centres.

    Raises:
        ValueError: `a` and `b` differ in shape or are not 4-D, or `size` is not two positive integers.
    """
    if a.ndim != 4 or a.shape != b.shape:
        raise ValueError(f"`a` and `b` must be [B,h,w,C] of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(f"`size` must be (H, W) positive integers, got {size!r}")
    sim = F.cosine_similarity(a.float(), b.float(), dim=-1)                               # [B,h,w]
    up = F.interpolate(sim[:, None], size=tuple(size), mode="bilinear", align_corners=False)
    return up[:, 0].clamp(-1.0, 1.0)


def _check_config(path: Path) -> None:
    """`config.json` is a JSON object naming an architecture (timm's own errors would not name the folder)."""
    config = path / CONFIG_FILE
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise FeatureModelError(str(path), f"{CONFIG_FILE} is missing", PULL_HINT) from exc
    except (OSError, ValueError) as exc:
        raise FeatureModelError(str(path), f"{CONFIG_FILE} is not readable JSON ({exc})", PULL_HINT) from exc
    if not isinstance(cfg, dict) or not isinstance(cfg.get("architecture"), str):
        raise FeatureModelError(str(path), f"{CONFIG_FILE} must be a JSON object with an `architecture` "
                                           f"(timm's layout), got {str(cfg)[:80]}", PULL_HINT)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, shortened (a state-dict error lists every key)."""
    text = " ".join(str(exc).split()) or "no message"
    return text if len(text) <= limit else text[:limit] + "..."
