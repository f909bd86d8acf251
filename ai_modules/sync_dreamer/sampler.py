"""Noise schedule and the DDIM sampler of SyncDreamer (`SyncDDIMSampler`), computed in code.

The original's float-precision choices are kept because the tables are part of the output:
alphas_cumprod in float32, sigmas evaluated in float64 from the float32 alphas and cast back,
`a_prev` of the last step = alphas_cumprod[0] (not 1), and no noise at the last step
(SYNCDREAMER_SPEC.md section 6).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .config import BETA_END, BETA_START, NUM_TRAIN_TIMESTEPS

NoiseFn = Callable[[tuple[int, ...]], torch.Tensor]


def training_schedule() -> dict[str, torch.Tensor]:
    """The model's persistent schedule buffers (`_init_schedule`), each [1000] float32, in registration order.

    Computed on the CPU and then put on the ambient default device (the meta device while the model is built
    there): once torch's Python meta kernels are loaded (timm and transformers import them), `cat` on the
    meta device rejects the scalar CPU tensors that arithmetic on these values makes.
    """
    device = torch.empty(0).device
    with torch.device("cpu"):
        return {name: value.to(device) for name, value in _schedule().items()}


def _schedule() -> dict[str, torch.Tensor]:
    betas = torch.linspace(BETA_START ** 0.5, BETA_END ** 0.5, NUM_TRAIN_TIMESTEPS, dtype=torch.float32) ** 2
    alphas = 1.0 - betas
    alphas_cumprod = torch.cumprod(alphas, dim=0)
    alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]], 0)
    posterior_variance = betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod)
    posterior_log_variance_clipped = torch.clamp(torch.log(torch.clamp(posterior_variance, min=1e-20)), min=-10)
    return {
        "betas": betas.float(),
        "alphas": alphas.float(),
        "alphas_cumprod": alphas_cumprod.float(),
        "sqrt_alphas_cumprod": torch.sqrt(alphas_cumprod).float(),
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1 - alphas_cumprod).float(),
        "posterior_variance": posterior_variance.float(),
        "posterior_log_variance_clipped": posterior_log_variance_clipped.float(),
    }


def ddim_timesteps(steps: int, num_train_timesteps: int = NUM_TRAIN_TIMESTEPS) -> np.ndarray:
    """Uniform DDIM timesteps `range(0, T, T // steps) + 1` (50 -> 1, 21, ..., 981), as `make_ddim_timesteps`."""
    if not (isinstance(steps, (int, np.integer)) and 1 <= steps <= num_train_timesteps):
        raise ValueError(f"`steps` must be an integer in 1..{num_train_timesteps}, got {steps!r}")
    c = num_train_timesteps // steps
    timesteps = np.asarray(list(range(0, num_train_timesteps, c))) + 1
    if timesteps[-1] >= num_train_timesteps:    # the original would index alphas_cumprod[1000] and crash
        raise ValueError(f"`steps` must give DDIM timesteps below {num_train_timesteps} "
                         f"(e.g. 4, 10, 20, 25, 50, 100, 200); {steps} gives {timesteps[-1]}")
    return timesteps


@dataclass(frozen=True)
class DDIMSchedule:
    """DDIM tables, index i <-> `timesteps[i]` (ascending).

    Attributes:
        timesteps: [S] int64. alphas, alphas_prev, sigmas, sqrt_one_minus_alphas: [S] float32.
        eta: the eta the sigmas were made with.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    sigmas: torch.Tensor
    sqrt_one_minus_alphas: torch.Tensor
    eta: float

    @property
    def num_steps(self) -> int:
        """Number of DDIM steps S."""
        return int(self.timesteps.shape[0])


def make_ddim_schedule(alphas_cumprod: torch.Tensor, steps: int, eta: float = 1.0) -> DDIMSchedule:
    """The DDIM tables of `SyncDDIMSampler._make_schedule` from the model's `alphas_cumprod` buffer [1000].

    Args:
        alphas_cumprod: [1000] float32 (the checkpoint's buffer is what the original uses).
        steps: number of DDIM steps (generate.py: 50).
        eta: DDIM eta (generate.py: 1.0, stochastic).
    """
    ac = alphas_cumprod.detach().to("cpu", torch.float32)
    ts = torch.from_numpy(ddim_timesteps(steps, ac.shape[0]).astype(np.int64))
    alphas = ac[ts].double()
    alphas_prev = torch.cat([ac[0:1], ac[ts[:-1]]], 0)
    sigmas = eta * torch.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    return DDIMSchedule(timesteps=ts, alphas=alphas.float(), alphas_prev=alphas_prev.float(), sigmas=sigmas.float(),
                        sqrt_one_minus_alphas=torch.sqrt(1.0 - alphas).float(), eta=float(eta))


def ddim_step(x: torch.Tensor, eps: torch.Tensor, schedule: DDIMSchedule, index: int,
              noise: torch.Tensor | None) -> torch.Tensor:
    """One DDIM update at DDIM index `index` (`denoise_apply_impl`).

    Args:
        x: [B,N,4,h,w] current latents; eps: same shape, predicted noise;
        noise: standard-normal tensor like `x`, or None (required unless index == 0, where none is added).

    Returns:
        x_prev: `sqrt(a_prev) x0 + sqrt(max(1 - a_prev - sigma^2, 1e-7)) eps (+ sigma noise)`, no x0 clipping.
    """
    dev = x.device

    def at(table: torch.Tensor) -> torch.Tensor:
        return table[index].to(dev).float().view(1, 1, 1, 1, 1)

    a_t, a_prev, sqrt_one_minus_at, sigma_t = (at(schedule.alphas), at(schedule.alphas_prev),
                                               at(schedule.sqrt_one_minus_alphas), at(schedule.sigmas))
    pred_x0 = (x - sqrt_one_minus_at * eps) / a_t.sqrt()
    dir_xt = torch.clamp(1.0 - a_prev - sigma_t ** 2, min=1e-7).sqrt() * eps
    x_prev = a_prev.sqrt() * pred_x0 + dir_xt
    if index != 0:
        if noise is None:
            raise ValueError(f"`noise` is needed at DDIM index {index} (only index 0 adds none)")
        x_prev = x_prev + sigma_t * noise.to(dev)
    return x_prev
