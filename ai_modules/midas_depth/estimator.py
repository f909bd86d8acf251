"""`DepthEstimator`: a MiDaS/DPT model loaded once and reused, plus a small cache of them.

The model is transformers' `DPTForDepthEstimation` with its `DPTImageProcessor`,
read from a Hugging Face snapshot directory (``Intel/dpt-hybrid-midas`` layout:
``config.json``, ``preprocessor_config.json``, ``model.safetensors`` or
``pytorch_model.bin``) under ``models_dir/depth/dpt-hybrid-midas``. transformers
is imported when the first estimator loads, not when this module is imported.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import FormatError
from ..fileio import sha256_file
from ..models import model_status
from . import functional as F
from .functional import ImageLike

MODEL_NAME = "dpt-hybrid-midas"
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
CACHE_SIZE = 2
# Parameters DPT registers but never uses (the first fusion layer gets no residual input); checkpoints in
# the original layout, Intel/dpt-hybrid-midas included, do not have them (transformers issue #28292).
UNUSED_PARAMETERS = ("neck.fusion_stage.layers.0.residual_layer1.",)


class DepthEstimator:
    """A MiDaS/DPT depth model held on one device; load once, predict many images.

    fp16 on CUDA, fp32 elsewhere; every forward runs under `torch.inference_mode()`.

    Args:
        models_dir: root of the model files (see `ai_modules.models.resolve_models_dir`).
        device: torch device, e.g. "cpu", "cuda", "cuda:1".
        batch_size: images per forward pass in `predict`.

    Raises:
        ModelNotAvailable: the snapshot directory is missing (or empty); names the path and how to fetch it.
        FormatError: the directory exists but a file is missing or unreadable; names the file.

    Example:
        >>> est = DepthEstimator("~/models", device="cuda")            # doctest: +SKIP
        >>> depths = est.predict([photo_a, photo_b])                    # doctest: +SKIP
        >>> conf = est.confidence(photo_a, depths[0], mask=alpha > 0.5)  # doctest: +SKIP
    """

    def __init__(self, models_dir: str | Path | None = None, device: str | torch.device = "cpu", *,
                 batch_size: int = 4) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
        self.model_dir = find_snapshot(models_dir)
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.batch_size = batch_size
        self.weights_file = _weights_file(self.model_dir)
        self.processor, self.model = _load(self.model_dir, self.weights_file, self.device, self.dtype)
        self._files: list[dict[str, Any]] | None = None

    def predict(self, image: ImageLike | Sequence[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """Relative inverse depth of one image, or of each image in a list (batched).

        Args:
            image: a PIL image or [H,W,3|4] uint8 / float 0..1 array; or a list/tuple of them
                (any sizes).

        Returns:
            [H,W] float32 per image at its own resolution (a list for a list input):
            affine-invariant inverse depth, larger = nearer (see `estimate_depth`).
        """
        if isinstance(image, (list, tuple)):
            return self._predict([F.as_rgb(im) for im in image])
        return self._predict([F.as_rgb(image)])[0]

    def confidence(self, image: ImageLike, depth: np.ndarray | None = None, *,
                   mask: np.ndarray | None = None) -> np.ndarray:
        """Per-pixel confidence of the prediction on `image` (see `estimate_depth_confidence`).

        Args:
            image: as in `predict` (one image).
            depth: [H,W] float, this image's prediction when already computed (reused, not predicted again).
            mask: [H,W] bool or float 0..1 (``>= 0.5`` inside); None for the whole image.

        Returns:
            [H,W] float32 in 0..1, 0 outside `mask`.
        """
        rgb = F.as_rgb(image)
        shape = rgb.shape[:2]
        region = None if mask is None else F.as_mask(mask, shape)
        flipped = np.ascontiguousarray(rgb[:, ::-1])
        if depth is None:
            depth, on_flip = self._predict([rgb, flipped])
        else:
            if not isinstance(depth, np.ndarray) or depth.shape != shape or not np.issubdtype(depth.dtype, np.floating):
                got = f"{type(depth).__name__} {getattr(depth, 'dtype', '')} {list(getattr(depth, 'shape', []))}"
                raise ValueError(f"`depth` must be a float array of the image's shape {list(shape)}, got {got}")
            (on_flip,) = self._predict([flipped])
        return F.flip_confidence(depth, on_flip[:, ::-1], region)

    def predict_with_confidence(self, images: Sequence[ImageLike], masks: Sequence[np.ndarray | None]
                                ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`predict` and `confidence` of many views at once: the views and their mirror images go through the
        network in `batch_size` batches (one pass per batch instead of two per view).

        Returns:
            One ``(depth, confidence)`` per image, as `predict` and `confidence` give them.
        """
        rgbs = [F.as_rgb(im) for im in images]
        out = self._predict(rgbs + [np.ascontiguousarray(rgb[:, ::-1]) for rgb in rgbs])
        return [(depth, F.flip_confidence(depth, on_flip[:, ::-1], None if m is None else F.as_mask(m, depth.shape)))
                for depth, on_flip, m in zip(out[:len(rgbs)], out[len(rgbs):], masks)]

    def _predict(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Preprocess each image, batch those of one processed size, upsample each back (bicubic)."""
        pixels = [self._preprocess(im) for im in images]                           # each [1,3,h,w] float32
        out: list[np.ndarray | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, px in enumerate(pixels):
            by_shape.setdefault(tuple(px.shape), []).append(i)
        for indices in by_shape.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                batch = torch.cat([pixels[i] for i in chunk]).to(self.device, self.dtype)
                pred = self._forward(batch)                                         # [B,h',w'] model dtype
                for j, i in enumerate(chunk):
                    out[i] = _upsample(pred[j], images[i].shape[:2])
        return out  # type: ignore[return-value]

    def _preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        # uint8 goes through the processor as-is (as a PIL image would); float 0..1 skips its 1/255 rescale.
        kwargs = {} if rgb.dtype == np.uint8 else {"do_rescale": False}
        return self.processor(images=rgb, return_tensors="pt", input_data_format="channels_last",
                              **kwargs)["pixel_values"].float()

    def _forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.model is None:
            raise RuntimeError(f"{self!r} was unloaded; create a new DepthEstimator")
        with torch.inference_mode():
            return self.model(pixel_values=pixel_values).predicted_depth

    def model_files(self) -> list[dict[str, Any]]:
        """The files loaded, for the stage record: ``[{"path", "bytes", "sha256"}]`` (hashed once)."""
        if self._files is None:
            paths = [self.model_dir / CONFIG_FILE, self.model_dir / PROCESSOR_FILE, self.weights_file]
            self._files = [{"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in paths]
        return list(self._files)

    def unload(self) -> None:
        """Drop the model (and free its device memory); the estimator cannot predict afterwards."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __repr__(self) -> str:
        return f"DepthEstimator({str(self.model_dir)!r}, device={str(self.device)!r}, dtype={self.dtype})"


def find_snapshot(models_dir: str | Path | None = None) -> Path:
    """The snapshot directory of dpt-hybrid-midas under `models_dir`, checked for its files.

    Returns:
        The directory (as `model_status` reports it).

    Raises:
        ModelNotAvailable: the directory does not exist or is empty.
        FormatError: it has files but ``config.json`` / ``preprocessor_config.json`` is missing or
            not a DPT config, or no weights file is there.
    """
    status = model_status(MODEL_NAME, models_dir)
    path = status.path
    if path is None or not path.is_dir() or not any(path.iterdir()):
        raise status.error()
    config = path / CONFIG_FILE
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except FileNotFoundError as exc:
        raise FormatError(f"{config} is missing: {path} is not a complete Hugging Face snapshot of "
                          f"{status.source}; fetch it again") from exc
    except (OSError, ValueError, AttributeError) as exc:
        raise FormatError(f"{config}: not a readable JSON config ({exc}); fetch {status.source} again") from exc
    if model_type != "dpt":
        raise FormatError(f"{config}: `model_type` must be \"dpt\", got {model_type!r}; "
                          f"this directory should hold {status.source}")
    if not (path / PROCESSOR_FILE).is_file():
        raise FormatError(f"{path / PROCESSOR_FILE} is missing: {path} is not a complete snapshot of "
                          f"{status.source}; fetch it again")
    _weights_file(path)
    return path


def _weights_file(path: Path) -> Path:
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return path / name
    raise FormatError(f"{path / WEIGHT_FILES[0]} is missing (no {' / '.join(WEIGHT_FILES)} in {path}); "
                      f"fetch the snapshot again")


def _load(path: Path, weights: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """Load processor and model from the local snapshot (never the network); broken files -> FormatError."""
    from transformers import DPTForDepthEstimation, DPTImageProcessor

    try:
        processor = DPTImageProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise FormatError(f"{path / PROCESSOR_FILE}: cannot load the image processor ({exc})") from exc
    if weights.suffix == ".safetensors":
        _check_safetensors(weights)
    try:
        model, info = DPTForDepthEstimation.from_pretrained(path, local_files_only=True, dtype=dtype,
                                                            output_loading_info=True)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise FormatError(f"{weights}: cannot load the DPT weights ({type(exc).__name__}: {exc})") from exc
    missing = [k for k in info.get("missing_keys", ()) if not k.startswith(UNUSED_PARAMETERS)]
    bad = {k: v for k, v in (("missing_keys", missing), ("mismatched_keys", info.get("mismatched_keys")))
           if v}
    if bad:
        shown = "; ".join(f"{k}: {sorted(map(str, v))[:5]}" for k, v in bad.items())
        raise FormatError(f"{weights} does not match {path / CONFIG_FILE} ({shown})")
    return processor, model.to(device).eval()


def _check_safetensors(path: Path) -> None:
    """Open the header and every tensor's extent, so a truncated or foreign file fails with its name."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                f.get_slice(key).get_shape()
    except (SafetensorError, OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable safetensors file ({exc}); fetch it again") from exc


def _upsample(pred: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """[h,w] prediction -> [H,W] float32, bicubic, align_corners=False (as MiDaS's run.py)."""
    up = torch.nn.functional.interpolate(pred.float()[None, None], size=size, mode="bicubic", align_corners=False)
    return up[0, 0].cpu().numpy().astype(np.float32, copy=False)


_cache: OrderedDict[tuple[str, str], DepthEstimator] = OrderedDict()
_cache_lock = threading.Lock()


def cached_estimator(models_dir: str | Path | None = None, device: str | torch.device = "cpu") -> DepthEstimator:
    """A shared `DepthEstimator` for (resolved snapshot dir, device).

    Holds at most `CACHE_SIZE` estimators and drops the least recently used. The
    snapshot's files are checked on every call (a few stats), so a deleted
    snapshot raises `ModelNotAvailable` even while an estimator for it is cached.
    """
    path = find_snapshot(models_dir)
    key = (str(path.resolve()), str(torch.device(device)))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        estimator = DepthEstimator(models_dir, device)
        _cache[key] = estimator
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return estimator


def clear_cache() -> None:
    """Drop every cached estimator (their memory is freed once no caller holds them either)."""
    with _cache_lock:
        _cache.clear()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
