"""`EnhanceService`: depth-guided SDXL-Lightning img2img of rendered views (the enhance stage's learned backend).

What runs is diffusers' `StableDiffusionXLControlNetImg2ImgPipeline`, assembled from three
planned model files (see `ai_modules.models`):

- ``enhance/sdxl-base``: the stabilityai/stable-diffusion-xl-base-1.0 snapshot. Its text
  encoders, tokenizers, VAE and scheduler config are used, and its UNet *config* only;
- ``enhance/sdxl-lightning/sdxl_lightning_4step_unet.safetensors``: ByteDance's 4-step
  distilled UNet. It replaces the base UNet's weights (``load_state_dict``, strict);
- ``enhance/controlnet-depth-sdxl``: diffusers/controlnet-depth-sdxl-1.0.

Following the SDXL-Lightning model card, the scheduler is `EulerDiscreteScheduler` with
``timestep_spacing="trailing"`` (the distilled model expects the timesteps 999, 749, 499,
249), and ``guidance_scale`` is 0 because Lightning is distilled without classifier-free
guidance. Img2img with `strength` runs the last ``int(steps * strength)`` of those steps
(strength 0.5 runs 499 and 249), so the UNet only sees timesteps it was distilled on.

Precision: fp16 on CUDA, fp32 on CPU. The SDXL base VAE overflows in fp16 (NaN or black
images). Its config sets ``force_upcast: true``, and diffusers then runs the VAE
encode/decode in fp32 while everything else stays fp16. This costs a little time and
memory. The fp16-fix VAE (madebyollin/sdxl-vae-fp16-fix) would avoid the upcast, but it
is not one of the planned files.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..errors import FormatError, InputError, ModelNotAvailable
from ..models import model_status, resolve_models_dir
from .functional import as_rgb_image, depth_control_image, processing_size

MODEL_NAMES: tuple[str, str, str] = ("sdxl-base", "sdxl-lightning-4step-unet", "controlnet-depth-sdxl")
PULL_HINT = "fetch it again (`glimpsed models pull sdxl_lightning`)"

# Components of the base snapshot that the pipeline loads, and the file each must hold.
# (unet: only its config; the weights come from the Lightning file.)
_BASE_PARTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("unet", ("config.json",)),
    ("vae", ("config.json",)),
    ("text_encoder", ("config.json",)),
    ("text_encoder_2", ("config.json",)),
    ("scheduler", ("scheduler_config.json",)),
    ("tokenizer", ("vocab.json", "tokenizer.json")),
    ("tokenizer_2", ("vocab.json", "tokenizer.json")),
)
_PLAIN_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors",
                  "pytorch_model.bin", "diffusion_pytorch_model.safetensors.index.json",
                  "model.safetensors.index.json")


@dataclass(frozen=True)
class EnhanceModelPaths:
    """Where the three enhance models are on disk.

    Attributes:
        base: the SDXL base snapshot directory (holds model_index.json).
        lightning_unet: the SDXL-Lightning 4-step UNet safetensors file.
        controlnet: the depth ControlNet snapshot directory (holds config.json).
    """

    base: Path
    lightning_unet: Path
    controlnet: Path


def enhance_model_paths(models_dir: str | Path | None = None) -> EnhanceModelPaths:
    """Check that all three enhance models are on disk, before anything is loaded.

    Args:
        models_dir: the model tree; None -> `ai_modules.models.resolve_models_dir`.

    Raises:
        ModelNotAvailable: for the first missing one (in `MODEL_NAMES` order), naming its
            exact path and how to fetch it.
    """
    statuses = [model_status(name, models_dir) for name in MODEL_NAMES]
    for status in statuses:
        if not status.present:
            raise status.error()
    base, lightning_unet, controlnet = (Path(str(s.path)) for s in statuses)
    return EnhanceModelPaths(base, lightning_unet, controlnet)


class EnhanceService:
    """Depth-guided enhancement of rendered views with SDXL-Lightning + ControlNet-depth.

    Models load on the first `enhance` call (or on `load()`) and stay loaded until `unload()`.

    Args:
        device: where to run, e.g. "cuda", "cuda:1", "cpu".
        models_dir: the model tree; None -> ``$GLIMPSED_MODELS_DIR``, else ``~/.cache/glimpsed/models``.
        dtype: None -> float16 on CUDA, float32 elsewhere.
        steps: the Lightning schedule length; 4 matches the planned 4-step UNet file.
        low_memory: CUDA: sequential CPU offload (each layer's weights move to the GPU only while it
            runs, so the GPU holds activations and one layer at a time; slower; needs the `accelerate`
            package), and on any device VAE slicing and tiling.
        resolution: the processing area is about ``resolution**2`` pixels at the input's
            aspect ratio (SDXL works best at 1024x1024). Small values only make sense
            with test models.

    Example:
        >>> service = EnhanceService("cuda")                                     # doctest: +SKIP
        >>> better = service.enhance(view, depth, "a ceramic mug", strength=0.5)  # doctest: +SKIP
        >>> better.size == view.size                                            # doctest: +SKIP
        True
    """

    def __init__(self, device: str | torch.device = "cuda", *, models_dir: str | Path | None = None,
                 dtype: torch.dtype | None = None, steps: int = 4, low_memory: bool = False,
                 resolution: int = 1024) -> None:
        self.device = torch.device(device)
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"`dtype` must be a floating torch.dtype or None, got {dtype!r}")
        self.dtype = dtype if dtype is not None else (torch.float16 if self.device.type == "cuda" else torch.float32)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be a positive integer (4 for the 4-step Lightning UNet), got {steps!r}")
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 64 or resolution % 8:
            raise ValueError(f"`resolution` must be an integer >= 64 and a multiple of 8, got {resolution!r}")
        self.steps = steps
        self.low_memory = bool(low_memory)
        self.resolution = resolution
        self.models_dir = resolve_models_dir(models_dir)
        self._pipe: Any = None
        self._paths: EnhanceModelPaths | None = None

    def __repr__(self) -> str:
        return (f"EnhanceService(device={str(self.device)!r}, dtype={self.dtype}, steps={self.steps}, "
                f"low_memory={self.low_memory}, loaded={self.loaded}, models_dir={str(self.models_dir)!r})")

    @property
    def loaded(self) -> bool:
        """True once the models are loaded."""
        return self._pipe is not None

    @property
    def pipeline(self) -> Any:
        """The loaded diffusers `StableDiffusionXLControlNetImg2ImgPipeline` (loads it if needed)."""
        self.load()
        return self._pipe

    @property
    def model_paths(self) -> EnhanceModelPaths:
        """The three model paths in use (checked on disk; raises `ModelNotAvailable` when one is missing)."""
        return self._paths if self._paths is not None else enhance_model_paths(self.models_dir)

    def load(self) -> EnhanceService:
        """Load the three models onto the device; a no-op when they already are.

        Returns:
            self, for chaining.

        Raises:
            ModelNotAvailable: a model file is missing (all three are checked before any is loaded).
            FormatError: a snapshot or the UNet file is broken; the message names it.
            ImportError: diffusers/transformers (or accelerate, for `low_memory` on CUDA) are not installed.
            RuntimeError: `device` is CUDA but torch sees no CUDA device.
        """
        if self._pipe is not None:
            return self
        paths = enhance_model_paths(self.models_dir)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"`device` is {str(self.device)!r} but torch sees no CUDA device; pass device='cpu'")
        diffusers = _import_diffusers(need_accelerate=self.low_memory and self.device.type == "cuda")
        dtype_kw = _dtype_keyword(diffusers)
        _check_base_snapshot(paths.base)
        # Straight to the GPU unless offloading (then everything starts on the CPU).
        staging = torch.device("cpu") if self.low_memory else self.device
        unet = _load_lightning_unet(paths, self.dtype, staging)
        with _format_errors("depth ControlNet snapshot", paths.controlnet, _source("controlnet-depth-sdxl")):
            controlnet = diffusers.ControlNetModel.from_pretrained(
                paths.controlnet, **{dtype_kw: self.dtype}, variant=_fp16_only(paths.controlnet), local_files_only=True)
        with _format_errors("SDXL base snapshot", paths.base, _source("sdxl-base")):
            pipe = diffusers.StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(
                paths.base, unet=unet, controlnet=controlnet, **{dtype_kw: self.dtype},
                variant=_base_variant(paths.base), local_files_only=True,
                # The invisible watermark perturbs the very pixels reconstruction later fits.
                add_watermarker=False,
            )
        pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config,
                                                                      timestep_spacing="trailing")
        pipe.set_progress_bar_config(disable=True)
        if self.low_memory:
            pipe.vae.enable_slicing()
            pipe.vae.enable_tiling()
        if self.low_memory and self.device.type == "cuda":
            pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            pipe.to(self.device)
        self._pipe, self._paths = pipe, paths
        return self

    def unload(self) -> None:
        """Drop the models and give their memory back (a later `enhance` loads them again)."""
        if self._pipe is None:
            return
        if self.low_memory and self.device.type == "cuda":
            self._pipe.remove_all_hooks()
        self._pipe = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def enhance(self, image: Image.Image | np.ndarray | torch.Tensor,
                depth_map: Image.Image | np.ndarray | torch.Tensor, prompt: str = "", *,
                negative_prompt: str = "", strength: float = 0.5, controlnet_scale: float = 0.5,
                seed: int = 0) -> Image.Image:
        """Enhance one rendered view, guided by its depth; the result has the input's size.

        The view is resized to the processing size (about ``resolution**2`` pixels, sides a
        multiple of 8), denoised from ``strength`` of the Lightning schedule with the depth
        ControlNet, and resized back.

        Args:
            image: PIL image, or ``[H,W,3|4]`` uint8 0..255 / float 0..1 (alpha is composited on white).
            depth_map: ``[H,W]`` array/tensor of any scale, larger = nearer (normalised to 0..1,
                near = bright, as the controlnet-depth-sdxl model card does); or a ready PIL
                control image. Same aspect ratio as `image`.
            prompt: what the object is, e.g. "a red ceramic mug"; "" works too.
            negative_prompt: accepted for API compatibility; it has no effect, because
                Lightning runs without classifier-free guidance (a warning says so).
            strength: 0 < strength <= 1, how far to re-noise; at least one step must run,
                i.e. ``int(steps * strength) >= 1`` (>= 0.25 for 4 steps).
            controlnet_scale: weight of the depth guidance, >= 0 (the model card suggests 0.5).
            seed: a non-negative integer; same seed, inputs and device -> same image.

        Returns:
            RGB PIL image of the input's size.

        Raises:
            InputError: a bad argument, image or depth map (checked before any model loads).
            ModelNotAvailable, FormatError, ImportError: see `load`.
        """
        return self.enhance_many([image], [depth_map], prompt, negative_prompt=negative_prompt, strength=strength,
                                 controlnet_scale=controlnet_scale, seed=seed)[0]

    def enhance_many(self, images: Sequence[Image.Image | np.ndarray | torch.Tensor],
                     depth_maps: Sequence[Image.Image | np.ndarray | torch.Tensor], prompt: str = "", *,
                     negative_prompt: str = "", strength: float = 0.5, controlnet_scale: float = 0.5,
                     seed: int = 0, batch_size: int = 1) -> list[Image.Image]:
        """`enhance` for several views of one size, `batch_size` at a time through the network (each view with
        its own generator seeded with `seed`, so a view comes out as `enhance` would make it, up to the
        rounding of batched kernels).

        Raises:
            InputError: as `enhance`, or views of different sizes, or a bad `batch_size`.
        """
        rgbs = [as_rgb_image(image) for image in images]
        if len(rgbs) != len(depth_maps):
            raise InputError(f"got {len(rgbs)} images and {len(depth_maps)} depth maps")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"`batch_size` must be an integer >= 1, got {batch_size!r}")
        if len({rgb.size for rgb in rgbs}) > 1:
            raise InputError(f"the views must have one size, got {sorted({rgb.size for rgb in rgbs})}")
        self._check_args(prompt, negative_prompt, strength, controlnet_scale, seed)
        if not rgbs:
            return []
        width, height = rgbs[0].size
        proc_w, proc_h = processing_size(width, height, self.resolution)
        controls = [depth_control_image(d, (proc_w, proc_h), image_size=(width, height)) for d in depth_maps]
        if negative_prompt:
            warnings.warn("`negative_prompt` has no effect: SDXL-Lightning runs without classifier-free "
                          "guidance (guidance_scale 0)", UserWarning, stacklevel=2)
        pipe = self.pipeline
        out: list[Image.Image] = []
        for start in range(0, len(rgbs), batch_size):
            chunk = range(start, min(start + batch_size, len(rgbs)))
            generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for _ in chunk]
            with warnings.catch_warnings():
                # diffusers' own fp16 VAE path calls its deprecated `upcast_vae`; nothing a caller can change
                warnings.filterwarnings("ignore", message=r".*upcast_vae.*deprecated", category=FutureWarning)
                results = pipe(
                    prompt=[prompt] * len(chunk), negative_prompt=[negative_prompt] * len(chunk) if negative_prompt
                    else None, image=[rgbs[i].resize((proc_w, proc_h), Image.Resampling.LANCZOS) for i in chunk],
                    control_image=[controls[i] for i in chunk], height=proc_h, width=proc_w,
                    strength=float(strength), num_inference_steps=self.steps, guidance_scale=0.0,
                    controlnet_conditioning_scale=float(controlnet_scale), generator=generators, output_type="pil",
                ).images
            out.extend(r if r.size == (width, height) else r.resize((width, height), Image.Resampling.LANCZOS)
                       for r in results)
        return out

    def _check_args(self, prompt: object, negative_prompt: object, strength: object, controlnet_scale: object,
                    seed: object) -> None:
        for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(value, str):
                raise InputError(f"`{name}` must be a string, got {value!r} ({type(value).__name__})")
        if not _is_real(strength) or not 0.0 < float(strength) <= 1.0:
            raise InputError(f"`strength` must be a number in (0, 1], got {strength!r}")
        if int(self.steps * float(strength)) < 1:
            raise InputError(f"`strength` must be at least 1/steps = {1 / self.steps:.3g} so that one of the "
                             f"{self.steps} Lightning steps runs, got {strength!r}")
        if not _is_real(controlnet_scale) or float(controlnet_scale) < 0.0:
            raise InputError(f"`controlnet_scale` must be a finite number >= 0, got {controlnet_scale!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
            raise InputError(f"`seed` must be an integer in [0, 2**63), got {seed!r}")


def _is_real(value: object) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def _source(name: str) -> str:
    """Where to fetch the planned model `name` from (for error messages)."""
    return model_status(name).source


def _import_diffusers(need_accelerate: bool) -> Any:
    """diffusers, or an ImportError that says what to install."""
    try:
        import diffusers
        import transformers  # noqa: F401  (the text encoders and tokenizers)
    except ImportError as exc:
        raise ImportError(f"the enhance backend `sdxl_lightning` needs diffusers and transformers ({exc}); "
                          "install them, e.g. `pip install 'diffusers>=0.30' 'transformers>=4.44' safetensors`, "
                          "or pick the embedded enhance backend") from exc
    if need_accelerate:
        try:
            import accelerate  # noqa: F401
        except ImportError as exc:
            raise ImportError("`low_memory=True` on CUDA offloads models with the `accelerate` package, which is "
                              "not installed; `pip install accelerate` or pass low_memory=False") from exc
    _quiet_empty_fp32_warning()
    return diffusers


def _dtype_keyword(diffusers: Any) -> str:
    """diffusers 0.40 renamed `from_pretrained`'s ``torch_dtype`` to ``dtype`` (and warns on the old name)."""
    from packaging.version import Version

    return "dtype" if Version(diffusers.__version__).release >= (0, 40) else "torch_dtype"


