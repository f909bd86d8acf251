"""Where SyncDreamer's weights live and how they get into `SyncDreamerModel`.

Files (under the daemon's ``models_dir``, see `ai_modules.models`)::

    syncdreamer/syncdreamer-pretrain.ckpt      required: the published checkpoint (all 1618 tensors,
                                               CLIP ViT-L/14 and the SD VAE included)
    syncdreamer/ViT-L-14.pt                    optional: OpenAI's CLIP (a TorchScript archive), or
    syncdreamer/clip-vit-large-patch14/        optional: a transformers `openai/clip-vit-large-patch14` snapshot

The published checkpoint already holds `clip_image_encoder.model.visual.*` (generate.py loads it
with strict=True), so the CLIP file is only read when a checkpoint lacks those keys (e.g. a
stripped conversion). Every reader is code-free: `torch.load(weights_only=True, mmap=True)`,
safetensors, or `archive.read_zip_archive` (never `torch.jit.load`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import FormatError, ModelNotAvailable
from ..models import MODEL_BY_NAME
from .archive import module_tensors, read_torch_checkpoint, read_zip_archive
from .clip import OPENAI_UNUSED_KEYS, hf_to_openai
from .config import SyncDreamerConfig

STAGE, BACKEND = "multiview", "syncdreamer"
CKPT_NAME = "syncdreamer-pretrain.ckpt"
CLIP_NAME = "ViT-L-14.pt"
CLIP_HF_DIR = "clip-vit-large-patch14"
PULL_COMMAND = "glimpsed models pull syncdreamer"
CLIP_PREFIX = "clip_image_encoder.model."


@dataclass(frozen=True)
class WeightFiles:
    """Resolved weight files: the checkpoint and, when present, a CLIP source (file or HF directory)."""

    checkpoint: Path
    clip: Path | None = None


@dataclass
class LoadReport:
    """What `load_weights` did: tensors loaded, where CLIP came from, keys left at their init values."""

    loaded: int = 0
    clip_source: str = "checkpoint"
    kept_init: list[str] = field(default_factory=list)


def missing(path: Path, what: str) -> ModelNotAvailable:
    """The error for a missing weight file: names the exact path and the command that fetches it."""
    return ModelNotAvailable(STAGE, BACKEND, str(path), f"`{PULL_COMMAND}` ({what})")


def locate_weights(models_dir: str | Path) -> WeightFiles:
    """Find the weight files under `models_dir`.

    Raises:
        ModelNotAvailable: the checkpoint is missing (the message names its path and
            `glimpsed models pull syncdreamer`).
    """
    root = Path(models_dir).expanduser() / "syncdreamer"
    ckpt = root / CKPT_NAME
    if not ckpt.is_file() or ckpt.stat().st_size == 0:
        raise missing(ckpt, _sources())
    clip = next((p for p in (root / CLIP_NAME, root / CLIP_HF_DIR) if p.exists()), None)
    return WeightFiles(ckpt, clip)


CONFIG_NAME = "config.json"


def config_beside(checkpoint: Path) -> SyncDreamerConfig | None:
    """The model sizes from ``config.json`` next to the checkpoint (`SyncDreamerConfig.to_dict` layout), or None
    for the published sizes. Only a differently sized model (a test stand-in) needs the file.

    Raises:
        FormatError: the file is not valid JSON or names sizes that cannot form the model.
    """
    path = Path(checkpoint).with_name(CONFIG_NAME)
    if not path.is_file():
        return None
    try:
        return SyncDreamerConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{path}: not a SyncDreamer config ({exc}); delete it to use the published sizes") from exc


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of a checkpoint file (`.ckpt`/`.pt`/`.pth` via a safe loader, or `.safetensors`).

    Takes ``ckpt["state_dict"]`` when present (Lightning checkpoints), else the top-level dict.

    Raises:
        ModelNotAvailable: the file does not exist.
        FormatError: the file has no tensor dict.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path, _sources())
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    obj = read_torch_checkpoint(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FormatError(f"{path} holds no state dict of tensors (expected {{'state_dict': {{name: tensor}}}})")
    return dict(obj)


def read_openai_clip(path: str | Path) -> dict[str, torch.Tensor]:
    """OpenAI CLIP weights (names without prefix, e.g. ``visual.conv1.weight``), cast to float32.

    Reads OpenAI's TorchScript `ViT-L-14.pt` with the restricted archive reader (its `code/` is
    never run), or a plain `torch.save` state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise missing(path, "OpenAI CLIP ViT-L/14; optional when the checkpoint contains CLIP")
    obj = read_zip_archive(path)
    tensors = module_tensors(obj) if not (isinstance(obj, Mapping) and obj and
                                          all(isinstance(v, torch.Tensor) for v in obj.values())) else dict(obj)
    if "visual.conv1.weight" not in tensors:
        raise FormatError(f"{path} does not look like an OpenAI CLIP model (no visual.conv1.weight)")
    return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}


