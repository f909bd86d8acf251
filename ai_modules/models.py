"""Which model files the planned learned backends need, and whether they are on disk.

Pure filesystem checks (standard library only): nothing is downloaded or
imported. The daemon's `doctor` and `models` commands print `model_inventory`.

Layout under ``models_dir`` (the daemon's config decides where that is)::

    models_dir/
      u2net/                       rembg sessions (also U2NET_HOME, default ~/.u2net)
        isnet-general-use.onnx
        u2net.onnx
      syncdreamer/
        syncdreamer-pretrain.ckpt
        ViT-L-14.pt
      depth/dpt-hybrid-midas/      a Hugging Face snapshot (config.json + weights)
      enhance/sdxl-base/           stabilityai/stable-diffusion-xl-base-1.0 snapshot
      enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors
      enhance/controlnet-depth-sdxl/   diffusers/controlnet-depth-sdxl-1.0 snapshot
      refine/dinov2/               timm/vit_small_patch14_dinov2.lvd142m (config.json + model.safetensors)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .backends import BACKENDS, models_of
from .errors import ModelNotAvailable


@dataclass(frozen=True)
class ModelStatus:
    """One model a learned backend needs.

    Attributes:
        stage: pipeline stage, e.g. "segment".
        backend: backend name, e.g. "rembg".
        name: the model, e.g. "isnet-general-use".
        path: where it is (when present) or is expected; None when `models_dir` is not set.
        present: True when the file (or snapshot directory with its marker file) exists.
        kind: "file" or "dir" (a Hugging Face snapshot directory).
        source: where to fetch it from.
    """

    stage: str
    backend: str
    name: str
    path: Path | None
    present: bool
    kind: str
    source: str

    def error(self) -> ModelNotAvailable:
        """The error a backend raises when this model is missing."""
        where = str(self.path) if self.path is not None else f"<models_dir>/{_PLAN_BY_NAME[self.name][3]}"
        return ModelNotAvailable(self.stage, self.backend, where, self.source)

    def to_dict(self) -> dict[str, object]:
        """JSON-ready dict."""
        return {"stage": self.stage, "backend": self.backend, "name": self.name,
                "path": None if self.path is None else str(self.path), "present": self.present,
                "kind": self.kind, "source": self.source}


# (stage, backend, name, path under models_dir, kind, marker file inside a dir, source)
_PLAN: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("segment", "rembg", "isnet-general-use", "u2net/isnet-general-use.onnx", "file", "",
     "https://github.com/danielgatis/rembg/releases/download/v0.0.0/isnet-general-use.onnx"),
    ("segment", "rembg", "u2net", "u2net/u2net.onnx", "file", "",
     "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"),
    ("multiview", "syncdreamer", "syncdreamer-pretrain", "syncdreamer/syncdreamer-pretrain.ckpt", "file", "",
     "https://huggingface.co/camenduru/SyncDreamer/resolve/main/syncdreamer-pretrain.ckpt"),
    ("multiview", "syncdreamer", "clip-vit-l-14", "syncdreamer/ViT-L-14.pt", "file", "",
     "optional (the checkpoint holds CLIP): OpenAI's ViT-L-14.pt, `glimpsed models pull clip-vit-l-14`"),
    ("depth", "dpt", "dpt-hybrid-midas", "depth/dpt-hybrid-midas", "dir", "config.json",
     "huggingface.co/Intel/dpt-hybrid-midas"),
    ("enhance", "sdxl_lightning", "sdxl-base", "enhance/sdxl-base", "dir", "model_index.json",
     "huggingface.co/stabilityai/stable-diffusion-xl-base-1.0"),
    ("enhance", "sdxl_lightning", "sdxl-lightning-4step-unet",
     "enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors", "file", "",
     "huggingface.co/ByteDance/SDXL-Lightning (sdxl_lightning_4step_unet.safetensors)"),
    ("enhance", "sdxl_lightning", "controlnet-depth-sdxl", "enhance/controlnet-depth-sdxl", "dir", "config.json",
     "huggingface.co/diffusers/controlnet-depth-sdxl-1.0"),
    ("refine", "mvcrm", "dinov2", "refine/dinov2", "dir", "config.json",
     "huggingface.co/timm/vit_small_patch14_dinov2.lvd142m"),
)
_PLAN_BY_NAME = {row[2]: row for row in _PLAN}
#: The model files each backend needs or uses when present, by name in the plan above (from the registry).
BACKEND_MODELS: dict[str, tuple[str, ...]] = {b.name: models_of(b.name) for b in BACKENDS if models_of(b.name)}


def resolve_models_dir(models_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """Where a library call looks for model files: `models_dir` when given, else ``$GLIMPSED_MODELS_DIR``,
    else ``~/.cache/glimpsed/models`` (the daemon passes its `paths.models`)."""
    env = os.environ if env is None else env
    if models_dir is not None:
        return Path(models_dir).expanduser()
    if env.get("GLIMPSED_MODELS_DIR"):
        return Path(env["GLIMPSED_MODELS_DIR"]).expanduser()
    return Path("~/.cache/glimpsed/models").expanduser()


def model_status(name: str, models_dir: str | Path | None = None) -> ModelStatus:
    """The `ModelStatus` of one planned model (by `name`, e.g. "dpt-hybrid-midas") under `resolve_models_dir`.

    Raises:
        KeyError: `name` is not a planned model.
    """
    if name not in _PLAN_BY_NAME:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(_PLAN_BY_NAME)}")
    return next(m for m in model_inventory(resolve_models_dir(models_dir)) if m.name == name)


def model_inventory(models_dir: Path | None, env: Mapping[str, str] | None = None) -> list[ModelStatus]:
    """List the models the planned learned backends need and whether each is on disk.

    rembg models are also looked for where rembg itself looks: ``$U2NET_HOME``,
    else ``~/.u2net``.

    Args:
        models_dir: the daemon's model directory, or None when not configured.
        env: environment to read U2NET_HOME from (default: `os.environ`).

    Returns:
        One `ModelStatus` per model, in pipeline order.
    """
    env = os.environ if env is None else env
    root = Path(models_dir).expanduser() if models_dir is not None else None
    u2net_home = Path(env["U2NET_HOME"]).expanduser() if env.get("U2NET_HOME") else Path("~/.u2net").expanduser()
    out = []
    for stage, backend, name, rel, kind, marker, source in _PLAN:
        candidates = [root / rel] if root is not None else []
        if backend == "rembg":
            candidates.append(u2net_home / Path(rel).name)
        found = next((c for c in candidates if _present(c, kind, marker)), None)
        path = found or (candidates[0] if candidates else None)
        out.append(ModelStatus(stage, backend, name, path, found is not None, kind, source))
    return out


def _present(path: Path, kind: str, marker: str) -> bool:
    if kind == "file":
        return path.is_file() and path.stat().st_size > 0
    return (path / marker).is_file()
