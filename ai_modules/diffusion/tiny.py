"""Tiny random-weight stand-ins for the three enhance models, written in their real on-disk layouts.

Why: the unit tests (CPU) and the GPU smoke test must run `EnhanceService`'s real loading
code without the 10 GB of SDXL weights and without a network. The components are the
real diffusers/transformers classes with tiny configs (in the spirit of diffusers' own
`get_dummy_components`); only the sizes and the (seeded random) weights are fake.

Layout written under ``models_dir`` (the one `ai_modules.models` plans)::

    enhance/sdxl-base/                 model_index.json + unet/ vae/ text_encoder(_2)/ tokenizer(_2)/ scheduler/
    enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors   a UNet state dict (other values than sdxl-base/unet)
    enhance/controlnet-depth-sdxl/     config.json + diffusion_pytorch_model.safetensors

The tokenizers are built from a small vocab.json/merges.txt (letters, a few merges),
written the way the real SDXL snapshot stores them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

BASE_REL = Path("enhance/sdxl-base")
LIGHTNING_REL = Path("enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors")
CONTROLNET_REL = Path("enhance/controlnet-depth-sdxl")

_TEXT_HIDDEN = 32      # each text encoder's width; the UNet's cross-attention sees both: 2 * 32
_CN_GAIN = 3.0  # conditioning-embedding gain: depth matters, max activation ~30 (fp16-safe)
_TIME_EMBED = 8        # addition_time_embed_dim; SDXL's add_embedding input is 6 * this + the pooled text width


def _write_tokenizer_files(directory: Path) -> None:
    """A tiny byte-level BPE vocabulary in CLIP's layout (``</w>`` marks the end of a word)."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    symbols = "abcdefghijklmnopqrstuvwxyz0123456789.,"
    for suffix in ("", "</w>"):
        for ch in symbols:
            vocab.setdefault(ch + suffix, len(vocab))
    merges = []
    for left, right in (("t", "h"), ("th", "e</w>"), ("a", "n"), ("an", "d</w>"), ("o", "f</w>")):
        merges.append(f"{left} {right}")
        vocab.setdefault(left + right, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))


def tiny_unet(seed: int):
    """A 2-level SDXL-style UNet (``addition_embed_type="text_time"``), seeded."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 2),
        cross_attention_dim=2 * _TEXT_HIDDEN,
        addition_embed_type="text_time", addition_time_embed_dim=_TIME_EMBED,
        projection_class_embeddings_input_dim=6 * _TIME_EMBED + _TEXT_HIDDEN,
    )


def write_tiny_enhance_models(models_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write tiny random SDXL base, Lightning UNet file and depth ControlNet under `models_dir`.

    The VAE has four levels (downsampling by 8, as SDXL's) so that the ControlNet's
    conditioning embedding (also /8) matches the latent size, exactly as with the real models.

    Args:
        models_dir: root of the model tree (created if needed).
        seed: seeds every component; the Lightning UNet uses ``seed + 1`` so its values
            differ from the base snapshot's UNet.

    Returns:
        ``{"sdxl-base": dir, "sdxl-lightning-4step-unet": file, "controlnet-depth-sdxl": dir}``.
    """
    from diffusers import AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLPipeline
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    root = Path(models_dir)
    base_dir, lightning_file, controlnet_dir = root / BASE_REL, root / LIGHTNING_REL, root / CONTROLNET_REL

    with tempfile.TemporaryDirectory() as tok_src:
        _write_tokenizer_files(Path(tok_src))
        tokenizer = CLIPTokenizer.from_pretrained(tok_src)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=_TEXT_HIDDEN, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=_TEXT_HIDDEN, hidden_act="gelu",
        layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(text_config)
    torch.manual_seed(seed)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
        block_out_channels=(8, 16, 16, 16), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        force_upcast=True,  # as SDXL's VAE: fp16 pipelines run it in fp32
    )
    scheduler = EulerDiscreteScheduler(  # the SDXL base snapshot's scheduler_config.json
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        steps_offset=1, timestep_spacing="leading", prediction_type="epsilon",
    )
    unet = tiny_unet(seed)
    StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    ).save_pretrained(base_dir)
    # The hub snapshot stores its tokenizers as vocab.json + merges.txt; do the same.
    for name in ("tokenizer", "tokenizer_2"):
        for stale in (base_dir / name).iterdir():
            stale.unlink()
        _write_tokenizer_files(base_dir / name)

    lightning_file.parent.mkdir(parents=True, exist_ok=True)
    lightning = tiny_unet(seed + 1)
    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in lightning.state_dict().items()},
              str(lightning_file))  # the real file is fp16 too

    torch.manual_seed(seed + 2)
    controlnet = ControlNetModel.from_unet(unet)  # conditioning embedding (16, 32, 96, 256): /8
    with torch.no_grad():  # from_unet zero-inits the output convs: give them PyTorch's default init,
        # and widen the conditioning embedding, so that the depth image visibly steers the result
        # while activations stay well inside fp16's range (the GPU test runs these in fp16).
        for module in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                       controlnet.controlnet_cond_embedding.conv_out]:
            module.reset_parameters()
        for p in controlnet.controlnet_cond_embedding.parameters():
            p.mul_(_CN_GAIN)
    controlnet.save_pretrained(controlnet_dir)

    return {"sdxl-base": base_dir, "sdxl-lightning-4step-unet": lightning_file,
            "controlnet-depth-sdxl": controlnet_dir}
