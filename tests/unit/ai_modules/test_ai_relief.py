"""The embedded multiview backend `relief`: a closed relief of Gaussians in the world frame."""

from __future__ import annotations

import numpy as np
import torch

from ai_modules.depth import inflate
from ai_modules.geometry import quat_to_matrix
from ai_modules.multiview.relief import lift_relief, relief_object, surface_frames
from ai_modules.splatting import render

S = 96


def quadrant_cutout(radius: float = 36.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A disc whose top half is blue and bottom half red; the left half slightly darker."""
    yy, xx = np.mgrid[:S, :S]
    mask = (xx + 0.5 - S / 2) ** 2 + (yy + 0.5 - S / 2) ** 2 < radius ** 2
    image = np.ones((S, S, 3), np.float32)
    image[mask & (yy < S / 2)] = (0.1, 0.2, 0.9)
    image[mask & (yy >= S / 2)] = (0.9, 0.1, 0.1)
    image[mask & (xx < S / 2)] *= 0.5
    alpha = mask.astype(np.float32)
    return image, alpha, inflate(mask, 0.5)


def colours(g) -> np.ndarray:
    return (0.5 + 0.28209479177387814 * g.sh_dc).numpy()


def test_counts_and_bounds():
    image, alpha, depth = quadrant_cutout()
    n = int((alpha >= 0.5).sum())
    g = lift_relief(image, alpha, depth)
    walls = g.num - 2 * n
    assert walls > 0 and g.sh_degree == 0
    assert lift_relief(image, alpha, depth, side_walls=False).num == 2 * n
    reach = g.means.abs() + 3 * g.log_scales.exp().max(dim=1, keepdim=True).values
    assert float(reach.max()) <= 0.5
    extent_yz = g.means[:, 1:].max(dim=0).values - g.means[:, 1:].min(dim=0).values
    assert torch.allclose(extent_yz, torch.tensor([0.8, 0.8]), atol=0.03)      # `extent` of the long side
    assert torch.isfinite(g.means).all() and torch.isfinite(g.quats).all()


def test_front_faces_plus_x_top_is_plus_z_right_is_plus_y():
    image, alpha, depth = quadrant_cutout()
    n = int((alpha >= 0.5).sum())
    g = lift_relief(image, alpha, depth, back_shade=0.5)
    index = torch.arange(g.num)
    front, back = g.select(index < n), g.select((index >= n) & (index < 2 * n))
    assert (front.means[:, 0] > 0).all() and (back.means[:, 0] < 0).all()
    assert torch.equal(front.means[:, 1:], back.means[:, 1:])                  # mirrored: closed front and back
    c = colours(front)
    top = front.means[:, 2].numpy() > 0.05
    assert (c[top, 2] > 0.4).all() and (c[~top & (front.means[:, 2].numpy() < -0.05), 0] > 0.4).all()
    right = front.means[:, 1].numpy() > 0.05
    assert c[right].mean() > c[front.means[:, 1].numpy() < -0.05].mean()      # the bright half is on +Y
    assert np.allclose(colours(back), 0.5 * c, atol=1e-5)                      # back_shade
    normals = quat_to_matrix(front.quats)[:, :, 0]                             # local x = surface normal
    assert (normals[:, 0] > 0).all()
    centre = front.means[:, 1:].norm(dim=1).argmin()
    assert torch.allclose(front.quats[centre], torch.tensor([1.0, 0, 0, 0]), atol=0.05)  # identity where flat


def test_side_walls_close_the_gap_between_front_and_back():
    image, alpha, depth = quadrant_cutout()
    g = lift_relief(image, alpha, depth)
    p = 0.8 / 72
    r = g.means[:, 1:].norm(dim=1)
    for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
        direction = torch.tensor([np.cos(angle), np.sin(angle)], dtype=torch.float32)
        near = (r > 0.4 - 2.5 * p) & ((g.means[:, 1:] @ direction) > 0.98 * r)
        xs = torch.sort(g.means[near, 0]).values
        assert xs[0] < 0 < xs[-1]
        assert float((xs[1:] - xs[:-1]).max()) <= 1.5 * p


def test_surface_frames_cover_the_slope_exactly():
    gen = torch.Generator().manual_seed(0)
    sy, sz = torch.randn(300, generator=gen, dtype=torch.float64), torch.randn(300, generator=gen, dtype=torch.float64)
    log_s, q = surface_frames(sy, sz, sigma=0.01, flatness=0.1)
    r = quat_to_matrix(q)
    cov = r @ torch.diag_embed(torch.exp(2 * log_s)) @ r.transpose(1, 2)
    one, zero = torch.ones_like(sy), torch.zeros_like(sy)
    jac = torch.stack([torch.stack([sy, one, zero], -1), torch.stack([sz, zero, one], -1)], -1)
    n = torch.stack([one, -sy, -sz], -1)
    n = n / n.norm(dim=1, keepdim=True)
    expected = 1e-4 * jac @ jac.transpose(1, 2) + 1e-6 * n[:, :, None] * n[:, None, :]
    steep = (sy ** 2 + sz ** 2) >= 0.05 ** 2
    assert torch.allclose(cov[steep], expected[steep], atol=1e-12)
    assert torch.allclose(cov, expected, atol=0.01 ** 2 * 0.05 ** 2)           # flat ones: stretch ignored


def bars_cutout() -> tuple[np.ndarray, np.ndarray]:
    """Thin upright bars 3, 5 and 8 px wide with soft (anti-aliased) edges, on white."""
    alpha = np.zeros((S, S), np.float32)
    for left, width in ((20, 3), (40, 5), (60, 8)):
        alpha[12:84, left:left + width] = 1.0
        alpha[12:84, left - 1], alpha[12:84, left + width] = 0.3, 0.6             # soft edges
    image = np.ones((S, S, 3), np.float32)
    colour = np.array([0.2, 0.4, 0.8], np.float32)
    image = alpha[..., None] * colour + (1 - alpha[..., None]) * image
    return image, alpha


def test_seen_from_the_photo_the_relief_keeps_the_cutouts_edges():
    # The rasterizer widens every splat by ~0.5 px; stacked front, back and wall Gaussians right at the
    # edge would widen the silhouette by a pixel, which costs thin parts most (3 px bars: -40 % IoU).
    image, alpha = bars_cutout()
    g, viewmat, k = relief_object(image, alpha, inflate(alpha >= 0.5, 0.5), elevation=30.0)
    out = render(g, torch.from_numpy(viewmat[None]).float(), torch.from_numpy(k[None]).float(), S, S)
    rendered, mask = out.alpha[0, ..., 0].numpy(), alpha >= 0.5
    covered = rendered >= 0.5
    assert (covered & mask).sum() / (covered | mask).sum() >= 0.9
    assert np.abs(rendered - alpha).mean() < 0.03                               # soft edges stay soft


def test_front_and_back_take_the_cutouts_alpha_as_opacity():
    image, alpha = bars_cutout()
    vs, us = np.nonzero(alpha >= 0.5)
    g = lift_relief(image, alpha, inflate(alpha >= 0.5, 0.5), opacity=0.9)
    n = len(vs)
    opacity = torch.sigmoid(g.opacity_logits).numpy()
    assert np.allclose(opacity[:n], 0.9 * alpha[vs, us], atol=1e-5)
    assert np.allclose(opacity[n:2 * n], opacity[:n]) and np.allclose(opacity[2 * n:], 0.9, atol=1e-5)
