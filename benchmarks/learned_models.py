"""Every learned model at its published size with random weights, written in the real on-disk layouts.

Why: `bench_learned.py` measures what a worker does with the real files (model-load seconds,
cold and warm jobs, peak VRAM) without downloading 15 GB of weights. The networks are the
real classes built from the published configs kept in ``benchmarks/configs/`` (no hub access);
only the values are random (`torch.manual_seed`, the classes' own initialisation), and time
and memory do not depend on the values. Nothing here is used by the daemon or the tests'
model fixtures.

Layout written under ``models_dir`` (exactly what `ai_modules.models` plans and the loaders read;
for the Hugging Face snapshots, the files ``glimpsed models pull`` fetches)::

    syncdreamer/syncdreamer-pretrain.ckpt       torch.save({"state_dict": ...}) of SyncDreamerConfig.full(),
                                                fp32 like the published 5.6 GB checkpoint (1618 tensors,
                                                1.392 B values = 5.57 GB); no config.json beside it, so the
                                                loader builds the published sizes
    depth/dpt-hybrid-midas/                     config.json, preprocessor_config.json, pytorch_model.bin (fp32,
                                                a torch.save state dict as on the repo's main branch, without the
                                                fusion layer 0 `residual_layer1` tensors the original lacks)
    enhance/sdxl-base/                          model_index.json, scheduler/scheduler_config.json,
                                                unet/config.json (config only: the weights come from the
                                                Lightning file), text_encoder/ and text_encoder_2/ (config.json +
                                                model.fp16.safetensors), vae/ (config.json +
                                                diffusion_pytorch_model.fp16.safetensors), tokenizer/ and
                                                tokenizer_2/ (vocab.json, merges.txt, tokenizer_config.json)
    enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors   the full UNet state dict, fp16 (as ByteDance's)
    enhance/controlnet-depth-sdxl/              config.json + diffusion_pytorch_model.fp16.safetensors

Precision "as published": SyncDreamer and DPT fp32 (the published files are fp32); SDXL in the
fp16 variant, which is what the pull fetches and what `EnhanceService` loads (``variant="fp16"``
when a folder holds only ``*.fp16.*`` weights). With `dtype` given every file is written in that
precision instead (fp16 keeps the ``.fp16.`` names, anything else the plain names, which the loader
also reads). The config files are copied verbatim from ``benchmarks/configs/``.

The tokenizers are TINY (``ai_modules.diffusion.tiny``'s letters-and-a-few-merges vocabulary,
in CLIP's vocab.json/merges.txt layout): CLIP's 49408-entry BPE vocabulary cannot be
downloaded here. The text encoders behind them are full size (vocab 49408, every token id the
tiny tokenizer produces is valid), so the encoders' cost is the real one; only tokenising a
prompt is cheaper (microseconds either way).

Where each config's values come from (the public code index this was built with; "id" is a
file the index names without its repository)::

    stable-diffusion-xl-base-1.0/unet/config.json      a verbatim quote in a training script (index id 48138109906,
        "configs from .cache/huggingface"); its json.dumps(indent=2, sort_keys=True) is 1680 bytes, the size in
        the LFS pointer of a mirror of the hub repo (HDRJ-One/stable-diffusion-xl-base-1.0, unet/config.json);
        the same values in PRITHIVSAKTHIUR/AI-Art-Generator-SDXL unet/config.json (a fine-tune, newer diffusers)
    .../text_encoder/config.json                        same quote; 565 bytes = the LFS pointer size in the
        HDRJ-One mirror (text_encoder/config.json); the same values in PRITHIVSAKTHIUR/AI-Art-Generator-SDXL
    .../text_encoder_2/config.json                      same quote (transformers 4.32.0.dev0); the same values in
        PRITHIVSAKTHIUR/AI-Art-Generator-SDXL text_encoder_2/config.json
    .../vae/config.json                                 same quote ("_name_or_path": "../sdxl-vae/", 0.20.0.dev0);
        the same values in index id 43544382077
    .../scheduler/scheduler_config.json                 same quote; also index id 67216740776 ("verbatim" SDXL
        scheduler config) and id 9142739299
    .../model_index.json                                andrewcchoi/stabilityai-stable-diffusion-xl-base-1.0
        model_index.json, with "add_watermarker": null as index id 40105795138 quotes the repo (the mirror has
        true; the HDRJ-One mirror's older 582-byte version lacks the key). The loader passes add_watermarker=False.
    controlnet-depth-sdxl-1.0/config.json               index id 25734102607 (a collection of diffusers configs:
        "SDXL_ControlNet_config", "_name_or_path": "valhalla/depth-2", nulls commented out and restored here);
        the architecture fields agree with index ids 18608079697 and 59915762242
    dpt-hybrid-midas/config.json                        NOT fully established: the backbone_config values (BiT:
        depths [3, 4, 9], embedding_size 64, global_padding SAME, hidden_sizes [256, 512, 1024, 2048], bottleneck,
        relu, dynamic padding) are from the hub page of the same config as copied into
        sd2-community/stable-diffusion-2-depth depth_estimator/config.json ("_name_or_path": "Intel/dpt-hybrid-midas");
        the DPT fields from the conversion script that produced the hub model (huggingface/transformers
        src/transformers/models/dpt/convert_dpt_hybrid_to_pytorch.py: hybrid, hidden 768, patch 16,
        reassemble_factors [1, 1, 1, 0.5], neck_hidden_sizes [256, 512, 768, 768], readout "project", no batch norm
        in the fusion residuals); the rest are transformers' documented DPTConfig defaults (the script starts from
        them: backbone_featmap_shape [1, 1024, 24, 24], backbone_out_indices [2, 5, 8, 11], neck_ignore_stages
        [0, 1], fusion 256, 12 layers x 12 heads, MLP 3072, image 384, layer_norm_eps 1e-12). The conversion's
        150-entry id2label is left out (DPTForDepthEstimation has no classifier). 122.4 M parameters.
    dpt-hybrid-midas/preprocessor_config.json          Xenova/dpt-hybrid-midas preprocessor_config.json on the hub
        (384 bytes; a copy of Intel's; the conversion script's DPTImageProcessor(size=384) gives the same values)

Usage:
    python benchmarks/learned_models.py --check               # parameter counts on the meta device, no weights
    python benchmarks/learned_models.py --write DIR [--only dpt,syncdreamer] [--device cuda]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIGS = Path(__file__).resolve().parent / "configs"
SDXL_CONFIGS = CONFIGS / "stable-diffusion-xl-base-1.0"
CONTROLNET_CONFIGS = CONFIGS / "controlnet-depth-sdxl-1.0"
DPT_CONFIGS = CONFIGS / "dpt-hybrid-midas"

# Where each planned model goes under models_dir (the paths of `ai_modules.models`' plan).
SYNCDREAMER_REL = Path("syncdreamer/syncdreamer-pretrain.ckpt")
DPT_REL = Path("depth/dpt-hybrid-midas")
SDXL_BASE_REL = Path("enhance/sdxl-base")
LIGHTNING_REL = Path("enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors")
CONTROLNET_REL = Path("enhance/controlnet-depth-sdxl")

#: The planned models this module writes (names as in `ai_modules.models`), in writing order.
MODEL_NAMES: tuple[str, ...] = ("syncdreamer-pretrain", "dpt-hybrid-midas", "sdxl-base", "sdxl-lightning-4step-unet",
                                "controlnet-depth-sdxl")
#: Backend name -> the planned models it needs (also accepted by `only`).
BACKEND_NAMES: dict[str, tuple[str, ...]] = {
    "syncdreamer": ("syncdreamer-pretrain",),
    "dpt": ("dpt-hybrid-midas",),
    "sdxl_lightning": ("sdxl-base", "sdxl-lightning-4step-unet", "controlnet-depth-sdxl"),
}

#: Network components (what `build_component` builds) -> (reference parameter count, what it is). The references
#: are the published figures the issue quotes; SyncDreamer's is what `SyncDreamerConfig.full()` gives (its
#: state_dict has the published checkpoint's 1618 keys and shapes; 1.392 B fp32 values = 5.57 GB, the published
#: file is 5.6 GB). DPT builds 122.4 M, 0.5 % under the quoted figure.
PUBLISHED_PARAMS: dict[str, tuple[int, str]] = {
    "syncdreamer": (1_392_362_668, "SyncDreamerConfig.full(); published ckpt 5.6 GB fp32"),
    "dpt_hybrid": (123_000_000, "Intel/dpt-hybrid-midas, ~123 M"),
    "sdxl_unet": (2_567_000_000, "SDXL base UNet = SDXL-Lightning UNet, ~2.567 B"),
    "controlnet_depth": (1_250_000_000, "diffusers/controlnet-depth-sdxl-1.0, ~1.25 B"),
    "sdxl_vae": (83_700_000, "SDXL VAE, ~83.7 M"),
    "clip_l_text": (123_000_000, "CLIP ViT-L/14 text encoder, ~123 M"),
    "bigg_text": (695_000_000, "OpenCLIP ViT-bigG/14 text encoder + projection, ~695 M"),
}
COMPONENTS: tuple[str, ...] = tuple(PUBLISHED_PARAMS)

# Parameters DPT registers but the original checkpoint (and so the published file) lacks (transformers #28292).
_DPT_UNUSED = ("neck.fusion_stage.layers.0.residual_layer1.",)


def read_config(path: Path) -> dict[str, Any]:
    """A JSON config from ``benchmarks/configs``."""
    return json.loads(Path(path).read_text())


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Construct modules directly in `dtype` (halves the peak RAM of building an fp16 model)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def build_component(name: str, device: str | torch.device = "meta", dtype: torch.dtype = torch.float32,
                    seed: int | None = None) -> torch.nn.Module:
    """Build one network from the configs in ``benchmarks/configs`` (random init; nothing is read from a hub).

    Args:
        name: one of `COMPONENTS`.
        device: where to build it; "meta" allocates nothing (for parameter counts).
        dtype: the floating dtype of its parameters.
        seed: `torch.manual_seed` before building (None: leave the generator as it is).

    Raises:
        KeyError: unknown name.
    """
    if name not in PUBLISHED_PARAMS:
        raise KeyError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}")
    if seed is not None:
        torch.manual_seed(seed)
    with torch.device(device), _default_dtype(dtype), torch.no_grad():
        if name == "syncdreamer":
            from ai_modules.sync_dreamer import SyncDreamerConfig, SyncDreamerModel
            return SyncDreamerModel(SyncDreamerConfig.full()).eval()
        if name == "dpt_hybrid":
            from transformers import DPTConfig, DPTForDepthEstimation
            return DPTForDepthEstimation(DPTConfig.from_json_file(str(DPT_CONFIGS / "config.json"))).eval()
        if name in ("clip_l_text", "bigg_text"):
            from transformers import (
                CLIPTextConfig,
                CLIPTextModel,
                CLIPTextModelWithProjection,
            )
            folder, cls = (("text_encoder", CLIPTextModel) if name == "clip_l_text"
                           else ("text_encoder_2", CLIPTextModelWithProjection))
            return cls(CLIPTextConfig.from_json_file(str(SDXL_CONFIGS / folder / "config.json"))).eval()
        from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
        if name == "sdxl_unet":
            return UNet2DConditionModel.from_config(read_config(SDXL_CONFIGS / "unet" / "config.json")).eval()
        if name == "sdxl_vae":
            return AutoencoderKL.from_config(read_config(SDXL_CONFIGS / "vae" / "config.json")).eval()
        return ControlNetModel.from_config(read_config(CONTROLNET_CONFIGS / "config.json")).eval()


def count_parameters(module: torch.nn.Module) -> int:
    """Number of parameter values (what model cards count)."""
    return sum(p.numel() for p in module.parameters())


def parameter_counts(components: tuple[str, ...] = COMPONENTS) -> dict[str, int]:
    """Each component built on the meta device (no memory, no weights): its parameter count."""
    out = {}
    for name in components:
        out[name] = count_parameters(build_component(name, "meta"))
    return out


def _bytes(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a folder."""
    return _bytes(path)


