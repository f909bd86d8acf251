"""SyncDreamer (liuyuan-pal/SyncDreamer), re-implemented to load the published checkpoint.

16 consistent 256x256 views of an object from one RGBA cutout. Modules, one job each:

    config.py      sizes (full / tiny) and `RunOptions` (precision, view batching, compile, low memory)
    preprocess.py  crop/resize/white-composite input and the CLIP pixel transform (bit-exact)
    cameras.py     the 16 target cameras and the projection helpers
    clip.py        OpenAI CLIP ViT image tower (+ unused text leftovers), transformers -> OpenAI key mapping
    vae.py         the SD-1.x KL-f8 autoencoder (ldm key names)
    attention.py   SD transformer blocks (SDPA) and SyncDreamer's depth-wise attention
    unet.py        the UNet with depth-wise conditioning, CFG batching
    volume.py      spatial volume + per-view frustum volumes and their 3D nets
    sampler.py     noise schedule and DDIM
    model.py       `SyncDreamerModel` (state_dict == the checkpoint's) and one denoising step
    archive.py     code-free readers for torch zip / TorchScript archives
    weights.py     where the weights live and how they are loaded
    speed.py       autocast, free-VRAM view batching
    generate.py    the sampling loop and the `SyncDreamer` generator
    library.py     `generate_multiview(image, out_dir, elevation)`: the library call (files + cameras.json)

Usage::

    from ai_modules.sync_dreamer import generate_multiview
    paths = generate_multiview("chair_rgba.png", "views/", elevation=30.0)     # 16 PNGs + cameras.json

    from ai_modules.sync_dreamer import SyncDreamer
    sd = SyncDreamer.from_models_dir(models_dir, device="cuda")
    views = sd.generate(rgba_image, elevation_deg=30.0, seed=6033)   # 16 PIL images
    viewmats, ks = sd.cameras()                                       # [16,4,4] world-to-camera, [16,3,3]
"""

from __future__ import annotations

from .config import RunOptions, SyncDreamerConfig
from .generate import SyncDreamer, sample_latents
from .library import generate_multiview
from .model import SyncDreamerModel
from .weights import load_weights, locate_weights

__all__ = ["RunOptions", "SyncDreamer", "SyncDreamerConfig", "SyncDreamerModel", "generate_multiview", "load_weights",
           "locate_weights", "sample_latents"]
