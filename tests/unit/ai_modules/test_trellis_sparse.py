"""ai_modules.trellis.sparse: the sparse ops against the original code's unit vectors (``unit_sparse_ops``) and against
hand-made dense references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from trellis_golden import SINGLE, assert_close, golden

from ai_modules.trellis import sparse
from ai_modules.trellis.sparse import (
    SparseTensor,
    downsample2,
    neighbour_map,
    per_sample_attention,
    per_sample_cross_attention,
    submanifold_conv3d,
    submanifold_conv3d_dense,
    upsample2,
    window_ids,
    windowed_attention,
)


def _random_sparse(n: int, size: int, batches: int, channels: int, seed: int) -> SparseTensor:
    """n distinct random voxels per sample on a size^3 grid, rows shuffled (not lexicographic)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batches):
        flat = torch.randperm(size**3, generator=g)[:n]
        xyz = torch.stack([flat // size**2, (flat // size) % size, flat % size], dim=1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    coords = torch.cat(rows)[torch.randperm(n * batches, generator=g)].to(torch.int32)
    return SparseTensor(coords, torch.randn(coords.shape[0], channels, generator=g))


# ---------------------------------------------------------------------------------------------------------- golden


def test_conv_matches_golden() -> None:
    u = golden("unit_sparse_ops")
    out = submanifold_conv3d(SparseTensor(u["conv_in_coords"], u["conv_in_feats"]), u["conv_weight_spconv_KRSC"],
                             u["conv_bias"])
    assert torch.equal(out.coords, u["conv_out_coords"])
    assert_close(out.feats, u["conv_out_feats"], SINGLE, "conv_out_feats")


def test_downsample_matches_golden() -> None:
    u = golden("unit_sparse_ops")
    down, _ = downsample2(SparseTensor(u["conv_in_coords"], u["conv_in_feats"]))
    assert down.coords.dtype == torch.int32
    assert torch.equal(down.coords, u["down_coords"])
    assert_close(down.feats, u["down_feats"], SINGLE, "down_feats")


def test_upsample_matches_golden() -> None:
    u = golden("unit_sparse_ops")
    down, cache = downsample2(SparseTensor(u["conv_in_coords"], u["conv_in_feats"]))
    up = upsample2(down.replace(u["up_in_feats"]), cache)
    assert torch.equal(up.coords, u["up_coords"])
    assert_close(up.feats, u["up_feats"], SINGLE, "up_feats")


@pytest.mark.parametrize("shift", [0, 2])
def test_windowed_attention_matches_golden(shift: int) -> None:
    u = golden("unit_sparse_ops")
    qkv = u["wattn_qkv"]  # [N, 3, heads, Dh]
    out = windowed_attention(qkv[:, 0], qkv[:, 1], qkv[:, 2], u["conv_in_coords"], window=4, shift=shift)
    assert_close(out, u[f"wattn_out_shift{shift}"], SINGLE, f"wattn_out_shift{shift}")


# ------------------------------------------------------------------------------------------------------ hand-made


def test_gather_conv_equals_dense_conv3d() -> None:
    x = _random_sparse(n=300, size=12, batches=2, channels=5, seed=0)
    g = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(7, 3, 3, 3, 5, generator=g), torch.randn(7, generator=g)
    out = submanifold_conv3d(x, weight, bias)
    ref = submanifold_conv3d_dense(x, weight, bias)
    assert torch.equal(out.coords, x.coords)
    assert_close(out.feats, ref.feats, 1e-5, "gather conv vs dense conv3d")
    # a precomputed neighbour map gives the same result; no bias works too
    assert torch.equal(submanifold_conv3d(x, weight, bias, neighbour_map(x.coords)).feats, out.feats)
    assert_close(submanifold_conv3d(x, weight).feats, out.feats - bias, 1e-5, "no bias")


def test_conv_in_row_chunks_follows_autocast_and_takes_no_voxels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gathered block is cut into row chunks when large (same result), the product follows autocast like any
    addmm (the published torsos' convs run in half precision), and an empty tensor stays empty."""
    x = _random_sparse(n=200, size=10, batches=1, channels=6, seed=3)
    g = torch.Generator().manual_seed(4)
    weight, bias = torch.randn(5, 3, 3, 3, 6, generator=g), torch.randn(5, generator=g)
    whole = submanifold_conv3d(x, weight, bias)
    monkeypatch.setattr(sparse, "_GATHER_BUDGET", 27 * 6 * 7)          # 7 rows a chunk: 29 chunks
    assert_close(submanifold_conv3d(x, weight, bias).feats, whole.feats, 1e-6, "row chunks")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = submanifold_conv3d(x, weight, bias).feats
    assert low.dtype == torch.bfloat16
    assert_close(low.float(), whole.feats, 0.1, "bf16 conv")
    empty = submanifold_conv3d(SparseTensor(x.coords[:0], x.feats[:0]), weight, bias)
    assert empty.feats.shape == (0, 5)


def test_dense_conv_reference_is_conv3d_with_permuted_weight() -> None:
    """The dense reference itself: a fully occupied grid is an ordinary conv3d (padding 1)."""
    size = 5
    grid = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    coords = torch.cat([torch.zeros(grid.shape[0], 1, dtype=torch.long), grid], dim=1).int()
    g = torch.Generator().manual_seed(2)
    feats, weight = torch.randn(size**3, 3, generator=g), torch.randn(4, 3, 3, 3, 3, generator=g)
    out = submanifold_conv3d(SparseTensor(coords, feats), weight)
    dense = F.conv3d(feats.T.reshape(1, 3, size, size, size), weight.permute(0, 4, 1, 2, 3), padding=1)
    assert_close(out.feats, dense.reshape(4, -1).T, 1e-5, "full grid")


def test_neighbour_map_marks_absent_neighbours() -> None:
    coords = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 1]], dtype=torch.int32)
    nbr = neighbour_map(coords)
    assert nbr.shape == (3, 27)
    assert nbr[:, 13].tolist() == [0, 1, 2]            # centre: itself
    assert nbr[0, 14] == 1 and nbr[1, 12] == 0          # z+1 / z-1 within sample 0
    assert nbr[2, 12] == 3                              # (1, 0, 0, 0) is absent: other samples never leak in
    assert int((nbr < 3).sum()) == 5


