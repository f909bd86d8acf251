"""Load a TRELLIS pipeline as published: the hub folder's ``pipeline.json`` (sampler settings, the SLat
normalisation, which checkpoint each network is) and ``ckpts/<name>.json`` + ``<name>.safetensors`` per network,
plus the DINOv2 ``.pth`` from torch hub's URL, unchanged.

Layout (``microsoft/TRELLIS-image-large``; only the four networks the Gaussian path needs are read)::

    folder/pipeline.json
    folder/ckpts/ss_flow_img_dit_L_16l8_fp16.{json,safetensors}       sparse_structure_flow_model
    folder/ckpts/ss_dec_conv3d_16l8_fp16.{json,safetensors}           sparse_structure_decoder
    folder/ckpts/slat_flow_img_dit_L_64l8p2_fp16.{json,safetensors}   slat_flow_model
    folder/ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16.{json,safetensors} slat_decoder_gs
    dinov2_vitl14_reg4_pretrain.pth                                   pipeline.json's image_cond_model

Every network is built on the meta device from its json's ``args`` and takes the file's tensors strictly (each cast
to the dtype the constructor gave it), so nothing is initialised twice and a wrong file names its keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FormatError
from ..sync_dreamer.archive import read_torch_checkpoint
from .conditioner import DinoV2Config, DinoV2Reg
from .modules import state_dict_mismatch
from .gs_decoder import SLatGaussianDecoder
from .pipeline import TrellisModels, TrellisSettings
from .sampler import SamplerSettings
from .slat_flow import SLatFlowModel
from .ss_decoder import SparseStructureDecoder
from .ss_flow import SparseStructureFlowModel

#: pipeline.json's ``models`` key -> the class its checkpoint json must name (``Elastic*`` are the same networks
#: with a training-time memory controller: the same state dict).
COMPONENTS: dict[str, type[nn.Module]] = {
    "sparse_structure_flow_model": SparseStructureFlowModel,
    "sparse_structure_decoder": SparseStructureDecoder,
    "slat_flow_model": SLatFlowModel,
    "slat_decoder_gs": SLatGaussianDecoder,
}
#: The published checkpoints, as pipeline.json names them (what `models pull trellis` fetches).
PUBLISHED_CKPTS: dict[str, str] = {
    "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_L_16l8_fp16",
    "sparse_structure_decoder": "ckpts/ss_dec_conv3d_16l8_fp16",
    "slat_flow_model": "ckpts/slat_flow_img_dit_L_64l8p2_fp16",
    "slat_decoder_gs": "ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16",
}
#: DINOv2's attention heads are 64 channels wide at every published size (ViT-S/B/L/g: 6/12/16/24 heads).
DINOV2_HEAD_DIM = 64


@dataclass(frozen=True)
class PipelineConfig:
    """What ``pipeline.json`` says: the sampling settings and the checkpoint of each network (relative paths)."""

    settings: TrellisSettings
    checkpoints: dict[str, str]
    image_cond_model: str


def read_pipeline_json(path: Path) -> PipelineConfig:
    """Parse ``pipeline.json`` (``{"name": "TrellisImageTo3DPipeline", "args": {...}}``).

    Raises:
        FormatError: unreadable, or a key the Gaussian path needs is missing or malformed.
    """
    try:
        args = json.loads(Path(path).read_text(encoding="utf-8"))["args"]
        models = args["models"]
        checkpoints = {k: str(models[k]) for k in COMPONENTS}
        samplers = {}
        for key in ("sparse_structure_sampler", "slat_sampler"):
            sampler = args[key]
            samplers[key] = SamplerSettings.from_params(sampler.get("params", {}),
                                                        float(sampler.get("args", {}).get("sigma_min", 1e-5)))
        norm = args["slat_normalization"]
        mean, std = [float(v) for v in norm["mean"]], [float(v) for v in norm["std"]]
        if len(mean) != len(std) or not mean:
            raise ValueError("slat_normalization mean and std must be equally long and not empty")
        image_cond = str(args["image_cond_model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a TRELLIS pipeline.json ({type(exc).__name__}: {exc}); pull it again with "
                          "`glimpsed models pull trellis --force`") from exc
    settings = TrellisSettings(ss_sampler=samplers["sparse_structure_sampler"], slat_sampler=samplers["slat_sampler"],
                               slat_mean=tuple(mean), slat_std=tuple(std))
    return PipelineConfig(settings, checkpoints, image_cond)


def checkpoint_config(path: Path, expected: type[nn.Module]) -> dict[str, Any]:
    """The constructor arguments in ``ckpts/<name>.json``, after checking that it names `expected`.

    Raises:
        FormatError: unreadable, or it describes another network.
    """
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
        name, args = str(config["name"]), dict(config["args"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FormatError(f"{path}: not a TRELLIS checkpoint config ({type(exc).__name__}: {exc})") from exc
    if name.removeprefix("Elastic") != expected.__name__:
        raise FormatError(f"{path}: describes a {name}, where pipeline.json expects a {expected.__name__}")
    return args


def load_component(json_path: Path, expected: type[nn.Module], fp16: bool | None = None) -> nn.Module:
    """One network from its ``.json`` (constructor arguments) and the ``.safetensors`` beside it, eval mode, on the
    CPU. `fp16`: None keeps the json's ``use_fp16``; True/False overrides it (False: fp32 throughout).

    Raises:
        FileNotFoundError: either file is missing.
        FormatError: the json names another network, or the tensors do not match its state dict.
    """
    from safetensors.torch import load_file

    weights = Path(json_path).with_suffix(".safetensors")
    for f in (Path(json_path), weights):
        if not f.is_file():
            raise FileNotFoundError(f"{f} not found; run `glimpsed models pull trellis`")
    args = checkpoint_config(json_path, expected)
    if fp16 is not None:
        args["use_fp16"] = fp16
    with torch.device("meta"):
        model = expected(**args)
    try:
        state = load_file(str(weights))
    except Exception as exc:  # safetensors raises its own SafetensorError (and OSError) on a bad file
        raise FormatError(f"{weights}: unreadable safetensors ({type(exc).__name__}: {exc})") from exc
    return assign_strict(model, state, str(weights))


def assign_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Give a meta-built `model` the tensors of `state` (each cast to the dtype the model declared), strictly.

    Raises:
        FormatError: missing, unexpected or mis-shaped keys (named).
    """
    own = model.state_dict()
    mismatch = state_dict_mismatch(model, state)
    if mismatch:
        raise FormatError(f"{where} does not match {type(model).__name__}: {mismatch}")
    model.load_state_dict({k: state[k].to(v.dtype) for k, v in own.items()}, strict=True, assign=True)
    return model.eval()