class _EmptyFp32ListFilter(logging.Filter):
    """Drops diffusers' "modules ... should be kept in float32: []" warning when the list is empty.

    diffusers (0.4x) logs it on every ``model.to(dtype=...)``, and the fp16 pipeline moves the
    VAE to fp32 and back (force_upcast) twice per call: two false warnings per enhanced view.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("There are modules in") and "should be kept in float32: []." in message)


def _quiet_empty_fp32_warning() -> None:
    logger = logging.getLogger("diffusers.models.modeling_utils")
    if not any(isinstance(f, _EmptyFp32ListFilter) for f in logger.filters):
        logger.addFilter(_EmptyFp32ListFilter())


@contextmanager
def _format_errors(what: str, path: Path, source: str) -> Iterator[None]:
    """Turn a loader's complaint about a file's contents into a `FormatError` that names `path`.

    Resource trouble (out of memory, permissions) passes through unchanged.
    """
    from safetensors import SafetensorError

    try:
        yield
    except (torch.cuda.OutOfMemoryError, PermissionError, FormatError, ModelNotAvailable):
        raise
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise FormatError(f"{what} at {path} cannot be loaded ({type(exc).__name__}: {_first_line(exc)}); "
                          f"it is incomplete or not the expected model: {PULL_HINT} or from {source}") from exc


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's message on one line, shortened (a state-dict error lists thousands of keys)."""
    text = " ".join(str(exc).split()) or "no message"
    return text if len(text) <= limit else text[:limit] + "..."


