"""MVCRM's back-projection: push trusted (enhanced - rendered) differences into the Gaussians that drew them.

Written as gradients through the differentiable renderer (gsplat on CUDA, ours on the CPU), because the
gradient of a masked, weighted squared residual with respect to a Gaussian's colour *is* the
contribution-weighted scatter of that residual (each pixel's share T_j * alpha_j), with no per-pixel
list of contributors to build. A second backward pass gives each Gaussian's total trusted contribution;
the ratio of the two is the contribution-weighted mean residual, which is the update — the algebraic
reconstruction technique (SART/SIRT) of tomography, which converges for a relaxation below 2. Each
pixel's residual is divided by its alpha (SART's row sum), so one step corrects a lone Gaussian exactly.

Only the colour (SH degree 0) moves by back-projection. Opacity and the log scales take small Adam steps
on the same loss, the scales within a trust region around the fit's (`scale_trust`); positions,
rotations and higher SH bands stay as the fit left them (placing Gaussians is the fit's job, and
view-dependent bands would let inconsistent views be matched one by one).

The number of rounds is chosen by cross-validation: a few ring views are left out of the updates and
scored after each round (round 0 included); the rounds that score best are then run again on every view.
If no round beats the start by `min_gain`, the Gaussians come back unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..gaussians import SH_C0, Gaussians
from ..splatting import render


@dataclass
class Targets:
    """Images the Gaussians should produce from some cameras, with how much each pixel is trusted.

    Attributes:
        images: [V,H,W,3] 0..1 on the background. weights: [V,H,W] >= 0 (0 = untrusted).
        viewmats: [V,4,4] world-to-camera. Ks: [V,3,3] pixels.
    """

    images: torch.Tensor
    weights: torch.Tensor
    viewmats: torch.Tensor
    Ks: torch.Tensor  # noqa: N815 - gsplat's name

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, index: list[int]) -> Targets:
        """The targets of views `index`."""
        return Targets(self.images[index], self.weights[index], self.viewmats[index], self.Ks[index])


@dataclass(frozen=True)
class BackProjection:
    """How far each round moves.

    Attributes:
        relaxation: SART's lambda: the share of the mean residual applied per round (0 < lambda < 2).
        max_update: cap on one round's colour change per channel.
        prior: pull towards the current colour, in units of the median Gaussian's trusted contribution: a
            Gaussian that drew little of the trusted pixels (seen at a grazing angle, or behind others) moves
            little, instead of taking on the full residual of pixels others dominate.
        opacity_lr: Adam's step on the opacity logits (0 = opacity is not refined).
        scale_lr: Adam's step on the log scales (0 = scales are not refined), within `scale_trust`.
        scale_trust: how far a log scale may move from the fit's (0.2: scales within x0.82..x1.22).
        refresh: rounds between two computations of the contributions (a second backward pass each).
        chunk: views rendered per call (memory on the CPU renderer).
    """

    relaxation: float = 0.8
    max_update: float = 0.25
    prior: float = 1.0
    opacity_lr: float = 0.03
    scale_lr: float = 0.005
    scale_trust: float = 0.2
    refresh: int = 8
    chunk: int = 16


@dataclass
class Result:
    """What `refine` did: the rounds run, the validation score of each round, per-round seconds."""

    rounds: int
    validation_psnr: list[float] = field(default_factory=list)
    seconds: float = 0.0
    changed: int = 0
    mean_colour_change: float = 0.0


def weighted_error(g: Gaussians, targets: list[Targets], background: tuple[float, float, float],
                   chunk: int) -> float:
    """The trust-weighted mean squared error of the renders against `targets` (no gradients)."""
    total, weight = 0.0, 0.0
    with torch.no_grad():
        for t in targets:
            for s in range(0, len(t), chunk):
                part = t.select(list(range(s, min(s + chunk, len(t)))))
                out = render(g, part.viewmats, part.Ks, part.images.shape[2], part.images.shape[1],
                             background=background)
                err = ((out.rgb - part.images) ** 2).mean(-1)
                total += float((err * part.weights).sum())
                weight += float(part.weights.sum())
    return total / max(weight, 1e-12)


def back_project(g: Gaussians, targets: list[Targets], config: BackProjection,
                 background: tuple[float, float, float], stepped: _Stepped | None,
                 contribution: torch.Tensor | None = None) -> torch.Tensor:
    """One SIRT round over all `targets` (in place on `g.sh_dc`; and on the tensors `stepped` optimises).

    Returns each Gaussian's trusted contribution (the denominator); pass it back in to skip its second backward
    pass on the next rounds (it changes only as fast as opacity and scales do).
    """
    dc = g.sh_dc.requires_grad_(True)
    grad_dc = torch.zeros_like(dc)
    fresh = contribution is None
    if fresh:
        contribution = torch.zeros(dc.shape[0], device=dc.device, dtype=dc.dtype)
    others = stepped.tensors if stepped is not None else []
    grad_others = [torch.zeros_like(t) for t in others]
    total = sum(float(t.weights.sum()) for t in targets)
    if total <= 0:
        return contribution
    for t in targets:
        for s in range(0, len(t), config.chunk):
            part = t.select(list(range(s, min(s + config.chunk, len(t)))))
            out = render(g, part.viewmats, part.Ks, part.images.shape[2], part.images.shape[1],
                         background=background)
            alpha = out.alpha[..., 0].detach().clamp_min(0.25)
            w = part.weights
            loss = 0.5 * (w / alpha * ((out.rgb - part.images) ** 2).sum(-1)).sum() / total
            drawn = (w * out.rgb[..., 0]).sum() / total      # d/d dc_j[0] = SH_C0 * sum_p w_p T alpha_j
            grads = torch.autograd.grad(loss, [dc, *others], retain_graph=fresh, allow_unused=True)
            if grads[0] is not None:
                grad_dc += grads[0]
            if fresh:
                (c,) = torch.autograd.grad(drawn, [dc], allow_unused=True)
                if c is not None:
                    contribution += c[:, 0]
            for acc, grad in zip(grad_others, grads[1:]):
                if grad is not None:
                    acc += grad
    with torch.no_grad():
        seen = contribution > contribution.max() * 1e-4
        damping = config.prior * float(contribution[seen].median()) if bool(seen.any()) else 0.0
        mean_residual = grad_dc / (contribution + damping).clamp_min(1e-12)[:, None]   # colour units (SH_C0 cancels)
        step = (-config.relaxation * mean_residual).clamp(-config.max_update, config.max_update) / SH_C0
        dc += torch.where(seen[:, None], step, torch.zeros_like(step))
    if stepped is not None:
        stepped.step(grad_others)
    return contribution


class _Stepped:
    """Adam on the opacity logits and the log scales (those with a rate above 0); scales kept within their trust
    region around the fit's."""

    def __init__(self, g: Gaussians, config: BackProjection) -> None:
        groups = [(t, lr) for t, lr in ((g.opacity_logits, config.opacity_lr), (g.log_scales, config.scale_lr))
                  if lr > 0]
        self.tensors = [t for t, _ in groups]
        self.optimizer = torch.optim.Adam([{"params": [t], "lr": lr} for t, lr in groups], eps=1e-15)
        self.scales = g.log_scales if config.scale_lr > 0 else None
        self.start = g.log_scales.detach().clone() if self.scales is not None else None
        self.trust = config.scale_trust

    def step(self, grads: list[torch.Tensor]) -> None:
        for t, grad in zip(self.tensors, grads):
            t.grad = grad
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scales is not None:
            with torch.no_grad():
                self.scales.copy_(torch.minimum(torch.maximum(self.scales, self.start - self.trust),
                                                self.start + self.trust))