def read_hf_clip(directory: str | Path) -> dict[str, torch.Tensor]:
    """A transformers CLIP snapshot (`CLIPVisionModelWithProjection` or `CLIPModel`) renamed to OpenAI names.

    Reads ``model.safetensors`` (or sharded ``model-*.safetensors``), else ``pytorch_model.bin`` (weights-only).
    """
    directory = Path(directory)
    files = sorted(directory.glob("model*.safetensors"))
    if files:
        from safetensors.torch import load_file
        hf: dict[str, torch.Tensor] = {}
        for f in files:
            hf.update(load_file(str(f)))
    elif (directory / "pytorch_model.bin").is_file():
        hf = dict(torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True))
    else:
        raise missing(directory / "model.safetensors", "a transformers openai/clip-vit-large-patch14 snapshot")
    config = directory / "config.json"
    if config.is_file():
        cfg = json.loads(config.read_text())
        act = cfg.get("vision_config", cfg).get("hidden_act", "quick_gelu")
        if act != "quick_gelu":
            raise FormatError(f"{directory}: CLIP `hidden_act` must be quick_gelu (OpenAI's), got {act!r}")
    try:
        tensors = hf_to_openai(hf)
    except KeyError as exc:
        raise FormatError(f"{directory}: {exc.args[0]}") from exc
    return {k: v.float() for k, v in tensors.items()}


def read_clip(path: str | Path) -> dict[str, torch.Tensor]:
    """OpenAI-named CLIP weights from `ViT-L-14.pt` (file) or a transformers snapshot (directory)."""
    path = Path(path)
    return read_hf_clip(path) if path.is_dir() else read_openai_clip(path)


def check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], allowed_missing: tuple[str, ...] = (),
                   assign: bool = False, source: str = "checkpoint") -> list[str]:
    """`load_state_dict` that fails with a FormatError unless every tensor is consumed and shapes match.

    Args:
        allowed_missing: key prefixes that may be absent (they keep their current values).

    Returns:
        The model keys that were absent (all under `allowed_missing`).
    """
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    absent = sorted(set(expected) - set(state))
    bad_missing = [k for k in absent if not k.startswith(allowed_missing)]
    wrong_shape = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    if unexpected or bad_missing or wrong_shape:
        parts = []
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if bad_missing:
            parts.append(f"{len(bad_missing)} missing keys (e.g. {bad_missing[:3]})")
        if wrong_shape:
            parts.append(f"{len(wrong_shape)} shape mismatches (e.g. {wrong_shape[:2]})")
        raise FormatError(f"{source} does not match the SyncDreamer model: " + "; ".join(parts) +
                          " (is it the published syncdreamer-pretrain.ckpt, for the full-size config?)")
    state = {k: (v.float() if v.is_floating_point() and expected[k].dtype == torch.float32 and v.dtype != torch.float32
                 else v) for k, v in state.items()}
    model.load_state_dict(state, strict=False, assign=assign)
    return absent


def load_weights(model: nn.Module, checkpoint: str | Path, clip: str | Path | None = None,
                 assign: bool = False) -> LoadReport:
    """Load the checkpoint (and CLIP from `clip` if the checkpoint lacks it) into `model`.

    Args:
        model: a `SyncDreamerModel` (on CPU, or on the meta device with ``assign=True``).
        checkpoint: `syncdreamer-pretrain.ckpt` (or a `.safetensors` with the same keys).
        clip: `ViT-L-14.pt` or a transformers snapshot directory; read only when needed.
        assign: keep the file's tensors instead of copying (for a model built on the meta device).

    Raises:
        ModelNotAvailable: a needed file is missing.
        FormatError: a file does not match the model.
    """
    state = read_state_dict(checkpoint)
    report = LoadReport(clip_source="checkpoint")
    if not any(k.startswith(CLIP_PREFIX + "visual.") for k in state):
        if clip is None:
            raise missing(Path(checkpoint).parent / CLIP_NAME,
                          "OpenAI CLIP ViT-L/14: the checkpoint has no clip_image_encoder weights")
        state = dict(state)
        state.update({CLIP_PREFIX + k: v for k, v in read_clip(clip).items()})
        report.clip_source = str(clip)
    unused = tuple(CLIP_PREFIX + k for k in OPENAI_UNUSED_KEYS)
    report.kept_init = check_and_load(model, state, allowed_missing=unused, assign=assign, source=str(checkpoint))
    report.loaded = len(state)
    return report


def _sources() -> str:
    """Where the checkpoint comes from (the models table's sources, in the order `models pull` tries them)."""
    return " or ".join(s.describe() for s in MODEL_BY_NAME["syncdreamer-pretrain"].sources)
