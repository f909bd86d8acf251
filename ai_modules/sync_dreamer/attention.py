"""Attention blocks of the SyncDreamer UNet, with the original `ldm` state-dict names.

* `SpatialTransformer` / `BasicTransformerBlock` / `CrossAttention`: Stable Diffusion 1.x
  (`ldm/modules/attention.py`), attention computed with `F.scaled_dot_product_attention`.
* `DepthTransformer` / `DepthAttention`: SyncDreamer's depth-wise attention
  (`sync_dreamer_attention.py`): each latent pixel attends over the depth samples of its own
  frustum ray in the view-frustum feature volume (SYNCDREAMER_SPEC.md section 5).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _heads_first(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B,N,H*D] -> [B,H,N,D]."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class CrossAttention(nn.Module):
    """Multi-head attention of `x` [B,N,query_dim] over `context` [B,M,context_dim] (self-attention without)."""

    def __init__(self, query_dim: int, context_dim: int | None = None, heads: int = 8, dim_head: int = 64) -> None:
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        q = _heads_first(self.to_q(x), self.heads)
        k = _heads_first(self.to_k(context), self.heads)
        v = _heads_first(self.to_v(context), self.heads)
        out = F.scaled_dot_product_attention(q, k, v)          # scale dim_head^-0.5, as the original
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))


class GEGLU(nn.Module):
    """`proj` to 2*inner, split into (value, gate), value * exact-erf GELU(gate)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU feed-forward (x4), keys `net.0.proj`, `net.2`."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        inner = dim * mult
        self.net = nn.Sequential(GEGLU(dim, inner), nn.Dropout(0.0), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    """LN -> self-attention, LN -> cross-attention, LN -> GEGLU FF, each with a residual."""

    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int) -> None:
        super().__init__()
        # Registration order = the original's state-dict order: attn1, ff, attn2, norm1..3.
        self.attn1 = CrossAttention(dim, heads=n_heads, dim_head=d_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim=context_dim, heads=n_heads, dim_head=d_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """GN(32, eps 1e-6) -> 1x1 conv -> transformer blocks over the pixels -> 1x1 conv, plus the input."""

    def __init__(self, channels: int, n_heads: int, d_head: int, depth: int, context_dim: int) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.norm = nn.GroupNorm(32, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Conv2d(channels, inner, 1)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, n_heads, d_head, context_dim) for _ in range(depth))
        self.proj_out = nn.Conv2d(inner, channels, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        x_in = x
        x = self.proj_in(self.norm(x))
        c = x.shape[1]
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        for block in self.transformer_blocks:
            x = block(x, context)
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2)
        return self.proj_out(x) + x_in