def _check_base_snapshot(base: Path) -> None:
    """model_index.json parses and every component the pipeline needs has its folder and config."""
    source = _source("sdxl-base")
    try:
        index = json.loads((base / "model_index.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"SDXL base snapshot at {base}: model_index.json is not valid JSON ({exc}); "
                          f"{PULL_HINT} or from {source}") from exc
    if not isinstance(index, dict):
        raise FormatError(f"SDXL base snapshot at {base}: model_index.json must hold a JSON object, "
                          f"got {type(index).__name__}; {PULL_HINT} or from {source}")
    missing = [f"{part}/{' or '.join(files)}" for part, files in _BASE_PARTS
               if not any((base / part / name).is_file() for name in files)]
    if missing:
        raise FormatError(f"SDXL base snapshot at {base} is incomplete: missing {', '.join(missing)}; "
                          f"{PULL_HINT} or from {source}")


def _load_lightning_unet(paths: EnhanceModelPaths, dtype: torch.dtype, device: torch.device) -> Any:
    """The base UNet architecture (from sdxl-base/unet/config.json) with the Lightning weights, strict.

    The model is built on the meta device (no memory, no random init of 2.6 B parameters);
    ``load_state_dict(assign=True)`` then adopts the file's tensors.
    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    config_dir = paths.base / "unet"
    with _format_errors("SDXL base UNet config", config_dir / "config.json", _source("sdxl-base")):
        config = UNet2DConditionModel.load_config(config_dir, local_files_only=True)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(config)
    source = _source("sdxl-lightning-4step-unet")
    with _format_errors("SDXL-Lightning UNet file", paths.lightning_unet, source):
        state = load_file(str(paths.lightning_unet), device=str(device))
    try:
        unet.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise FormatError(
            f"SDXL-Lightning UNet file at {paths.lightning_unet} does not fit the UNet that {config_dir}/config.json "
            f"describes ({_first_line(exc)}); the planned file is the diffusers-format "
            f"`sdxl_lightning_4step_unet.safetensors` (not ComfyUI's full checkpoint "
            f"`sdxl_lightning_4step.safetensors`): "
            f"{PULL_HINT} or from {source}") from exc
    del state
    unet.to(device=device, dtype=dtype)
    on_meta = [name for name, t in [*unet.named_parameters(), *unet.named_buffers()] if t.is_meta]
    if on_meta:  # a tensor the file could not provide (non-persistent buffer); never silently random
        raise FormatError(f"SDXL-Lightning UNet file at {paths.lightning_unet} left {len(on_meta)} tensors unset "
                          f"(e.g. {on_meta[0]}); {PULL_HINT} or from {source}")
    return unet.eval()


def _fp16_only(directory: Path) -> str | None:
    """"fp16" when `directory` holds only the fp16 variant of its weights (a pull of the fp16 files), else None."""
    if not directory.is_dir():
        return None
    names = {p.name for p in directory.iterdir()}
    if any(name in names for name in _PLAIN_WEIGHTS) or not any(".fp16." in name for name in names):
        return None
    return "fp16"


def _base_variant(base: Path) -> str | None:
    """The base snapshot's weights variant: "fp16" only when all its weighted components are fp16-only."""
    parts = [base / "vae", base / "text_encoder", base / "text_encoder_2"]
    return "fp16" if all(_fp16_only(p) == "fp16" for p in parts) else None
