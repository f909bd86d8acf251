"""Sparse voxel tensors as plain data, and the sparse ops TRELLIS needs, in dense PyTorch (no spconv, no xformers).

A `SparseTensor` is ``coords`` [N, 4] int32 (batch, x, y, z) plus ``feats`` [N, C]. Rows keep whatever order the
producer gave them; everything here returns rows in the input order unless it says otherwise (SPEC 8).

Ops (SPEC 8):

    submanifold_conv3d   spconv SubMConv3d 3x3x3: 27-neighbour gather + one matmul, output sites = input sites
    downsample2          coords // 2, unique in sorted order, feats sum / (n + 1) (TRELLIS quirk, see downsample2)
    upsample2            each fine voxel copies its parent's feature (inverse of downsample2's grouping)
    windowed_attention   Swin-style attention among tokens of the same (batch, window) cell (Gaussian decoder)
    per_sample_attention full self-attention among the tokens of each sample (SLat flow)
    per_sample_cross_attention  sparse queries of each sample against that sample's dense context

Neighbour lookup hashes coordinates into int64 keys and uses a sorted search, so memory is O(N) (no dense grid),
which is what makes ~100k voxels at 64^3 cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "DownsampleCache", "SparseTensor", "downsample2", "neighbour_map", "per_sample_attention",
    "per_sample_cross_attention", "submanifold_conv3d", "submanifold_conv3d_dense", "upsample2", "window_ids",
    "windowed_attention",
]


@dataclass(frozen=True, eq=False)
class SparseTensor:
    """Occupied voxels: ``coords`` [N, 4] int32 (b, x, y, z) and ``feats`` [N, C]; row i of one is row i of the other.

    Producers in this package emit coords in lexicographic (b, x, y, z) order (SPEC 5, quirk 9); the ops keep the
    row order of their input (downsample2 excepted, whose output is sorted)."""

    coords: torch.Tensor
    feats: torch.Tensor

    def __post_init__(self) -> None:
        if self.coords.dim() != 2 or self.coords.shape[1] != 4:
            raise ValueError(f"coords must be [N, 4], got {tuple(self.coords.shape)}")
        if self.feats.shape[0] != self.coords.shape[0]:
            raise ValueError(f"feats rows {self.feats.shape[0]} != coords rows {self.coords.shape[0]}")

    def replace(self, feats: torch.Tensor) -> SparseTensor:
        """The same voxels with new features (e.g. after a per-voxel Linear or LayerNorm)."""
        return SparseTensor(self.coords, feats)

    @property
    def batch_index(self) -> torch.Tensor:
        """[N] int64 sample index of each voxel."""
        return self.coords[:, 0].long()

    @property
    def num_voxels(self) -> int:
        return int(self.coords.shape[0])

    @property
    def channels(self) -> int:
        return int(self.feats.shape[-1])


@dataclass(frozen=True, eq=False)
class DownsampleCache:
    """What `upsample2` needs to undo `downsample2`: the fine coords (original order) and each fine voxel's parent
    row in the coarse tensor."""

    coords: torch.Tensor   # [N_fine, 4] int32
    inverse: torch.Tensor  # [N_fine] int64, index into the coarse rows


# ----------------------------------------------------------------------------------------------------------------
# coordinate hashing


def _encode(batch: torch.Tensor, xyz: torch.Tensor, size: int) -> torch.Tensor:
    """Pack (b, x, y, z) with 0 <= x, y, z < size into one int64 key whose order is lexicographic."""
    return ((batch * size + xyz[..., 0]) * size + xyz[..., 1]) * size + xyz[..., 2]


_OFFSETS = torch.tensor([(i - 1, j - 1, k - 1) for i in range(3) for j in range(3) for k in range(3)])


def neighbour_map(coords: torch.Tensor) -> torch.Tensor:
    """[N, 27] int64: row of the voxel at ``coords + offset_k`` or N where there is none.

    Offset k = (kx-1, ky-1, kz-1) with k = 9*kx + 3*ky + kz, matching spconv's weight layout [out, kx, ky, kz, in]
    (a cross-correlation, like ``conv3d`` with padding 1; SPEC 8). Coordinates must be >= 0. The map depends only on
    coords, so a model can compute it once and pass it to every conv on the same voxels."""
    n = coords.shape[0]
    if n == 0:
        return torch.empty(0, 27, dtype=torch.long, device=coords.device)
    c = coords.long()
    size = int(c[:, 1:].max()) + 3  # neighbour coords run over [-1, max+1]; +1 shifts them to [0, max+2]
    batch, xyz = c[:, 0], c[:, 1:] + 1
    keys = _encode(batch, xyz, size)
    sorted_keys, perm = keys.sort()
    offs = _OFFSETS.to(c.device)
    query = _encode(batch[:, None], xyz[:, None, :] + offs[None], size)  # [N, 27]
    pos = torch.searchsorted(sorted_keys, query.contiguous()).clamp_(max=n - 1)
    found = sorted_keys[pos] == query
    return torch.where(found, perm[pos], torch.full_like(pos, n))


# ----------------------------------------------------------------------------------------------------------------
# convolution


# Most elements one gathered [rows, 27 * in] block may hold (256 MB in bf16): larger inputs go in row chunks.
_GATHER_BUDGET = 1 << 27


def submanifold_conv3d(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                       neighbours: torch.Tensor | None = None) -> SparseTensor:
    """spconv ``SubMConv3d(kernel 3)``: out[i] = bias + sum_k W_k @ feats[neighbour_k(i)], at the input sites only.

    ``weight`` is spconv's layout [out, kx, ky, kz, in], as stored in the TRELLIS checkpoints (SPEC 8); ``neighbours``
    is an optional precomputed `neighbour_map(x.coords)`. The 27 neighbours' features are gathered side by side and
    multiplied by the weight as one [27·in, out] matrix (an implicit GEMM, like spconv's): one matrix product per row
    chunk accumulates in the GEMM's own precision and rounds once, follows autocast like any ``addmm``, and costs
    two kernels instead of 27 gathers and 27 products. Rows go in chunks of at most `_GATHER_BUDGET` elements."""
    c_out, c_in = weight.shape[0], weight.shape[-1]
    if weight.shape[1:4] != (3, 3, 3):
        raise ValueError(f"expected a 3x3x3 spconv weight [out, 3, 3, 3, in], got {tuple(weight.shape)}")
    if x.feats.shape[1] != c_in:
        raise ValueError(f"feats have {x.feats.shape[1]} channels, weight expects {c_in}")
    nbr = neighbour_map(x.coords) if neighbours is None else neighbours
    feats = x.feats
    n = feats.shape[0]
    padded = torch.cat([feats, feats.new_zeros(1, c_in)])  # row N is the zero "absent neighbour"
    w = weight.reshape(c_out, 27 * c_in).t()                # [27·in, out]: offset-major, like the gathered rows
    rows = max(1, _GATHER_BUDGET // (27 * c_in))
    parts = []
    for i in range(0, n, rows):
        gathered = padded[nbr[i:i + rows].reshape(-1)].reshape(-1, 27 * c_in)
        parts.append(gathered @ w if bias is None else torch.addmm(bias, gathered, w))
    if not parts:
        return x.replace(feats.new_zeros(0, c_out))
    return x.replace(torch.cat(parts) if len(parts) > 1 else parts[0])


def submanifold_conv3d_dense(x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> SparseTensor:
    """Reference for `submanifold_conv3d` (checks only; O(grid) memory): scatter to a dense grid, ``conv3d`` with
    padding 1 and ``weight.permute(0, 4, 1, 2, 3)``, gather at the active sites (SPEC 8)."""
    c = x.coords.long()
    b, size = int(c[:, 0].max()) + 1, int(c[:, 1:].max()) + 1
    grid = x.feats.new_zeros(b, size, size, size, x.feats.shape[1])
    grid[c[:, 0], c[:, 1], c[:, 2], c[:, 3]] = x.feats
    out = F.conv3d(grid.permute(0, 4, 1, 2, 3), weight.permute(0, 4, 1, 2, 3), bias, padding=1)
    return x.replace(out.permute(0, 2, 3, 4, 1)[c[:, 0], c[:, 1], c[:, 2], c[:, 3]])


# ----------------------------------------------------------------------------------------------------------------
# resampling


def downsample2(x: SparseTensor) -> tuple[SparseTensor, DownsampleCache]:
    """Halve the resolution: coarse coords = coords // 2 (b kept), unique, in sorted (b, x, y, z) order.

    Features: TRELLIS's ``SparseDownsample`` scatter-reduces with ``reduce='mean'`` into a zeros tensor with
    ``include_self`` left at True, so the zero counts as one more member: coarse = sum(children) / (n_children + 1),
    not the plain mean (checked against golden ``down_feats``: the plain mean is off by up to 1.7). The published
    SLat flow model was trained with this, so it is copied here."""
    c = x.coords.long()
    coarse = torch.cat([c[:, :1], torch.div(c[:, 1:], 2, rounding_mode="floor")], dim=1)
    if c.shape[0] == 0:
        empty = torch.empty(0, x.feats.shape[1], dtype=x.feats.dtype, device=x.feats.device)
        return SparseTensor(x.coords[:0], empty), DownsampleCache(x.coords, torch.empty_like(c[:, 0]))
    size = int(coarse[:, 1:].max()) + 1
    keys = _encode(coarse[:, 0], coarse[:, 1:], size)
    ukeys, inverse, counts = torch.unique(keys, sorted=True, return_inverse=True, return_counts=True)
    xyz = torch.stack([(ukeys // size**2) % size, (ukeys // size) % size, ukeys % size], dim=1)
    new_coords = torch.cat([(ukeys // size**3)[:, None], xyz], dim=1).to(x.coords.dtype)
    sums = x.feats.new_zeros(ukeys.shape[0], x.feats.shape[1]).index_add_(0, inverse, x.feats)
    feats = sums / (counts + 1).to(x.feats.dtype)[:, None]
    return SparseTensor(new_coords, feats), DownsampleCache(x.coords, inverse)


def upsample2(x: SparseTensor, cache: DownsampleCache) -> SparseTensor:
    """Undo `downsample2`'s grouping: fine voxels in their original order, each with its parent's features (SPEC 8)."""
    if cache.inverse.shape[0] and int(cache.inverse.max()) >= x.feats.shape[0]:
        raise ValueError("the cache does not belong to this coarse tensor")
    return SparseTensor(cache.coords, x.feats[cache.inverse])


# ----------------------------------------------------------------------------------------------------------------
# attention

# Most attention-score elements (groups * heads * L^2) one padded SDPA call may cover; bigger groups run alone.
_SCORE_BUDGET = 1 << 26


def _grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Self-attention restricted to tokens with equal ``group`` id; q/k/v [N, H, D], output [N, H, D] in input order.

    Tokens are sorted by group, groups of similar length are padded into one batched SDPA call (key-padding mask
    only where lengths differ), and the results are scattered back."""
    n, heads, _ = q.shape
    out = q.new_empty(n, heads, v.shape[-1])
    if n == 0:
        return out
    order = torch.argsort(group, stable=True)
    _, counts = torch.unique_consecutive(group[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    by_len = torch.argsort(counts, stable=True)
    counts_l, starts_l = counts[by_len].tolist(), starts[by_len]
    qs, ks, vs = q[order], k[order], v[order]
    out_sorted = torch.empty_like(out)
    i = 0
    while i < len(counts_l):
        j = i + 1  # groups i..j-1 go together; counts_l is ascending so counts_l[j-1] is the padded length
        while j < len(counts_l) and (j + 1 - i) * heads * counts_l[j] ** 2 <= _SCORE_BUDGET:
            j += 1
        length = counts_l[j - 1]
        pos = torch.arange(length, device=q.device)
        cnt = counts[by_len[i:j]]
        valid = pos[None] < cnt[:, None]                                   # [G, L]
        idx = torch.where(valid, starts_l[i:j, None] + pos[None], 0)      # [G, L] rows of the sorted tokens
        mask = None if counts_l[i] == length else valid[:, None, None, :]  # keys only; padded queries are dropped
        o = F.scaled_dot_product_attention(qs[idx].transpose(1, 2), ks[idx].transpose(1, 2), vs[idx].transpose(1, 2),
                                           attn_mask=mask)
        out_sorted[idx[valid]] = o.transpose(1, 2)[valid]
        i = j
    out[order] = out_sorted
    return out


def window_ids(coords: torch.Tensor, window: int, shift: int = 0) -> torch.Tensor:
    """[N] int64 id of each voxel's (batch, floor((x+shift)/w), floor((y+shift)/w), floor((z+shift)/w)) cell,
    ordered like the cells (SPEC 7: Gaussian decoder block i uses shift (window/2)*(i mod 2); quirk 13)."""
    c = coords.long()
    cells = torch.div(c[:, 1:] + shift, window, rounding_mode="floor")
    if c.shape[0] == 0:
        return c[:, 0]
    cells = cells - cells.min()  # only matters for negative coords; keeps keys non-negative
    return _encode(c[:, 0], cells, int(cells.max()) + 1)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, coords: torch.Tensor, window: int,
                       shift: int = 0) -> torch.Tensor:
    """Shifted-window sparse self-attention (TRELLIS ``SparseWindowedAttention``, SPEC 7/8).

    q, k, v: [N, heads, Dh], rows aligned with ``coords`` [N, 4]. Tokens attend only to tokens in the same
    `window_ids` cell; softmax scale 1/sqrt(Dh). Returns [N, heads, Dh] in the input order. The original takes an
    xformers fast path when every window holds exactly ``window`` tokens (quirk 13); the maths is the same."""
    return _grouped_attention(q, k, v, window_ids(coords, window, shift))


def per_sample_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
    """Full sparse self-attention within each sample (SLat flow, SPEC 6/8): q, k, v [N, heads, Dh] and
    ``batch_index`` [N] (coords[:, 0]); returns [N, heads, Dh] in the input order. Batch 1 is one plain SDPA."""
    return _grouped_attention(q, k, v, batch_index.long())


def per_sample_cross_attention(q: torch.Tensor, batch_index: torch.Tensor, k: torch.Tensor,
                               v: torch.Tensor) -> torch.Tensor:
    """Sparse queries against a dense per-sample context (SLat flow cross-attention to the image tokens).

    q: [N, heads, Dh] with ``batch_index`` [N]; k, v: [B, L, heads, Dh]. Returns [N, heads, Dh] in the input order."""
    out = q.new_empty(q.shape[0], q.shape[1], v.shape[-1])
    b_idx = batch_index.long()
    for b in range(k.shape[0]):
        rows = (b_idx == b).nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        o = F.scaled_dot_product_attention(q[rows].transpose(0, 1)[None], k[b].transpose(0, 1)[None],
                                           v[b].transpose(0, 1)[None])
        out[rows] = o[0].transpose(0, 1)
    return out
