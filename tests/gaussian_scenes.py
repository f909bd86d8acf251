"""Scenes made of Gaussians that the tests build (shared by the CPU and the GPU tests of refine)."""

from __future__ import annotations

import numpy as np
import torch

from ai_modules.gaussians import SH_C0, Gaussians


def textured_ball(n: int = 800, seed: int = 0) -> Gaussians:
    """Gaussians on a sphere of radius 0.3 with random colours: a texture of a few pixels seen from the ring."""
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    return Gaussians(means=dirs * 0.3, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     log_scales=torch.full((n, 3), np.log(0.03)), opacity_logits=torch.full((n,), 3.0),
                     sh_dc=(torch.rand(n, 3, generator=gen) - 0.5) / SH_C0, sh_rest=torch.zeros(n, 0, 3))
