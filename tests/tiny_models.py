"""Tiny random-weight stand-ins for real model files, written in the real layouts (tests only)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

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
