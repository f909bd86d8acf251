"""Tile rasterizer of projected Gaussians in plain torch: front-to-back alpha compositing, autograd backward.

gsplat's kernels run only on CUDA; this is the CPU renderer, written to gsplat
1.5.3's rules so that the two agree: 16x16 tiles; each Gaussian is binned to the
tiles its bounding box touches and sorted by depth within a tile; at the pixel
centre p = (x+0.5, y+0.5), alpha = min(0.999, opacity exp(-1/2 d^T conic d));
contributions with alpha < 1/255 are skipped; a pixel stops *before* the
Gaussian that would bring its transmittance to 1e-4 or below.

Work is vectorised over all active tiles at once, K Gaussians (one chunk) at a
time: the exponent at the 256 pixels of a tile is one small matmul of pixel
features [1, u, v, u^2, uv, v^2] (tile-local, |u|,|v| <= 7.5, so float32 keeps its
precision) with per-(tile, Gaussian) coefficients; transmittance within a chunk
is a cumprod, carried between chunks; a tile leaves the loop when all its pixels
are done or its list is exhausted.
"""

from __future__ import annotations

import math

import torch

from .projection import ALPHA_THRESHOLD

TILE = 16
ALPHA_MAX = 0.999       # gsplat clamps alpha to this
T_MIN = 1e-4            # a pixel stops before transmittance would reach this
_FAR_OFF = 1.0e4        # log-opacity of the padding entry: exp(-1e4) == 0
_LOG_ALPHA_MAX = math.log(ALPHA_MAX)
_LOG_FLOOR = -12.0      # exp(-12) = 6e-6 < 1/255


def _bin_to_tiles(means2d: torch.Tensor, radii: torch.Tensor, depths: torch.Tensor, tiles_x: int,
                  tiles_y: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Intersections of visible Gaussians with tiles, sorted by (camera, tile, depth).

    Args:
        means2d: [C,N,2] pixel positions.
        radii: [C,N,2] int box half-extents; 0 = culled.
        depths: [C,N] camera z.
        tiles_x: tiles per row.
        tiles_y: tiles per column.

    Returns:
        tile_ids: [M] int64 global tile index c * tiles_y * tiles_x + ty * tiles_x + tx (ascending).
        flat_ids: [M] int64 index c * N + n of the Gaussian of each intersection.
    """
    with torch.no_grad():
        n = means2d.shape[1]
        cam, gid = (radii > 0).all(dim=-1).nonzero(as_tuple=True)             # [V], [V]
        order = torch.argsort(depths[cam, gid], stable=True)
        order = order[torch.argsort(cam[order], stable=True)]                  # by camera, then depth, then index
        cam, gid = cam[order], gid[order]
        m = means2d[cam, gid].detach().double() / TILE                         # [V,2] in tiles
        r = radii[cam, gid].double() / TILE
        x0 = torch.floor(m[:, 0] - r[:, 0]).clamp(0, tiles_x).long()
        x1 = torch.ceil(m[:, 0] + r[:, 0]).clamp(0, tiles_x).long()
        y0 = torch.floor(m[:, 1] - r[:, 1]).clamp(0, tiles_y).long()
        y1 = torch.ceil(m[:, 1] + r[:, 1]).clamp(0, tiles_y).long()
        nx = x1 - x0
        count = nx * (y1 - y0)                                                 # [V]
        owner = torch.repeat_interleave(torch.arange(len(count), device=count.device), count)  # [M]
        local = torch.arange(len(owner), device=count.device) - (torch.cumsum(count, 0) - count)[owner]
        tx = x0[owner] + local % nx[owner]
        ty = y0[owner] + torch.div(local, nx[owner], rounding_mode="floor")
        tile_ids = (cam[owner] * tiles_y + ty) * tiles_x + tx
        tile_ids, perm = torch.sort(tile_ids, stable=True)
        flat_ids = (cam * n + gid)[owner][perm]
    return tile_ids, flat_ids


def _pixel_features(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[256,6] features [1, u, v, u^2, uv, v^2] of the pixel centres relative to the tile centre (row-major)."""
    i = torch.arange(TILE, dtype=dtype, device=device) + 0.5 - TILE / 2
    v, u = torch.meshgrid(i, i, indexing="ij")
    u, v = u.reshape(-1), v.reshape(-1)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], dim=-1)


