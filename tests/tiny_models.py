"""Tiny random-weight stand-ins for real model files, written in the real layouts (tests only)."""

from __future__ import annotations

import contextlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
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


#: TRELLIS at the golden vectors' tiny config (../shared/trellis/golden/meta.json): the published networks'
#: structure with 32 channels and 2 blocks, a 4^3 sparse-structure latent decoded to a 16^3 grid.
TINY_TRELLIS = {
    "sparse_structure_flow_model": ("SparseStructureFlowModel", {
        "resolution": 4, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 32,
        "num_blocks": 2, "num_heads": 2, "mlp_ratio": 4, "patch_size": 1, "pe_mode": "ape", "qk_rms_norm": True,
        "use_fp16": False}),
    "sparse_structure_decoder": ("SparseStructureDecoder", {
        "out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
        "channels": [16, 8, 8], "use_fp16": False}),
    "slat_flow_model": ("SLatFlowModel", {
        "resolution": 16, "in_channels": 8, "out_channels": 8, "model_channels": 32, "cond_channels": 32,
        "num_blocks": 2, "num_heads": 2, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
        "io_block_channels": [16], "pe_mode": "ape", "qk_rms_norm": True, "use_fp16": False}),
    "slat_decoder_gs": ("SLatGaussianDecoder", {
        "resolution": 16, "model_channels": 32, "latent_channels": 8, "num_blocks": 2, "num_heads": 2,
        "mlp_ratio": 4, "attn_mode": "swin", "window_size": 4, "use_fp16": False, "representation_config": {
            "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
            "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
            "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1,
            "scaling_activation": "softplus"}}),
}


def seeded_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The golden run's initialisation (so zero-initialised output layers are not zero): matrices N(0,1)/sqrt(fan_in),
    1-D norm weights and gammas 1 + 0.1 N, biases 0.05 N, other vectors 0.5 N."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            elif name.endswith("bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif name.endswith(("weight", "gamma")):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model.eval()


def _calibrate_occupancy(models, image, settings, voxels: int) -> None:  # noqa: ANN001 - TRELLIS types load lazily
    """Shift the SS decoder's last bias so that exactly `voxels` voxels come out occupied for this image (on the CPU,
    in fp32): the stand-in's random decoder then occupies some voxels, as a trained one would."""
    from ai_modules.trellis import pipeline as P

    found: dict[str, torch.Tensor] = {}

    class Captured(Exception):
        """Ends the probe run at the SS decoder: nothing after it bears on the bias."""

    def capture(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
        found["logits"] = out.detach()
        raise Captured

    hook = models.ss_decoder.register_forward_hook(capture)
    with contextlib.suppress(Captured):
        P.run(models, image, settings, "cpu")
    hook.remove()
    logits = found["logits"].flatten().float()
    kth = torch.topk(logits, voxels + 1).values
    shift = float((kth[-2] + kth[-1]) / 2)                # between the voxels-th and the next logit
    last = [m for m in models.ss_decoder.modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():
        last.bias -= shift


def tiny_trellis_models(seed: int = 0, occupied: float = 0.02, probe: np.ndarray | None = None):  # noqa: ANN201
    """The five tiny TRELLIS networks with seeded random weights (`TrellisModels`) and their settings (3 + 3 steps,
    unit normalisation). The sparse-structure decoder's last bias is shifted so that about `occupied` of the 16^3
    voxels are occupied for the `probe` RGBA image (default: a disc), and the Gaussian decoder's opacity outputs are
    raised and its scales lowered, so that its Gaussians look like a surface of small opaque splats in renders."""
    from PIL import Image

    from ai_modules.trellis import loading
    from ai_modules.trellis.conditioner import DinoV2Config, DinoV2Reg
    from ai_modules.trellis.gs_decoder import gaussian_layout
    from ai_modules.trellis.pipeline import TrellisModels, TrellisSettings
    from ai_modules.trellis.sampler import SamplerSettings

    nets = {key: seeded_init(loading.COMPONENTS[key](**args), seed + i)
            for i, (key, (_, args)) in enumerate(TINY_TRELLIS.items())}
    conditioner = seeded_init(DinoV2Reg(DinoV2Config(embed_dim=32, depth=2, num_heads=1)), seed + 9)
    models = TrellisModels(conditioner, nets["sparse_structure_flow_model"], nets["sparse_structure_decoder"],
                           nets["slat_flow_model"], nets["slat_decoder_gs"])
    sampler = SamplerSettings(steps=3, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
    settings = TrellisSettings(ss_sampler=sampler, slat_sampler=sampler, slat_mean=(0.0,) * 8, slat_std=(1.0,) * 8)
    decoder_out = models.gs_decoder.out_layer
    start = 0
    with torch.no_grad():
        for name, shape in gaussian_layout(32):
            width = int(np.prod(shape))
            if name == "_opacity":
                decoder_out.bias[start:start + width] += 4.0          # sigmoid(4 + logit 0.1) ~ 0.86
            if name == "_scaling":
                decoder_out.bias[start:start + width] += 1.5          # softplus(1.5 - 5.5) ~ 0.018: a third of a voxel
            start += width
    if probe is None:
        yy, xx = np.mgrid[0:128, 0:128] / 128.0
        disc = (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.12).astype(np.float32)
        probe = np.dstack([np.full((128, 128, 3), 0.6, np.float32), disc])
    image = Image.fromarray((probe * 255).astype(np.uint8), "RGBA")
    grid = TINY_TRELLIS["slat_flow_model"][1]["resolution"] ** 3
    _calibrate_occupancy(models, image, settings, max(1, int(occupied * grid)))
    return models, settings


def write_tiny_trellis(models_dir: Path, seed: int = 0, occupied: float = 0.02) -> Path:
    """`models_dir/trellis/`: TRELLIS-image-large's hub layout (pipeline.json, ckpts/<published names>.json +
    .safetensors) holding `tiny_trellis_models`, and the DINOv2 ``.pth`` beside it. Returns the hub folder."""
    from safetensors.torch import save_file

    from ai_modules.trellis.loading import PUBLISHED_CKPTS

    models, settings = tiny_trellis_models(seed, occupied)
    folder = Path(models_dir) / "trellis" / "TRELLIS-image-large"
    (folder / "ckpts").mkdir(parents=True, exist_ok=True)
    nets = {"sparse_structure_flow_model": models.ss_flow, "sparse_structure_decoder": models.ss_decoder,
            "slat_flow_model": models.slat_flow, "slat_decoder_gs": models.gs_decoder}
    for key, net in nets.items():
        name, args = TINY_TRELLIS[key]
        (folder / f"{PUBLISHED_CKPTS[key]}.json").write_text(json.dumps({"name": name, "args": args}))
        save_file({k: v.contiguous() for k, v in net.state_dict().items()},
                  str(folder / f"{PUBLISHED_CKPTS[key]}.safetensors"))

    def sampler(s):  # noqa: ANN001, ANN202
        return {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": s.sigma_min},
                "params": {"steps": s.steps, "cfg_strength": s.cfg_strength, "cfg_interval": list(s.cfg_interval),
                           "rescale_t": s.rescale_t}}

    (folder / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": {
        "models": PUBLISHED_CKPTS, "sparse_structure_sampler": sampler(settings.ss_sampler),
        "slat_sampler": sampler(settings.slat_sampler), "image_cond_model": "dinov2_vitl14_reg",
        "slat_normalization": {"mean": list(settings.slat_mean), "std": list(settings.slat_std)}}}))
    torch.save(models.conditioner.state_dict(), folder.parent / "dinov2_vitl14_reg4_pretrain.pth")
    return folder
