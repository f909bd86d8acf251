"""TRELLIS end to end: an RGBA cutout -> 3D Gaussians (SPEC 0, steps 1-7), on the five components.

The order of every random draw and every call is TRELLIS's own, so the tiny golden run (``../shared/trellis``)
is reproduced from the input PNG to the last Gaussian.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..errors import NoObjectFound
from ..residency import on_device
from .conditioner import DinoV2Reg, neg_cond
from .gs_decoder import SLatGaussianDecoder, TrellisGaussians
from .preprocess import preprocess_rgba, to_model_input
from .sampler import (SLAT_SAMPLER_DEFAULTS, SS_SAMPLER_DEFAULTS, NoiseStream, SamplerSettings, StepRecord,
                      sample)
from .slat_flow import SLatFlowModel, denormalize, feature_model
from .sparse import SparseTensor
from .ss_decoder import SparseStructureDecoder, occupancy_coords
from .ss_flow import SparseStructureFlowModel

#: The SLat normalisation of the training config (SPEC 0; unverified until the hub's pipeline.json is pinned).
SLAT_MEAN = (-2.16875458, -0.00434705, -0.13352349, -0.08418073, -0.52712065, 0.72386891, -1.14144504, 1.20393634)
SLAT_STD = (2.37765074, 2.38637829, 2.12441802, 2.17485523, 2.66394472, 2.37119222, 2.62174463, 2.68452311)


@dataclass(frozen=True)
class TrellisSettings:
    """How a run samples: both samplers, the SLat normalisation and the seed of the noise."""

    ss_sampler: SamplerSettings = SS_SAMPLER_DEFAULTS
    slat_sampler: SamplerSettings = SLAT_SAMPLER_DEFAULTS
    slat_mean: Sequence[float] = SLAT_MEAN
    slat_std: Sequence[float] = SLAT_STD
    seed: int = 42


@dataclass
class TrellisModels:
    """The five networks of one TRELLIS pipeline (published or tiny sizes alike)."""

    conditioner: DinoV2Reg
    ss_flow: SparseStructureFlowModel
    ss_decoder: SparseStructureDecoder
    slat_flow: SLatFlowModel
    gs_decoder: SLatGaussianDecoder

    def modules(self) -> list[torch.nn.Module]:
        return [self.conditioner, self.ss_flow, self.ss_decoder, self.slat_flow, self.gs_decoder]


@dataclass
class TrellisRun:
    """One run's result and what it went through (for checks and for the stage record)."""

    gaussians: TrellisGaussians
    coords: torch.Tensor
    cond: torch.Tensor
    ss_latent: torch.Tensor
    slat: SparseTensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


#: Progress callback: (phase, step, steps), phase "sparse structure" or "structured latent"; raising stops the run.
OnStep = Callable[[str, int, int], None]


@torch.inference_mode()
def run(models: TrellisModels, image: Image.Image, settings: TrellisSettings = TrellisSettings(),
        device: torch.device | str = "cpu", on_step: OnStep | None = None, offload: bool = False) -> TrellisRun:
    """Image (an RGBA cutout) -> Gaussians in TRELLIS's frame (Z up, inside [-0.5, 0.5]^3).

    `offload`: the networks live in CPU memory and each is moved to `device` only while it runs (low memory).

    Raises:
        InputError: the image is no cutout (no alpha below 255), or no object is left after cropping.
        NoObjectFound: the sparse structure occupies no voxel.
    """
    device = torch.device(device)
    pixels = to_model_input(preprocess_rgba(image)).to(device)
    with on_device(models.conditioner, device, offload):
        cond = models.conditioner.features(pixels)
    noise = NoiseStream(settings.seed)                                # quirk 8: SS noise first, then SLat, CPU RNG
    res = models.ss_flow.resolution
    ss_noise = noise.randn(1, models.ss_flow.in_channels, res, res, res, device=device)
    with on_device(models.ss_flow, device, offload):
        ss_latent = sample(models.ss_flow, ss_noise, cond, neg_cond(cond), settings.ss_sampler, batch_guidance=True,
                           callback=_progress(on_step, "sparse structure", settings.ss_sampler.steps)).samples
    with on_device(models.ss_decoder, device, offload):
        coords = occupancy_coords(models.ss_decoder(ss_latent))
    if coords.shape[0] == 0:
        raise NoObjectFound("TRELLIS's sparse structure occupies no voxel",
                            "try another seed (`pipeline.multiview.seed`) or a tighter cutout")
    gaussians, slat = gaussians_at(models, cond, coords, settings, noise, on_step, offload)
    return TrellisRun(gaussians, coords, cond, ss_latent, slat)


@torch.inference_mode()
def gaussians_at(models: TrellisModels, cond: torch.Tensor, coords: torch.Tensor, settings: TrellisSettings,
                 noise: NoiseStream, on_step: OnStep | None = None, offload: bool = False
                 ) -> tuple[TrellisGaussians, SparseTensor]:
    """Steps 5-7 for given occupied voxels: the structured latent sampled over `coords` ([N, 4] int32 (b, x, y, z)
    on the 64^3 grid), de-normalised and decoded to 32 Gaussians per voxel (also usable with hand-placed voxels)."""
    device = cond.device
    slat_noise = noise.randn(coords.shape[0], models.slat_flow.in_channels, device=device)
    with on_device(models.slat_flow, device, offload):
        feats = sample(feature_model(models.slat_flow, coords), slat_noise, cond, neg_cond(cond),
                       settings.slat_sampler, batch_size=1,
                       callback=_progress(on_step, "structured latent", settings.slat_sampler.steps)).samples
    slat = SparseTensor(coords, denormalize(feats, torch.tensor(settings.slat_mean, device=device),
                                            torch.tensor(settings.slat_std, device=device)))
    with on_device(models.gs_decoder, device, offload):
        (gaussians,) = models.gs_decoder.decode(slat)
    return gaussians, slat


def _progress(on_step: OnStep | None, phase: str, steps: int) -> Callable[[StepRecord], None] | None:
    return None if on_step is None else (lambda record: on_step(phase, record.step + 1, steps))
