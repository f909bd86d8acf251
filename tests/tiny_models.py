"""Tiny random-weight stand-ins for real model files, written in the real layouts (tests only)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

from ai_modules.sync_dreamer import SyncDreamerConfig, SyncDreamerModel
from ai_modules.sync_dreamer.config import VAEConfig

_TINY = SyncDreamerConfig.tiny()
#: The golden tiny config with one attention level and a one-block VAE: a fast stand-in for SyncDreamer.
MICRO_SYNCDREAMER = replace(_TINY, unet=replace(_TINY.unet, attention_resolutions=(4,)),
                            vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=0))


def write_tiny_syncdreamer(models_dir: Path, seed: int = 0) -> Path:
    """`models_dir/syncdreamer/syncdreamer-pretrain.ckpt` (a Lightning-style {"state_dict": ...}) of
    `MICRO_SYNCDREAMER` with random weights, and the `config.json` beside it that gives its sizes."""
    folder = Path(models_dir) / "syncdreamer"
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save({"state_dict": SyncDreamerModel(MICRO_SYNCDREAMER).state_dict()}, folder / "syncdreamer-pretrain.ckpt")
    (folder / "config.json").write_text(json.dumps(MICRO_SYNCDREAMER.to_dict()))
    return folder / "syncdreamer-pretrain.ckpt"


def tiny_dinov2(directory: Path, seed: int = 0) -> Path:
    """`directory/refine/dinov2/`: a ViT of timm's `vit_small_patch14_dinov2` family (14 px patches, one cls
    token, layer scale) with 32 channels, 2 blocks and 70 px position embeddings instead of 384 / 12 / 518,
    random weights, saved by timm's own `save_for_hf` in the hub repo's layout (``config.json`` with
    `architecture`, `model_args`, `pretrained_cfg`, and ``model.safetensors``). Returns the folder."""
    import timm
    from timm.models import save_for_hf

    folder = Path(directory) / "refine" / "dinov2"
    torch.manual_seed(seed)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, embed_dim=32, depth=2, num_heads=2,
                              img_size=70)
    save_for_hf(model, str(folder), safe_serialization=True)
    return folder


SIZE = 32                                   # the tiny DPT's input size (the real one: 384)


def tiny_dpt(seed: int = 0, *, symmetric: bool = False, hybrid: bool = False, size: int = SIZE,
             reassemble: tuple[float, ...] = (4, 2, 1, 1)) -> DPTForDepthEstimation:
    """A tiny DPT with an output that is positive and varied (random init gives ~1e-9 and ReLU zeros).

    `symmetric`: convolution kernels mirrored and position embeddings zero, which makes the
    model exactly equivariant to horizontal flips (with reassemble factors >= 1).
    """
    torch.manual_seed(seed)
    common = dict(hidden_size=32, num_attention_heads=2, intermediate_size=64, image_size=size,
                  fusion_hidden_size=16, use_auxiliary_head=False)
    if hybrid:   # the real model's layout: a BiT backbone (output stride 16) feeding a ViT
        config = DPTConfig(**common, num_hidden_layers=2, patch_size=16, is_hybrid=True,
                           backbone_out_indices=[0, 1, 0, 1], neck_hidden_sizes=[8, 16, 32, 32],
                           backbone_featmap_shape=[1, 32, size // 16, size // 16],
                           backbone_config=dict(global_padding="same", layer_type="bottleneck", depths=[1, 1, 1],
                                                hidden_sizes=[8, 16, 32], embedding_size=8, num_groups=2,
                                                out_features=["stage1", "stage2", "stage3"],
                                                embedding_dynamic_padding=True))
    else:
        config = DPTConfig(**common, num_hidden_layers=4, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
                           neck_hidden_sizes=[8, 8, 16, 16], reassemble_factors=list(reassemble))
    model = DPTForDepthEstimation(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                module.weight.normal_(0.0, (2.0 / module.weight[0].numel()) ** 0.5)
                if symmetric:
                    module.weight.copy_((module.weight + module.weight.flip(-1)) / 2)
        if symmetric:
            model.dpt.embeddings.position_embeddings.zero_()
        last = model.head.head[-2]
        last.weight.mul_(0.2)
        last.bias.fill_(1.0)
    return model


def tiny_processor(size: int = SIZE) -> DPTImageProcessor:
    return DPTImageProcessor(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def save_snapshot(root: Path, model: DPTForDepthEstimation) -> Path:
    snapshot = root / "depth" / "dpt-hybrid-midas"
    model.save_pretrained(snapshot)
    tiny_processor().save_pretrained(snapshot)
    return root


def write_tiny_learned_models(root: Path) -> Path:
    """Every learned backend's files under `root`, tiny: SyncDreamer, DPT and the three SDXL-Lightning models."""
    from ai_modules.diffusion.tiny import write_tiny_enhance_models

    save_snapshot(root, tiny_dpt())
    write_tiny_enhance_models(root)
    write_tiny_syncdreamer(root)
    return root