def test_downsample_upsample_roundtrip_keeps_fine_order() -> None:
    x = _random_sparse(n=200, size=10, batches=2, channels=3, seed=3)
    down, cache = downsample2(x)
    c = down.coords.long()
    keys = ((c[:, 0] * 8 + c[:, 1]) * 8 + c[:, 2]) * 8 + c[:, 3]
    assert bool((keys[1:] > keys[:-1]).all())           # unique, lexicographic
    parents = torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], dim=1)
    assert torch.equal(down.coords[cache.inverse], parents)
    counts = torch.bincount(cache.inverse, minlength=down.num_voxels).float()
    sums = torch.zeros(down.num_voxels, 3).index_add_(0, cache.inverse, x.feats)
    assert_close(down.feats, sums / (counts + 1)[:, None], 1e-6, "sum / (n + 1) pooling")
    up = upsample2(down, cache)
    assert torch.equal(up.coords, x.coords)
    assert torch.equal(up.feats, down.feats[cache.inverse])


def _naive_grouped(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    out = torch.empty_like(q)
    for gid in group.unique():
        rows = (group == gid).nonzero().squeeze(1)
        s = torch.einsum("qhd,khd->hqk", q[rows], k[rows]) / q.shape[-1] ** 0.5
        out[rows] = torch.einsum("hqk,khd->qhd", s.softmax(-1), v[rows])
    return out


@pytest.mark.parametrize("budget", [sparse._SCORE_BUDGET, 64])
@pytest.mark.parametrize("shift", [0, 3])
def test_windowed_attention_equals_naive_per_window_softmax(monkeypatch: pytest.MonkeyPatch, budget: int,
                                                          shift: int) -> None:
    monkeypatch.setattr(sparse, "_SCORE_BUDGET", budget)  # 64 forces one group per SDPA call
    x = _random_sparse(n=150, size=9, batches=2, channels=1, seed=4)
    g = torch.Generator().manual_seed(5)
    q, k, v = (torch.randn(x.num_voxels, 2, 4, generator=g) for _ in range(3))
    out = windowed_attention(q, k, v, x.coords, window=6, shift=shift)
    c = x.coords.long()
    cell = [c[:, 0]] + [(c[:, i] + shift) // 6 for i in (1, 2, 3)]
    group = ((cell[0] * 10 + cell[1]) * 10 + cell[2]) * 10 + cell[3]
    assert_close(out, _naive_grouped(q, k, v, group), 1e-5, "windowed vs naive")
    assert torch.equal(window_ids(x.coords, 6, shift).unique(return_inverse=True)[1],
                       group.unique(return_inverse=True)[1])


def test_per_sample_attention_is_sdpa_per_sample() -> None:
    x = _random_sparse(n=40, size=6, batches=3, channels=1, seed=6)
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(x.num_voxels, 2, 8, generator=g) for _ in range(3))
    out = per_sample_attention(q, k, v, x.batch_index)
    assert_close(out, _naive_grouped(q, k, v, x.batch_index), 1e-5, "per-sample attention")
    one = per_sample_attention(q, k, v, torch.zeros(x.num_voxels, dtype=torch.long))
    dense = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)).transpose(0, 1)
    assert_close(one, dense, 1e-6, "batch 1 is plain SDPA")


def test_per_sample_cross_attention() -> None:
    x = _random_sparse(n=30, size=6, batches=2, channels=1, seed=8)
    g = torch.Generator().manual_seed(9)
    q = torch.randn(x.num_voxels, 2, 8, generator=g)
    k, v = torch.randn(2, 11, 2, 8, generator=g), torch.randn(2, 11, 2, 8, generator=g)
    out = per_sample_cross_attention(q, x.batch_index, k, v)
    for b in range(2):
        rows = x.batch_index == b
        s = torch.einsum("qhd,khd->hqk", q[rows], k[b]) / 8**0.5
        assert_close(out[rows], torch.einsum("hqk,khd->qhd", s.softmax(-1), v[b]), 1e-5, f"sample {b}")


def test_sparse_tensor_is_plain_data() -> None:
    x = _random_sparse(n=5, size=4, batches=1, channels=3, seed=10)
    y = x.replace(x.feats * 2)
    assert y.coords is x.coords and y.channels == 3 and y.num_voxels == 5
    with pytest.raises(ValueError):
        SparseTensor(x.coords, x.feats[:4])
    with pytest.raises(ValueError):
        SparseTensor(x.coords[:, :3], x.feats)
