"""The SyncDreamer sampling loop and the high-level `SyncDreamer` generator (cutout -> 16 views).

RNG: every random draw (VAE posterior eps, x_T, one noise per DDIM step except the last) comes
from one CPU `torch.Generator` in the original's order, then moves to the device, so a seed gives
the same views on CPU and GPU. (The original draws x_T and the step noises from the CUDA
generator, so its images for a seed cannot be reproduced bit for bit anywhere else.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..residency import on_device
from .cameras import world_to_camera_4x4
from .config import VIEW_NUM, RunOptions, SyncDreamerConfig
from .model import SyncDreamerModel
from .preprocess import clip_pixels, elevation_radians, prepare_image
from .sampler import ddim_step, ddim_timesteps, make_ddim_schedule
from .speed import choose_batch_view_num, precision_context, resolve_dtype
from .weights import LoadReport, config_beside, load_weights, locate_weights

StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def randn(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Standard normal drawn on the CPU generator (the global one when None), moved to `device`."""
    return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)


@torch.no_grad()
def sample_latents(model: SyncDreamerModel, x_input: torch.Tensor, clip_embed: torch.Tensor, elevation: torch.Tensor,
                   steps: int = 50, cfg_scale: float = 2.0, eta: float = 1.0, batch_view_num: int = VIEW_NUM,
                   generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32,
                   unet: Callable[..., torch.Tensor] | None = None, x_T: torch.Tensor | None = None,
                   on_step: StepCallback | None = None) -> torch.Tensor:
    """DDIM sampling of the 16 target latents (`SyncDDIMSampler.sample`).

    Args:
        model: the network (on its device).
        x_input: [B,4,32,32] input-view latent (scaled by 0.18215); clip_embed: [B,1,768]; elevation: [B] radians.
        steps: DDIM steps (uniform); cfg_scale: guidance (1 = none); eta: DDIM eta (1 = the original's).
        batch_view_num: views per UNet call; generator: CPU generator for x_T and the step noises.
        dtype: compute dtype (float32 = exact; bf16/fp16 run the denoiser under autocast).
        unet: a replacement for `model.model` (e.g. compiled); x_T: start latents instead of drawing them.
        on_step: called after each step with (step, total, x [B,16,4,32,32], eps [B,16,4,32,32]).

    Returns:
        [B,16,4,32,32] float32 latents.
    """
    device = x_input.device
    schedule = make_ddim_schedule(model.alphas_cumprod, steps, eta)
    b = x_input.shape[0]
    size = model.config.latent_size
    x = randn((b, VIEW_NUM, 4, size, size), generator, device) if x_T is None else x_T.to(device)
    total = schedule.num_steps
    for step, index in enumerate(reversed(range(total))):
        t = torch.full((b,), int(schedule.timesteps[index]), device=device, dtype=torch.long)
        with precision_context(device, dtype):
            eps = model.denoise(x, t, x_input, clip_embed, elevation, cfg_scale, batch_view_num, unet=unet)
        noise = randn(tuple(x.shape), generator, device) if index != 0 else None
        x = ddim_step(x, eps.float(), schedule, index, noise)
        if on_step is not None:
            on_step(step, total, x, eps)
    return x


def to_pil_views(images: torch.Tensor) -> list[Image.Image]:
    """[16,3,H,W] decoder output -> 16 RGB images: clamp to [-1,1], to [0,255], truncating cast (as generate.py)."""
    x = (torch.clamp(images.float(), -1.0, 1.0) + 1) * 0.5
    arr = (x.permute(0, 2, 3, 1).cpu().numpy() * 255).astype(np.uint8)
    return [Image.fromarray(a, mode="RGB") for a in arr]