def pointwise_conv3d(conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1x1 `Conv3d` as one matrix product over channels (CPU's conv3d path for 1x1x1 kernels is slow).

    Args:
        conv: kernel [O,C,1,1,1] (bias optional); x: [b,C,D,h,w].

    Returns:
        [b,O,D,h,w], the same values as `conv(x)`.
    """
    b, c = x.shape[:2]
    weight = conv.weight.view(conv.out_channels, c)
    out = torch.bmm(weight.expand(b, -1, -1), x.reshape(b, c, -1))
    if conv.bias is not None:
        out = out + conv.bias.view(1, -1, 1).to(out.dtype)
    return out.view(b, conv.out_channels, *x.shape[2:])


class DepthAttention(nn.Module):
    """Per-pixel attention over depth: q from the image [b,C,h,w], k/v from the volume [b,Cv,D,h,w].

    Not SDPA: with one query and D = 48 keys per pixel, SDPA needs k and v permuted to
    [b*h*w, heads, D, hd] (large strided copies), and PyTorch's CPU SDPA kernel strays from the
    reference by ~1e-4 on the unconditional branch, where all keys are equal. Two evaluations of
    the same function, chosen by device:

    * CUDA: the original's formula (k, v = 1x1x1 convs of the volume; sum of q*k over channels,
      softmax over depth, sum of v*attn over depth): a few large vectorised kernels.
    * CPU: k and v are never formed. Since k = Wk ctx, q.k = (Wk^T q).ctx, and sum_D attn v =
      Wv (sum_D attn ctx); the two sums run as accumulating loops (over the volume channels,
      then over depth), which avoids the [b, heads, hd, D, h, w] temporaries and is ~5x faster
      on one CPU core.
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head = heads, dim_head
        self.scale = dim_head ** -0.5
        self.to_q = nn.Conv2d(query_dim, inner, 1, 1, bias=False)
        self.to_k = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_v = nn.Conv3d(context_dim, inner, 1, 1, bias=False)
        self.to_out = nn.Conv2d(inner, query_dim, 1, 1, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.to_q(x)
        out = self._attend_vectorised(q, context) if q.is_cuda else self._attend_by_channel(q, context)
        return self.to_out(out)

    def _attend_vectorised(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hn, hd = self.heads, self.dim_head
        b, _, h, w = q.shape
        d = context.shape[2]
        k = self.to_k(context).reshape(b, hn, hd, d, h, w)
        sim = torch.sum(q.reshape(b, hn, hd, 1, h, w) * k, 2) * self.scale          # [b,hn,D,h,w]
        del k
        attn = sim.softmax(dim=2)
        v = self.to_v(context).reshape(b, hn, hd, d, h, w)
        return torch.sum(v * attn.unsqueeze(2), 3).reshape(b, hn * hd, h, w)

    def _attend_by_channel(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        hn, hd = self.heads, self.dim_head
        b, _, h, w = q.shape
        cv, d = context.shape[1:3]
        ctx = context.reshape(b, cv, d, h * w)
        wk = self.to_k.weight.reshape(hn, hd, cv).to(q.dtype)
        wv = self.to_v.weight.reshape(hn, hd, cv).to(q.dtype)
        q_ctx = torch.einsum("nck,bncp->bnkp", wk, q.reshape(b, hn, hd, h * w))       # [b,hn,Cv,hw]
        sim = torch.zeros(b, hn, d, h * w, dtype=torch.float32, device=q.device)     # fp32 accumulators
        for j in range(cv):
            sim.addcmul_(q_ctx[:, :, j, None, :], ctx[:, None, j])
        attn = (sim * self.scale).softmax(dim=2)
        pooled = torch.zeros(b, hn, cv, h * w, dtype=torch.float32, device=q.device)  # sum_D attn * ctx
        for i in range(d):
            pooled.addcmul_(attn[:, :, i, None, :], ctx[:, None, :, i, :])
        out = torch.einsum("nck,bnkp->bncp", wv, pooled.to(wv.dtype))
        return out.reshape(b, hn * hd, h, w).to(q.dtype)


class DepthTransformer(nn.Module):
    """SyncDreamer's depth-wise conditioning block: `x + proj_out(depth_attn(proj_in(x), proj_context(volume)))`.

    Args:
        dim: UNet channels at this block.
        n_heads: 4 in the original.
        d_head: volume channels / 2 (so the inner width is 2 * volume channels).
        context_dim: volume channels.
    """

    def __init__(self, dim: int, n_heads: int, d_head: int, context_dim: int) -> None:
        super().__init__()
        inner = n_heads * d_head
        self.proj_in = nn.Sequential(nn.Conv2d(dim, inner, 1, 1), nn.GroupNorm(8, inner), nn.SiLU(True))
        self.proj_context = nn.Sequential(
            nn.Conv3d(context_dim, context_dim, 1, 1, bias=False), nn.GroupNorm(8, context_dim), nn.ReLU(True))
        self.depth_attn = DepthAttention(inner, context_dim, n_heads, d_head)
        self.proj_out = nn.Sequential(
            nn.GroupNorm(8, inner), nn.ReLU(True), nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
            nn.GroupNorm(8, inner), nn.ReLU(True), nn.Conv2d(inner, dim, 3, 1, 1, bias=False))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        conv, norm, act = self.proj_context
        context = act(norm(pointwise_conv3d(conv, context)))
        h = self.depth_attn(self.proj_in(x), context)
        return self.proj_out(h) + x