def rasterize(means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor, radii: torch.Tensor,
              depths: torch.Tensor, features: torch.Tensor, width: int, height: int, *,
              chunk: int = 32) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Composite projected Gaussians front to back (no background); differentiable via autograd.

    Args:
        means2d: [C,N,2] pixel positions of the means.
        conics: [C,N,3] upper triangle (a, b, c) of the inverse 2D covariances.
        opacities: [C,N] opacities in 0..1 (compensated, if antialiased).
        radii: [C,N,2] int box half-extents; 0 = culled (never read for those).
        depths: [C,N] camera z (sort key only; not differentiated).
        features: [C,N,D] what to composite (e.g. RGB and depth).
        width: image width.
        height: image height.
        chunk: Gaussians per tile handled per step (speed/memory only; the result does not depend on it).

    Returns:
        accumulated: [C,H,W,D] sum of w_i features_i.
        alpha: [C,H,W,1] sum of w_i = 1 - final transmittance.
        n_isects: number of (tile, Gaussian) intersections.
    """
    cams, n, dim = features.shape
    dtype, device = features.dtype, features.device
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    n_tiles, pix = cams * tiles_y * tiles_x, TILE * TILE
    tile_ids, flat_ids = _bin_to_tiles(means2d, radii, depths, tiles_x, tiles_y)
    counts = torch.bincount(tile_ids, minlength=n_tiles)                       # [n_tiles]
    starts = torch.cumsum(counts, 0) - counts

    # Per-Gaussian data, flattened over cameras, plus one padding entry that contributes nothing.
    dummy = cams * n
    m_f = torch.cat([means2d.reshape(-1, 2), means2d.new_zeros(1, 2)])        # [C*N+1,2]
    q_f = torch.cat([conics.reshape(-1, 3), conics.new_zeros(1, 3)])          # [C*N+1,3]
    lo_f = torch.cat([torch.log(opacities.clamp_min(ALPHA_THRESHOLD)).reshape(-1),
                      opacities.new_full((1,), -_FAR_OFF)])                    # [C*N+1]
    f_f = torch.cat([features.reshape(-1, dim), features.new_zeros(1, dim)])  # [C*N+1,D]

    t_idx = torch.arange(n_tiles, device=device)
    centres = torch.stack([(t_idx % tiles_x) * TILE, (t_idx // tiles_x % tiles_y) * TILE], -1).to(dtype) + TILE / 2
    pf = _pixel_features(dtype, device)                                        # [P,6]
    px = (t_idx % tiles_x)[:, None] * TILE + torch.arange(pix, device=device) % TILE
    py = (t_idx // tiles_x % tiles_y)[:, None] * TILE + torch.arange(pix, device=device) // TILE
    done = (px >= width) | (py >= height)                                      # [n_tiles,P] bool, off-image
    trans = torch.ones(n_tiles, pix, dtype=dtype, device=device)               # [n_tiles,P]
    finished = torch.zeros(n_tiles, dtype=torch.bool, device=device)
    parts_t, parts_acc, parts_w = [t_idx[:0]], [f_f[:0, None, :].expand(0, pix, dim)], [lo_f[:0, None].expand(0, pix)]
    k_range = torch.arange(chunk, device=device)
    for k0 in range(0, int(counts.max()) if len(tile_ids) else 0, chunk):
        act = ((counts > k0) & ~finished).nonzero()[:, 0]                     # [A]
        if len(act) == 0:
            break
        pos = starts[act, None] + k0 + k_range                                 # [A,K]
        ids = torch.where(pos < (starts + counts)[act, None], flat_ids[pos.clamp(max=len(flat_ids) - 1)], dummy)
        e = centres[act, None, :] - m_f[ids]                                   # [A,K,2] tile centre - mean
        qa, qb, qc = q_f[ids].unbind(-1)                                       # [A,K]
        ex, ey = e.unbind(-1)
        gx, gy = qa * ex + qb * ey, qb * ex + qc * ey
        s0 = 0.5 * (ex * gx + ey * gy) - lo_f[ids]
        coef = -torch.stack([s0, gx, gy, 0.5 * qa, qb, 0.5 * qc], dim=1)      # [A,6,K]
        # alpha = min(0.999, opacity * gaussian); the floor keeps exp() out of (slow) denormals and is
        # far below 1/255, so it changes nothing that is kept.
        alpha = torch.exp((pf @ coef).clamp(min=_LOG_FLOOR, max=_LOG_ALPHA_MAX))  # [A,P,K]
        alpha = torch.where(alpha >= ALPHA_THRESHOLD, alpha, 0.0)
        one_minus = 1.0 - alpha
        t_prev = trans[act]                                                    # [A,P]
        t_incl = t_prev[:, :, None] * torch.cumprod(one_minus, dim=-1)         # [A,P,K] after each Gaussian
        d_prev = done[act]
        keep = (t_incl > T_MIN) & ~d_prev[:, :, None]                          # a prefix along K
        w = torch.where(keep, alpha * t_incl / one_minus, 0.0)                # alpha * T before
        parts_t.append(act)
        parts_acc.append(w @ f_f[ids])                                         # [A,P,D]
        w_sum = w.sum(-1)                                                      # [A,P]
        parts_w.append(w_sum)
        trans = trans.index_copy(0, act, t_prev - w_sum)
        d_new = d_prev | (t_incl[:, :, -1] <= T_MIN)
        done[act] = d_new
        finished[act] = d_new.all(-1)

    t_all = torch.cat(parts_t)
    acc = torch.zeros(n_tiles, pix, dim, dtype=dtype, device=device).index_add(0, t_all, torch.cat(parts_acc))
    alpha = torch.zeros(n_tiles, pix, dtype=dtype, device=device).index_add(0, t_all, torch.cat(parts_w))
    acc = torch.cat([acc, alpha[..., None]], -1).reshape(cams, tiles_y, tiles_x, TILE, TILE, dim + 1)
    acc = acc.permute(0, 1, 3, 2, 4, 5).reshape(cams, tiles_y * TILE, tiles_x * TILE, dim + 1)[:, :height, :width]
    return acc[..., :dim], acc[..., dim:], len(tile_ids)
