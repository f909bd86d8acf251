"""Fitting Gaussians to posed views: L1 + D-SSIM against the views, optional mask and depth terms,
densification with gsplat's strategies, budgets by iterations and by wall time.

Example:
    >>> g, metrics = fit(images, viewmats, Ks, masks=masks, preset="draft")   # doctest: +SKIP
    >>> metrics["train_psnr"]                                                 # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from pytorch_msssim import ssim

from ..gaussians import Gaussians
from ..splatting import render
from .init import from_depths, from_visual_hull


@dataclass(frozen=True)
class FitPreset:
    """Hyperparameters of one fit; the presets below are the supported starting points.

    Attributes:
        iterations: optimisation steps.
        views_per_step: views rendered together in one step (their losses averaged). On a GPU a small
            step costs mostly launch overhead, so 4 views cost little more than one.
        sh_degree: final SH degree; raised evenly over the run.
        densify: "default" (gsplat's DefaultStrategy: clone, split, prune), "mcmc" or "none".
        ssim_lambda: weight of D-SSIM against L1.
        mask_lambda: weight of |alpha - mask| when masks are given.
        depth_lambda: weight of the scale- and shift-invariant depth term when depths are given.
        init_points: Gaussians to start from (back-projected depth or visual hull).
        lr_means: learning rate of the means per unit of scene scale (decays 100x over the run).
        max_gaussians: the cap of `densify: mcmc` (it relocates and adds Gaussians up to this count).
        opacity_reg, scale_reg: with `densify: mcmc`, the L1 penalties on opacity and on scale that
            its relocation relies on (gsplat's MCMC example uses 0.01 each).
    """

    iterations: int = 2000
    views_per_step: int = 1
    sh_degree: int = 3
    densify: str = "default"
    ssim_lambda: float = 0.2
    mask_lambda: float = 0.1
    depth_lambda: float = 0.05
    init_points: int = 20_000
    lr_means: float = 1.6e-4 * 4
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20  # noqa: N815 - gsplat's parameter name
    max_gaussians: int = 200_000
    opacity_reg: float = 0.01
    scale_reg: float = 0.01


PRESETS: dict[str, FitPreset] = {
    "draft": FitPreset(iterations=300, sh_degree=1, init_points=10_000),
    "standard": FitPreset(iterations=2000, sh_degree=3),
    "high": FitPreset(iterations=7000, sh_degree=3, init_points=50_000),
}


@dataclass(frozen=True)
class FitBudget:
    """Stop at whichever comes first: `iterations` steps or `seconds` of wall time (None: no limit)."""

    iterations: int | None = None
    seconds: float | None = None


def fit(images: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor, *,  # noqa: N803
        masks: torch.Tensor | None = None, depths: torch.Tensor | None = None, init: Gaussians | None = None,
        preset: str | FitPreset = "standard", budget: FitBudget | None = None,
        heldout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0), backend: str = "auto",
        device: str | torch.device = "cpu", seed: int = 0,
        should_stop: Callable[[], bool] | None = None,
        on_step: Callable[[int, dict[str, float]], None] | None = None,
        train_metrics: bool = True) -> tuple[Gaussians, dict[str, Any]]:
    """Optimise Gaussians so their renders match `images` from `viewmats`/`Ks`.

    Args:
        images: [V,H,W,3] float32 0..1, objects on `background`.
        viewmats: [V,4,4] world-to-camera (OpenCV axes); Ks: [V,3,3] pixels.
        masks: [V,H,W] float32 0..1, the object's silhouettes (alpha term, visual-hull init).
        depths: [V,H,W] float32 camera z or monocular depth (compared up to scale and shift).
        init: Gaussians to start from; default: back-projected depths, else the visual hull.
        preset: "draft" | "standard" | "high" or a FitPreset.
        budget: caps on iterations and wall time; the preset's iterations by default.
        heldout: (images [U,H,W,3], viewmats [U,4,4], Ks [U,3,3]) measured but never trained on.
        should_stop: checked every step; True ends the fit early with what it has.
        on_step: called every 50 steps with (step, {"loss", "num_gaussians", "seconds"}).
        train_metrics: measure PSNR/SSIM on the training views at the end (one render per view).

    Returns:
        The fitted Gaussians (on `device`, detached) and metrics: train/heldout PSNR and SSIM,
        iterations, seconds, num_gaussians, densify strategy used.

    Raises:
        ValueError: inconsistent shapes, or an unknown preset or strategy.
    """
    cfg = _preset(preset)
    budget = budget or FitBudget()
    iterations = min(cfg.iterations, budget.iterations or cfg.iterations)
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    v, h, w, _ = images.shape
    if init is None:
        init = (from_depths(images, masks, depths, viewmats, Ks, cfg.init_points, generator=gen)
                if depths is not None and masks is not None else
                from_visual_hull(images, masks if masks is not None else _masks_from_background(images, background),
                                 viewmats, Ks, cfg.init_points, generator=gen))
    images, viewmats, Ks = images.to(device), viewmats.to(device).float(), Ks.to(device).float()
    masks = masks.to(device) if masks is not None else None
    depths = depths.to(device) if depths is not None else None
    scene_scale = float(torch.linalg.inv(viewmats)[:, :3, 3].norm(dim=-1).max()) * 1.1
    params, optimizers = _parameters(init.to(device).clone(), cfg, scene_scale, iterations, cfg.sh_degree)
    means_decay = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=0.01 ** (1 / max(iterations, 1)))
    strategy, state = _strategy(cfg, iterations, scene_scale, device)
    start, step = time.monotonic(), 0
    batch = min(max(cfg.views_per_step, 1), v)
    order = torch.randperm(v, generator=gen)
    for step in range(iterations):
        if (should_stop is not None and should_stop()) or (
                budget.seconds is not None and time.monotonic() - start > budget.seconds):
            break
        i = order[(step * batch + torch.arange(batch)) % v].to(device)
        degree = min(cfg.sh_degree, step * (cfg.sh_degree + 1) // max(iterations, 1))
        out = render(_gaussians(params), viewmats[i], Ks[i], w, h, background=background,
                     sh_degree=degree, backend=backend)
        info = {"gaussian_ids": None, **out.meta, "width": w, "height": h, "n_cameras": batch}  # the strategies read
        loss = _loss(out, images[i], None if masks is None else masks[i], None if depths is None else depths[i], cfg)
        if cfg.densify == "mcmc":
            loss = loss + (cfg.opacity_reg * torch.sigmoid(params["opacities"]).mean()
                           + cfg.scale_reg * torch.exp(params["scales"]).mean())
        if strategy is not None:
            strategy.step_pre_backward(params, optimizers, state, step, info)
        loss.backward()
        for opt in optimizers.values():
            opt.step()
            opt.zero_grad(set_to_none=True)
        means_decay.step()
        if cfg.densify == "mcmc":                 # relocation noise scales with the means' current rate
            strategy.step_post_backward(params, optimizers, state, step, info,
                                        lr=optimizers["means"].param_groups[0]["lr"])
        elif strategy is not None:
            strategy.step_post_backward(params, optimizers, state, step, info,
                                        packed=info["gaussian_ids"] is not None)  # gsplat's meta is packed
        if on_step is not None and step % 50 == 0:
            on_step(step, {"loss": float(loss.detach()), "num_gaussians": params["means"].shape[0],
                           "seconds": time.monotonic() - start})
    fitted = Gaussians(**{k: t.detach().clone() for k, t in vars(_gaussians(params)).items()})
    metrics: dict[str, Any] = {"iterations": step + 1 if iterations else 0,
                               "seconds": round(time.monotonic() - start, 3), "num_gaussians": fitted.num,
                               "densify": cfg.densify if strategy is not None else "none",
                               "preset": preset if isinstance(preset, str) else "custom"}
    if train_metrics:
        metrics.update(_quality("train", fitted, images, viewmats, Ks, background, backend))
    if heldout is not None:
        him, hv, hk = (t.to(device).float() for t in heldout)
        metrics.update(_quality("heldout", fitted, him, hv, hk, background, backend))
    return fitted, metrics


def _preset(preset: str | FitPreset) -> FitPreset:
    if isinstance(preset, FitPreset):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"`preset` must be one of {', '.join(PRESETS)}, got {preset!r}")
    return PRESETS[preset]


def _masks_from_background(images: torch.Tensor, background: tuple[float, float, float]) -> torch.Tensor:
    bg = torch.tensor(background, dtype=images.dtype)
    return ((images - bg).abs().amax(dim=-1) > 0.02).float()


def _parameters(g: Gaussians, cfg: FitPreset, scene_scale: float, iterations: int,
                sh_degree: int) -> tuple[torch.nn.ParameterDict, dict[str, torch.optim.Optimizer]]:
    """gsplat's parameter names (so its strategies work): means, scales, quats, opacities, sh0, shN."""
    k = (sh_degree + 1) ** 2 - 1
    sh_rest = torch.zeros(g.num, k, 3, device=g.device)
    sh_rest[:, : min(k, g.sh_rest.shape[1])] = g.sh_rest[:, :k]
    params = torch.nn.ParameterDict({
        "means": g.means, "scales": g.log_scales, "quats": g.quats, "opacities": g.opacity_logits,
        "sh0": g.sh_dc[:, None, :], "shN": sh_rest})
    lrs = {"means": cfg.lr_means * scene_scale, "scales": cfg.lr_scales, "quats": cfg.lr_quats,
           "opacities": cfg.lr_opacities, "sh0": cfg.lr_sh0, "shN": cfg.lr_shN}
    fused = g.device.type == "cuda"                   # one kernel per step instead of a dozen: steps are small
    optimizers = {name: torch.optim.Adam([params[name]], lr=lr, eps=1e-15, fused=fused) for name, lr in lrs.items()}
    return params, optimizers


def _gaussians(params: torch.nn.ParameterDict) -> Gaussians:
    return Gaussians(means=params["means"], quats=params["quats"], log_scales=params["scales"],
                     opacity_logits=params["opacities"], sh_dc=params["sh0"][:, 0], sh_rest=params["shN"])


def _strategy(cfg: FitPreset, iterations: int, scene_scale: float,
              device: torch.device) -> tuple[Any, dict[str, Any] | None]:
    """gsplat's densification, its schedule scaled to the length of this run."""
    name = cfg.densify
    if name == "none":
        return None, None
    if name == "mcmc" and device.type != "cuda":
        raise ValueError("`densify: mcmc` needs CUDA (gsplat's relocation kernel); use default or none on the CPU")
    from gsplat.strategy import DefaultStrategy, MCMCStrategy

    if name == "default":
        strategy = DefaultStrategy(refine_start_iter=max(iterations // 6, 1), refine_stop_iter=iterations * 7 // 10,
                                   refine_every=max(iterations // 20, 25), reset_every=max(iterations // 3, 100),
                                   verbose=False)
        return strategy, strategy.initialize_state(scene_scale=scene_scale)
    if name == "mcmc":
        strategy = MCMCStrategy(cap_max=cfg.max_gaussians, refine_start_iter=max(iterations // 6, 1),
                                refine_stop_iter=iterations * 8 // 10, refine_every=max(iterations // 20, 25),
                                verbose=False)
        return strategy, strategy.initialize_state()
    raise ValueError(f"`densify` must be default, mcmc or none, got {name!r}")


def _loss(out: Any, gt: torch.Tensor, mask: torch.Tensor | None, depth: torch.Tensor | None,
          cfg: FitPreset) -> torch.Tensor:
    """The loss of a batch of views: gt [B,H,W,3], mask and depth [B,H,W]."""
    rgb = out.rgb                                                       # [B,H,W,3]
    l1 = (rgb - gt).abs().mean()
    d_ssim = 1 - ssim(rgb.permute(0, 3, 1, 2), gt.permute(0, 3, 1, 2), data_range=1.0, size_average=True)
    loss = (1 - cfg.ssim_lambda) * l1 + cfg.ssim_lambda * d_ssim
    if mask is not None:
        loss = loss + cfg.mask_lambda * (out.alpha[..., 0] - mask).abs().mean()
    if depth is not None and mask is not None:
        loss = loss + cfg.depth_lambda * torch.stack([_depth_term(r, d, m > 0.5) for r, d, m in
                                                      zip(out.depth[..., 0], depth, mask)]).mean()
    return loss


def _depth_term(rendered: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """L1 after the best scale and shift of `target` onto `rendered` (monocular depth has neither)."""
    valid = valid & torch.isfinite(target) & (rendered > 0)
    if int(valid.sum()) < 16:
        return rendered.sum() * 0.0
    x, y = target[valid], rendered[valid]
    with torch.no_grad():
        a = torch.stack([x, torch.ones_like(x)], dim=-1)
        s, t = torch.linalg.lstsq(a, y[:, None]).solution[:, 0]
    return (s * x + t - y).abs().mean() / y.detach().mean().clamp_min(1e-6)


@torch.no_grad()
def _quality(prefix: str, g: Gaussians, images: torch.Tensor, viewmats: torch.Tensor, Ks: torch.Tensor,  # noqa: N803
             background: tuple[float, float, float], backend: str) -> dict[str, float]:
    psnrs, ssims = [], []
    for i in range(images.shape[0]):
        rgb = render(g, viewmats[i:i + 1], Ks[i:i + 1], images.shape[2], images.shape[1], background=background,
                     backend=backend).rgb[0].clamp(0, 1)
        mse = float(((rgb - images[i]) ** 2).mean())
        psnrs.append(10 * math.log10(1 / max(mse, 1e-10)))
        ssims.append(float(ssim(rgb.permute(2, 0, 1)[None], images[i].permute(2, 0, 1)[None], data_range=1.0)))
    return {f"{prefix}_psnr": round(sum(psnrs) / len(psnrs), 3), f"{prefix}_ssim": round(sum(ssims) / len(ssims), 4)}


__all__ = ["PRESETS", "FitBudget", "FitPreset", "fit"]
