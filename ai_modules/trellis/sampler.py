"""Euler flow-matching sampler with classifier-free guidance on a t interval (SPEC 4, quirks 5-8).

The original is FlowEulerGuidanceIntervalSampler. Both flows use it: the SS flow on dense [B, 8, 16, 16, 16]
latents and the SLat flow on sparse features (pass a closure over the coords as ``model`` and ``batch_size=1``).

    t_i = linspace(1, 0, steps+1) warped by r·t/(1+(r−1)·t)                (quirk 7)
    v   = (1+w)·model(x, 1000t, cond) − w·model(x, 1000t, neg_cond)   if lo <= t <= hi, else v_cond   (quirks 5, 6)
    x  ← x − (t − t_next)·v;   diagnostic x0 = (1−σ)x − (σ+(1−σ)t)·v

The arithmetic mirrors the original's expression order (Python-float scalars times float32 tensors) so the results
agree to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

FlowModel = Callable[[Tensor, Tensor, Any], Tensor]


@dataclass(frozen=True)
class SamplerSettings:
    """Sampler parameters (pipeline.json ``params`` plus ``sigma_min``)."""

    steps: int = 25
    cfg_strength: float = 7.5
    cfg_interval: tuple[float, float] = (0.5, 1.0)
    rescale_t: float = 3.0
    sigma_min: float = 1e-5

    @classmethod
    def from_params(cls, params: Mapping[str, Any], sigma_min: float = 1e-5) -> SamplerSettings:
        """From a ``{steps, cfg_strength, cfg_interval, rescale_t}`` mapping (pipeline.json / meta.json)."""
        known = {k: params[k] for k in ("steps", "cfg_strength", "rescale_t") if k in params}
        if "cfg_interval" in params:
            lo, hi = params["cfg_interval"]
            known["cfg_interval"] = (float(lo), float(hi))
        return cls(**known, sigma_min=params.get("sigma_min", sigma_min))


# Unverified defaults (SPEC 0: third-party copies of the hub pipeline.json); run() arguments override them.
SS_SAMPLER_DEFAULTS = SamplerSettings(steps=25, cfg_strength=7.5)
SLAT_SAMPLER_DEFAULTS = SamplerSettings(steps=25, cfg_strength=3.0)


def timesteps(steps: int, rescale_t: float) -> list[float]:
    """The steps+1 times from 1 to 0, warped by rescale_t (quirk 7); float64 like the original's numpy."""
    t = np.linspace(1, 0, steps + 1)
    t = rescale_t * t / (1 + (rescale_t - 1) * t)
    return [float(v) for v in t]


def cfg_applies(t: float, interval: tuple[float, float]) -> bool:
    """Whether guidance runs at t: the unscaled t, inclusive at both ends (quirk 5)."""
    return interval[0] <= t <= interval[1]


def predict_x0(x_t: Tensor, t: float, v: Tensor, sigma_min: float) -> Tensor:
    """Diagnostic x0 from a velocity; sigma_min enters only here, not in the update (SPEC 4)."""
    return (1 - sigma_min) * x_t - (sigma_min + (1 - sigma_min) * t) * v


@dataclass
class StepRecord:
    """What one Euler step saw and produced (names follow the golden ``ss_step{k}_*`` fields)."""

    step: int
    t: float
    t_next: float
    t_model: Tensor
    x_t: Tensor
    v_cond: Tensor
    v_uncond: Tensor | None
    v_guided: Tensor
    x_next: Tensor
    pred_x0: Tensor

    @property
    def cfg_applied(self) -> bool:
        return self.v_uncond is not None


@dataclass
class SampleResult:
    """The final sample (at t=0) and, when recorded, every step."""

    samples: Tensor
    steps: list[StepRecord] = field(default_factory=list)


@torch.no_grad()
def sample(model: FlowModel, noise: Tensor, cond: Any, neg_cond: Any, settings: SamplerSettings,
           batch_size: int | None = None, record: bool = False,
           callback: Callable[[StepRecord], None] | None = None, batch_guidance: bool = False) -> SampleResult:
    """Run the Euler sampler from ``noise`` (at t=1) to t=0.

    ``model(x, t_model, cond)`` returns the velocity, t_model is float32 [batch_size] filled with 1000·t
    (batch_size defaults to ``noise.shape[0]``; pass 1 for sparse [N, C] features). A cond tensor with batch 1 is
    repeated to batch_size like the original. ``record`` keeps every `StepRecord`; ``callback`` gets each one.
    ``batch_guidance`` (dense models, whose batch is x's first axis): a guided step evaluates cond and neg_cond in
    one call on a doubled batch instead of two calls (the same velocities; half the calls, which on a GPU are bound
    by launching kernels rather than by arithmetic).
    """
    batch = noise.shape[0] if batch_size is None else batch_size
    cond, neg_cond = _repeat_cond(cond, batch), _repeat_cond(neg_cond, batch)
    w = settings.cfg_strength
    ts = timesteps(settings.steps, settings.rescale_t)
    x = noise
    result = SampleResult(samples=noise)
    for i in range(settings.steps):
        t, t_next = ts[i], ts[i + 1]
        t_model = torch.tensor([1000 * t] * batch, device=x.device, dtype=torch.float32)
        guided = cfg_applies(t, settings.cfg_interval)
        if guided and batch_guidance:
            v_cond, v_uncond = model(torch.cat([x, x]), torch.cat([t_model, t_model]),
                                     torch.cat([cond, neg_cond])).chunk(2)
        else:
            v_cond = model(x, t_model, cond)
            v_uncond = model(x, t_model, neg_cond) if guided else None
        v = v_cond if v_uncond is None else (1 + w) * v_cond - w * v_uncond
        x_next = x - (t - t_next) * v
        if record or callback is not None:
            rec = StepRecord(i, t, t_next, t_model, x, v_cond, v_uncond, v, x_next,
                             predict_x0(x, t, v, settings.sigma_min))
            if record:
                result.steps.append(rec)
            if callback is not None:
                callback(rec)
        x = x_next
    result.samples = x
    return result


def _repeat_cond(cond: Any, batch: int) -> Any:
    if isinstance(cond, Tensor) and cond.shape[0] == 1 and batch > 1:
        return cond.repeat(batch, *[1] * (cond.dim() - 1))
    return cond


class NoiseStream:
    """TRELLIS's noise: ``torch.randn`` on a CPU generator seeded like ``torch.manual_seed(seed)``, then moved to
    the device (quirk 8). Draw the SS noise first, then the SLat noise, from the same stream."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed)

    def randn(self, *shape: int, device: torch.device | str | None = None) -> Tensor:
        return torch.randn(shape, generator=self.generator, dtype=torch.float32).to(device)