def _cpu_state(module: torch.nn.Module, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """The module's state dict on the CPU, contiguous, without keys starting with `drop`."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items() if not k.startswith(drop)}


def _save_safetensors(module: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = _cpu_state(module)
    # Tied or shared tensors would be refused by safetensors; none of these models ties weights.
    save_file(state, str(path), metadata={"format": "pt"})
    del state


def _copy_config(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _free() -> None:
    """Give memory back after the caller dropped its references."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _weights_name(stem: str, ext: str, dtype: torch.dtype) -> str:
    """``stem.fp16.ext`` for fp16 (the hub's fp16 variant), else ``stem.ext``."""
    return f"{stem}.fp16.{ext}" if dtype == torch.float16 else f"{stem}.{ext}"


def write_syncdreamer(models_dir: Path, seed: int = 0, dtype: torch.dtype | None = None,
                      device: str | torch.device = "cpu") -> Path:
    """``syncdreamer/syncdreamer-pretrain.ckpt`` at the published size (fp32 unless `dtype`)."""
    path = Path(models_dir) / SYNCDREAMER_REL
    path.parent.mkdir(parents=True, exist_ok=True)
    stale = path.with_name("config.json")          # a stand-in's sizes would override the published ones
    if stale.exists():
        stale.unlink()
    model = build_component("syncdreamer", device, dtype or torch.float32, seed=seed)
    state = _cpu_state(model)
    del model
    _free()
    torch.save({"state_dict": state}, path)
    del state
    _free()
    return path


def write_dpt(models_dir: Path, seed: int = 0, dtype: torch.dtype | None = None,
              device: str | torch.device = "cpu", weights: str = "bin") -> Path:
    """``depth/dpt-hybrid-midas/`` at the published size: config, preprocessor config, weights (fp32 unless `dtype`).

    Args:
        weights: "bin" writes ``pytorch_model.bin`` (a weights-only torch.save, as on the repo's main branch);
            "safetensors" writes ``model.safetensors`` (what ``glimpsed models pull dpt`` fetches, which asks for
            ``*.json`` and ``*.safetensors``).
    """
    folder = Path(models_dir) / DPT_REL
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        _copy_config(DPT_CONFIGS / name, folder / name)
    model = build_component("dpt_hybrid", device, dtype or torch.float32, seed=seed)
    state = _cpu_state(model, drop=_DPT_UNUSED)
    del model
    _free()
    for stale in ("pytorch_model.bin", "model.safetensors"):
        (folder / stale).unlink(missing_ok=True)
    if weights == "bin":
        torch.save(state, folder / "pytorch_model.bin")
    elif weights == "safetensors":
        from safetensors.torch import save_file
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    else:
        raise ValueError(f"`weights` must be 'bin' or 'safetensors', got {weights!r}")
    del state
    _free()
    return folder


def _write_component(component: str, path: Path, device: str | torch.device, dtype: torch.dtype, seed: int,
                     stale: str | None = None) -> Path:
    """Build `component` with random weights, save it as safetensors at `path` (removing files matching
    `stale` in its folder first: another precision's variant), free it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(stale) if stale else ():
        old.unlink()
    model = build_component(component, device, dtype, seed=seed)
    _save_safetensors(model, path)
    del model
    _free()
    return path


def write_sdxl_base(models_dir: Path, seed: int = 0, dtype: torch.dtype | None = None,
                    device: str | torch.device = "cpu") -> Path:
    """``enhance/sdxl-base/``: the files of the SDXL base snapshot that `EnhanceService` reads (fp16 variant)."""
    from ai_modules.diffusion.tiny import _write_tokenizer_files

    dtype = dtype or torch.float16
    base = Path(models_dir) / SDXL_BASE_REL
    base.mkdir(parents=True, exist_ok=True)
    _copy_config(SDXL_CONFIGS / "model_index.json", base / "model_index.json")
    _copy_config(SDXL_CONFIGS / "scheduler" / "scheduler_config.json", base / "scheduler" / "scheduler_config.json")
    _copy_config(SDXL_CONFIGS / "unet" / "config.json", base / "unet" / "config.json")
    for name in ("tokenizer", "tokenizer_2"):
        _write_tokenizer_files(base / name)
    parts = (("text_encoder", "clip_l_text", "model", "safetensors"),
             ("text_encoder_2", "bigg_text", "model", "safetensors"),
             ("vae", "sdxl_vae", "diffusion_pytorch_model", "safetensors"))
    for i, (folder, component, stem, ext) in enumerate(parts):
        _copy_config(SDXL_CONFIGS / folder / "config.json", base / folder / "config.json")
        _write_component(component, base / folder / _weights_name(stem, ext, dtype), device, dtype, seed + 10 + i,
                         stale=f"{stem}*.{ext}")
    return base


def write_lightning_unet(models_dir: Path, seed: int = 0, dtype: torch.dtype | None = None,
                         device: str | torch.device = "cpu") -> Path:
    """``enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors``: the SDXL UNet's state dict (fp16)."""
    return _write_component("sdxl_unet", Path(models_dir) / LIGHTNING_REL, device, dtype or torch.float16, seed + 20)


def write_controlnet(models_dir: Path, seed: int = 0, dtype: torch.dtype | None = None,
                     device: str | torch.device = "cpu") -> Path:
    """``enhance/controlnet-depth-sdxl/``: config.json + the weights (fp16 variant)."""
    dtype = dtype or torch.float16
    folder = Path(models_dir) / CONTROLNET_REL
    _copy_config(CONTROLNET_CONFIGS / "config.json", folder / "config.json")
    _write_component("controlnet_depth", folder / _weights_name("diffusion_pytorch_model", "safetensors", dtype),
                     device, dtype, seed + 30, stale="diffusion_pytorch_model*.safetensors")
    return folder


_WRITERS = {
    "syncdreamer-pretrain": write_syncdreamer,
    "dpt-hybrid-midas": write_dpt,
    "sdxl-base": write_sdxl_base,
    "sdxl-lightning-4step-unet": write_lightning_unet,
    "controlnet-depth-sdxl": write_controlnet,
}


def resolve_only(only: set[str] | None) -> tuple[str, ...]:
    """`only` (planned model names and/or backend names) -> planned model names in writing order."""
    if only is None:
        return MODEL_NAMES
    wanted: set[str] = set()
    for item in only:
        if item in BACKEND_NAMES:
            wanted.update(BACKEND_NAMES[item])
        elif item in MODEL_NAMES:
            wanted.add(item)
        else:
            raise ValueError(f"unknown model or backend {item!r}; known: {', '.join((*BACKEND_NAMES, *MODEL_NAMES))}")
    return tuple(name for name in MODEL_NAMES if name in wanted)


def write_full_size_models(models_dir: Path, seed: int = 0, only: set[str] | None = None,
                           dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                           on_written: Any = None, dpt_weights: str = "bin") -> dict[str, Path]:
    """Write every learned model (or those in `only`) at its published size with random weights.

    One model is built, written and freed at a time (peak RAM: about the largest one, the
    Lightning UNet at 5.1 GB fp16, plus its CPU copy when built on CUDA).

    Args:
        models_dir: root of the model tree (created if needed).
        seed: seeds every component (each with its own offset).
        only: planned model names (`MODEL_NAMES`) and/or backend names (`BACKEND_NAMES`); None = all.
        dtype: None = each file's published precision (module docstring); else every file in this dtype.
        device: where the random weights are generated ("cuda" is much faster than 2 CPU cores);
            the files are the same either way.
        on_written: called as ``on_written(name, path, seconds)`` after each model.
        dpt_weights: "bin" (``pytorch_model.bin``, as the hub repo's main branch) or "safetensors"
            (``model.safetensors``); see `write_dpt`.

    Returns:
        planned model name -> the file or folder written (the path `ai_modules.models` plans).
    """
    root = Path(models_dir)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in resolve_only(only):
        start = time.perf_counter()
        extra = {"weights": dpt_weights} if name == "dpt-hybrid-midas" else {}
        out[name] = _WRITERS[name](root, seed=seed, dtype=dtype, device=device, **extra)
        if on_written is not None:
            on_written(name, out[name], time.perf_counter() - start)
    return out


# --- tiny stand-ins (CPU smoke runs) -------------------------------------------------------------------------------

TINY_DPT_SIZE = 32   # the tiny DPT's input side (the real one: 384)


def tiny_dpt(seed: int = 0) -> torch.nn.Module:
    """A tiny hybrid DPT (BiT backbone feeding a ViT, as the real model) whose output is positive and varied.

    The same recipe as the unit tests' tiny hybrid DPT (tests/unit/ai_modules/test_midas_depth.py): random
    init alone gives ~1e-9 depth with ReLU zeros, so the convolutions get He init and the head a bias.
    """
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(seed)
    size = TINY_DPT_SIZE
    config = DPTConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=size,
                       fusion_hidden_size=16, use_auxiliary_head=False, num_hidden_layers=2, patch_size=16,
                       is_hybrid=True, backbone_out_indices=[0, 1, 0, 1], neck_hidden_sizes=[8, 16, 32, 32],
                       backbone_featmap_shape=[1, 32, size // 16, size // 16],
                       backbone_config={"global_padding": "same", "layer_type": "bottleneck", "depths": [1, 1, 1],
                                        "hidden_sizes": [8, 16, 32], "embedding_size": 8, "num_groups": 2,
                                        "out_features": ["stage1", "stage2", "stage3"],
                                        "embedding_dynamic_padding": True})
    model = DPTForDepthEstimation(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
        last = model.head.head[-2]
        last.weight.mul_(0.2)
        last.bias.fill_(1.0)
    return model


def write_tiny_dpt(models_dir: Path, seed: int = 0) -> Path:
    """``depth/dpt-hybrid-midas/`` holding the tiny hybrid DPT (config, 32-px preprocessor, model.safetensors)."""
    from transformers import DPTImageProcessor

    folder = Path(models_dir) / DPT_REL
    tiny_dpt(seed).save_pretrained(folder)
    DPTImageProcessor(size={"height": TINY_DPT_SIZE, "width": TINY_DPT_SIZE}, image_mean=[0.5] * 3,
                      image_std=[0.5] * 3).save_pretrained(folder)
    return folder


def write_tiny_models(models_dir: Path, seed: int = 0) -> dict[str, Path]:
    """The tiny random-weight stand-ins of every learned model, in the same layouts (for a CPU smoke run).

    SyncDreamer: the tests' `write_tiny_syncdreamer` (micro config + config.json beside the checkpoint);
    SDXL: `ai_modules.diffusion.tiny.write_tiny_enhance_models`; DPT: `write_tiny_dpt`.
    """
    from ai_modules.diffusion.tiny import write_tiny_enhance_models
    from tests.tiny_models import write_tiny_syncdreamer

    root = Path(models_dir)
    out = {"syncdreamer-pretrain": write_tiny_syncdreamer(root, seed=seed),
           "dpt-hybrid-midas": write_tiny_dpt(root, seed=seed)}
    out.update(write_tiny_enhance_models(root, seed=seed))
    return out


def evict_from_page_cache(paths: list[Path]) -> int:
    """Ask the kernel to drop the page-cache pages of every file under `paths` (fsync, then
    ``posix_fadvise(DONTNEED)``; no root needed), so the next read comes from the disk.

    Returns:
        bytes advised (0 where the platform has no posix_fadvise).
    """
    if not hasattr(os, "posix_fadvise"):
        return 0
    total = 0
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += f.stat().st_size
            finally:
                os.close(fd)
    return total


def filesystem_type(path: Path) -> str:
    """The type of the filesystem `path` is on (Linux: the longest matching mount point), or "unknown"."""
    try:
        target = str(Path(path).resolve())
        best, kind = "", "unknown"
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3:
                mount = parts[1].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, kind = mount, parts[2]
        return kind
    except OSError:
        return "unknown"


def print_parameter_counts() -> bool:
    """Print every component's parameter count next to the published one; True when all are within 1 %."""
    ok = True
    print(f"{'component':<18} {'built (meta)':>16} {'published':>16}  {'diff':>7}  source")
    for name, count in parameter_counts().items():
        published, source = PUBLISHED_PARAMS[name]
        diff = (count - published) / published
        ok &= abs(diff) <= 0.01
        print(f"{name:<18} {count:>16,} {published:>16,}  {diff:>+7.2%}  {source}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="print parameter counts (meta device; writes nothing)")
    parser.add_argument("--write", type=Path, metavar="DIR", help="write the full-size models under DIR")
    parser.add_argument("--tiny", action="store_true", help="with --write: the tiny stand-ins instead")
    parser.add_argument("--only", default="", help="comma-separated model or backend names (default: all)")
    parser.add_argument("--device", default="cpu", help="where to generate the random weights (cuda is faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dpt-weights", choices=("bin", "safetensors"), default="bin",
                        help="DPT weights file: pytorch_model.bin (the hub's main branch) or model.safetensors")
    args = parser.parse_args(argv)
    if not args.check and args.write is None:
        parser.error("give --check and/or --write DIR")
    ok = True
    if args.check:
        ok = print_parameter_counts()
    if args.write is not None:
        if args.tiny:
            written = write_tiny_models(args.write, seed=args.seed)
            for name, path in written.items():
                print(f"{name:<28} {tree_bytes(path) / 1e6:10.1f} MB  {path}")
        else:
            only = {s.strip() for s in args.only.split(",") if s.strip()} or None

            def report(name: str, path: Path, seconds: float) -> None:
                print(f"{name:<28} {tree_bytes(path) / 1e9:8.3f} GB  {seconds:7.1f} s  {path}", flush=True)

            write_full_size_models(args.write, seed=args.seed, only=only, device=args.device, on_written=report,
                                   dpt_weights=args.dpt_weights)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