def dinov2_config(state: dict[str, torch.Tensor], where: str) -> DinoV2Config:
    """The ViT's shape read from a dinov2 checkpoint's tensors (size, depth, registers, patch, MLP width).

    Raises:
        FormatError: not a dinov2 ViT with registers.
    """
    try:
        dim = int(state["cls_token"].shape[-1])
        patch = int(state["patch_embed.proj.weight"].shape[-1])
        grid = round((state["pos_embed"].shape[1] - 1) ** 0.5)
        depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
        registers = int(state["register_tokens"].shape[1])
        hidden = int(state["blocks.0.mlp.fc1.weight"].shape[0])
    except (KeyError, ValueError, IndexError, AttributeError) as exc:
        raise FormatError(f"{where}: not a DINOv2 ViT with registers ({type(exc).__name__}: {exc}); expected "
                          "dinov2_vitl14_reg4_pretrain.pth") from exc
    return DinoV2Config(img_size=grid * patch, patch_size=patch, embed_dim=dim, depth=depth,
                        num_heads=max(1, dim // DINOV2_HEAD_DIM), mlp_ratio=hidden / dim,
                        num_register_tokens=registers)


def load_dinov2(path: Path) -> DinoV2Reg:
    """The conditioner from a dinov2 hub ``.pth`` (weights only, memory-mapped, no code run), eval mode, CPU.

    Its shape is read from its tensors (`dinov2_config`), or from a ``.json`` of dinov2 constructor arguments beside
    it when there is one (a model of another head width, e.g. a test's stand-in; the published files need none).

    Raises:
        FileNotFoundError: `path` does not exist.
        FormatError: not a DINOv2-with-registers state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 checkpoint {path} not found; run `glimpsed models pull trellis`")
    state = read_torch_checkpoint(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FormatError(f"{path}: expected a dict of tensors (a DINOv2 state dict)")
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            config = DinoV2Config.from_dict(json.loads(sidecar.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise FormatError(f"{sidecar}: not a DINOv2 config ({type(exc).__name__}: {exc})") from exc
    else:
        config = dinov2_config(state, str(path))
    with torch.device("meta"):
        model = DinoV2Reg(config)
    return assign_strict(model, state, str(path))


def load_trellis(folder: Path, dinov2: Path, fp16: bool | None = None) -> tuple[TrellisModels, TrellisSettings]:
    """The five networks (eval mode, CPU) and the settings of a TRELLIS hub folder and a DINOv2 checkpoint.

    Raises:
        FileNotFoundError: a file is missing. FormatError: a file is not what pipeline.json says it is.
    """
    folder = Path(folder)
    config = read_pipeline_json(folder / "pipeline.json")
    nets = {key: load_component(folder / f"{config.checkpoints[key]}.json", cls, fp16)
            for key, cls in COMPONENTS.items()}
    models = TrellisModels(load_dinov2(dinov2), nets["sparse_structure_flow_model"],
                           nets["sparse_structure_decoder"], nets["slat_flow_model"], nets["slat_decoder_gs"])
    return models, config.settings