def materialize_meta(model: torch.nn.Module) -> list[str]:
    """Replace tensors still on the meta device (unused keys a checkpoint lacked) with zeros on the CPU."""
    names = []
    for name, p in list(model.named_parameters()):
        if p.is_meta:
            module_name, _, attr = name.rpartition(".")
            module = model.get_submodule(module_name)
            setattr(module, attr, torch.nn.Parameter(torch.zeros(p.shape, dtype=p.dtype), requires_grad=False))
            names.append(name)
    for name, buf in list(model.named_buffers()):
        if buf.is_meta:
            module_name, _, attr = name.rpartition(".")
            model.get_submodule(module_name).register_buffer(attr, torch.zeros(buf.shape, dtype=buf.dtype))
            names.append(name)
    return names


class SyncDreamer:
    """SyncDreamer as a library call: an RGBA cutout in, 16 views at 256x256 (and their cameras) out.

    Example:
        >>> sd = SyncDreamer.from_models_dir("~/models", device="cuda")      # doctest: +SKIP
        >>> views = sd.generate(Image.open("chair_rgba.png"), elevation_deg=30.0, seed=6033)
        >>> viewmats, ks = sd.cameras()                                    # [16,4,4], [16,3,3]

    Args:
        model: a loaded `SyncDreamerModel` (CPU or meta-free).
        device: where to run ("cuda", "cuda:1", "cpu").
        options: precision / batching / compile / low-memory choices (`RunOptions`).
    """

    def __init__(self, model: SyncDreamerModel, device: str | torch.device = "cuda",
                 options: RunOptions | None = None) -> None:
        self.options = options = RunOptions() if options is None else options
        options.validate()
        self.device = torch.device(device)
        self.dtype = resolve_dtype(options.precision, self.device)
        self.model = model.eval().requires_grad_(False)
        self.batch_view_num: int | None = None
        self.load_report: LoadReport | None = None
        offloaded = ("first_stage_model", "clip_image_encoder") if options.low_memory else ()
        for name, child in model.named_children():
            child.to("cpu" if name in offloaded else self.device)
        for name, buf in list(model.named_buffers(recurse=False)):
            model.register_buffer(name, buf.to(self.device))
        self.unet = model.model
        if options.compile_unet:
            self.unet = torch.compile(model.model)

    @classmethod
    def from_models_dir(cls, models_dir: str | Path, device: str | torch.device = "cuda",
                        options: RunOptions | None = None, config: SyncDreamerConfig | None = None,
                        ) -> SyncDreamer:
        """Build the model without allocating it twice (meta device + memory-mapped checkpoint) and load it.

        Raises:
            ModelNotAvailable: `models_dir/syncdreamer/syncdreamer-pretrain.ckpt` is missing; the message
                names that path and `glimpsed models pull syncdreamer`.
            FormatError: the checkpoint does not match the model.
        """
        files = locate_weights(models_dir)
        config = config if config is not None else config_beside(files.checkpoint)
        with torch.device("meta"):
            model = SyncDreamerModel(config)
        report = load_weights(model, files.checkpoint, files.clip, assign=True)
        materialize_meta(model)
        sd = cls(model, device, options)
        sd.load_report = report
        return sd

    def unload(self) -> None:
        """Move the network to the CPU and release cached device memory (a stage's `unload`)."""
        self.model.to("cpu")
        self.unet = self.model.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def cameras(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 16 target cameras (the checkpoint's): world-to-camera [16,4,4] (OpenCV axes) and K [16,3,3] at 256 px."""
        return world_to_camera_4x4(self.model.poses.float().cpu()), self.model.Ks.float().cpu()

    def check_inputs(self, rgba_image: Image.Image, elevation_deg: float, steps: int, cfg_scale: float) -> None:
        """Raise ValueError/TypeError naming the argument when an input cannot be used."""
        if not isinstance(rgba_image, Image.Image):
            raise TypeError(f"`rgba_image` must be a PIL.Image, got {type(rgba_image).__name__}")
        if not (isinstance(elevation_deg, (int, float)) and math.isfinite(elevation_deg) and -90 < elevation_deg < 90):
            raise ValueError(f"`elevation_deg` must be a finite angle in (-90, 90) degrees, got {elevation_deg!r}")
        ddim_timesteps(steps)                     # raises ValueError naming `steps` when unusable
        if not (isinstance(cfg_scale, (int, float)) and math.isfinite(cfg_scale) and cfg_scale >= 0):
            raise ValueError(f"`cfg_scale` must be a finite number >= 0, got {cfg_scale!r}")

    @torch.no_grad()
    def encode_conditions(self, rgba_image: Image.Image, elevation_deg: float, generator: torch.Generator,
                          crop_size: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Preprocess and encode the input (always fp32): (x_input [1,4,32,32], clip_embed [1,1,768], elevation [1])."""
        image = prepare_image(rgba_image, crop_size).permute(2, 0, 1)[None].contiguous()
        elevation = elevation_radians(elevation_deg).to(self.device)
        low, fp32 = self.options.low_memory, torch.float32
        with on_device(self.model.clip_image_encoder, self.device, low), precision_context(self.device, fp32):
            clip_embed = self.model.encode_clip(clip_pixels(image).to(self.device))
        eps = randn((1, 4, image.shape[-2] // 8, image.shape[-1] // 8), generator, self.device)
        with on_device(self.model.first_stage_model, self.device, low), precision_context(self.device, fp32):
            x_input = self.model.encode_input_latent(image.to(self.device), eps)
        return x_input, clip_embed, elevation

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """[1,16,4,32,32] latents -> [16,3,256,256] raw decoder output (one view per call in low-memory mode)."""
        chunk = 1 if self.options.low_memory else (self.batch_view_num or VIEW_NUM)
        dtype = self.dtype if self.dtype == torch.bfloat16 else torch.float32     # fp16 VAE decoders overflow
        views = latents[0]
        out = []
        with on_device(self.model.first_stage_model, self.device, self.options.low_memory):
            for start in range(0, views.shape[0], chunk):
                with precision_context(self.device, dtype):
                    out.append(self.model.decode_latents(views[start:start + chunk].to(self.device)).float())
        return torch.cat(out, 0)

    def generate(self, rgba_image: Image.Image, elevation_deg: float = 30.0, seed: int = 6033, steps: int = 50,
                 cfg_scale: float = 2.0, crop_size: int = 200, eta: float = 1.0,
                 on_step: StepCallback | None = None) -> list[Image.Image]:
        """16 views of the object (views[i] is seen from azimuth 22.5 deg * i, elevation 30 deg).

        Args:
            rgba_image: the cutout, RGBA (alpha marks the object); composited on white.
            elevation_deg: elevation the photo was taken from (the original's README: roughly -10..40).
            seed: seeds the CPU generator of every random draw.
            steps: DDIM steps (50 as generate.py); cfg_scale: classifier-free guidance (2.0).
            crop_size: object size in the 256 px input (200 as the README's example; -1 keeps the framing).
            eta: DDIM eta (1.0, generate.py's stochastic default).
            on_step: progress callback (step, total, latents, eps); raising in it stops the run.

        Returns:
            16 RGB PIL images, 256x256.
        """
        latents = self.generate_latents(rgba_image, elevation_deg, seed, steps, cfg_scale, crop_size, eta, on_step)
        return to_pil_views(self.decode(latents))

    def generate_latents(self, rgba_image: Image.Image, elevation_deg: float = 30.0, seed: int = 6033,
                         steps: int = 50, cfg_scale: float = 2.0, crop_size: int = 200, eta: float = 1.0,
                         on_step: StepCallback | None = None) -> torch.Tensor:
        """Like `generate` but returns the sampled latents [1,16,4,32,32] (scaled by 0.18215)."""
        self.check_inputs(rgba_image, elevation_deg, steps, cfg_scale)
        generator = torch.Generator().manual_seed(int(seed))
        x_input, clip_embed, elevation = self.encode_conditions(rgba_image, elevation_deg, generator, crop_size)
        self.batch_view_num = choose_batch_view_num(self.options, self.device, self.dtype)
        return sample_latents(self.model, x_input, clip_embed, elevation, steps=steps, cfg_scale=cfg_scale, eta=eta,
                              batch_view_num=self.batch_view_num, generator=generator, dtype=self.dtype,
                              unet=self.unet, on_step=on_step)