def refine(g: Gaussians, train: list[Targets], validation: list[Targets] | None, *, rounds: int,
           config: BackProjection = BackProjection(), min_gain: float = 0.01,
           background: tuple[float, float, float] = (1.0, 1.0, 1.0),
           should_stop: Callable[[], bool] | None = None,
           on_round: Callable[[int, int], None] | None = None) -> tuple[Gaussians, Result]:
    """Back-project `train` (and then `validation` too) into a copy of `g` for the rounds that help.

    Args:
        g: the fitted Gaussians (on the device to work on).
        train: targets the rounds learn from (ring views and the photo).
        validation: targets scored after each round to choose the number of rounds; None: run all `rounds`;
            empty: none (nothing could show a gain, so the Gaussians come back unchanged).
        rounds: the most rounds.
        min_gain: relative drop of the validation error that counts as a gain (below it: 0 rounds).
        should_stop: checked between rounds; True ends early with the best so far.
        on_round: (round, rounds) after each round, for progress.

    Returns:
        The refined Gaussians (a copy; `g` itself if 0 rounds were chosen) and what was done.
    """
    import time

    start = time.monotonic()
    result = Result(rounds=rounds)
    chosen = rounds
    if validation is None:
        validation = []
    elif not validation:
        result.rounds = 0
        result.seconds = round(time.monotonic() - start, 3)
        return g, result
    if validation:
        work = _trainable(g, config)
        opt = _stepped(work, config)
        scores = [weighted_error(work, validation, background, config.chunk)]
        contribution = None
        for k in range(rounds):
            if should_stop is not None and should_stop():
                break
            contribution = back_project(work, train, config, background, opt,
                                        None if k % config.refresh == 0 else contribution)
            scores.append(weighted_error(work, validation, background, config.chunk))
            if on_round is not None:
                on_round(k + 1, 2 * rounds)
            if len(scores) > 3 and scores[-1] > min(scores) and scores[-2] > min(scores):
                break                                          # two rounds past the best: it will not come back
        best = min(range(len(scores)), key=scores.__getitem__)
        chosen = best if scores[best] < scores[0] * (1 - min_gain) else 0
        result.validation_psnr = [round(_psnr(s), 3) for s in scores]
    result.rounds = chosen
    if chosen == 0:
        result.seconds = round(time.monotonic() - start, 3)
        return g, result
    out = _trainable(g, config)
    opt = _stepped(out, config)
    contribution = None
    for k in range(chosen):
        if should_stop is not None and should_stop():
            break
        contribution = back_project(out, train + validation, config, background, opt,
                                    None if k % config.refresh == 0 else contribution)
        if on_round is not None:
            on_round(rounds + k + 1, rounds + chosen)
    refined = Gaussians(**{k: t.detach() for k, t in vars(out).items()})
    change = ((refined.sh_dc - g.sh_dc).abs().amax(-1) * SH_C0)
    result.changed = int((change > 1e-3).sum())
    result.mean_colour_change = round(float(change.mean()), 5)
    result.seconds = round(time.monotonic() - start, 3)
    return refined, result


def _trainable(g: Gaussians, config: BackProjection) -> Gaussians:
    """A copy whose colour (and opacity logits, log scales when refined) take gradients."""
    c = g.clone()
    c.sh_dc.requires_grad_(True)
    c.opacity_logits.requires_grad_(config.opacity_lr > 0)
    c.log_scales.requires_grad_(config.scale_lr > 0)
    return c


def _stepped(g: Gaussians, config: BackProjection) -> _Stepped | None:
    return _Stepped(g, config) if config.opacity_lr > 0 or config.scale_lr > 0 else None


def _psnr(mse: float) -> float:
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


__all__ = ["BackProjection", "Result", "Targets", "back_project", "refine", "weighted_error"]
