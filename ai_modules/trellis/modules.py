"""Shared TRELLIS building blocks (SPEC section 3): timestep and position embeddings, attention, the DiT blocks.

Everything works on plain tensors: ``[B, L, C]`` batches or ``[L, C]`` token lists (leading dimensions are free).
Attention is split into projections (`MultiHeadAttention`) and a core function ``core(q, k, v)`` on
``[..., L, heads, Dh]`` tensors, so sparse or windowed callers (SLat flow, Gaussian decoder) can group tokens
themselves and pass their own core. Parameter names follow the original modules, so the published state dicts
load unchanged (see ``manifest_*.json``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sync_dreamer.unet import timestep_embedding  # LDM's: [cos, sin], as TRELLIS (quirk 5)

AttentionCore = Callable[[Tensor, Tensor, Tensor], Tensor]


class TimestepEmbedder(nn.Module):
    """`timestep_embedding` then Linear(256->C), SiLU, Linear(C->C); keys ``mlp.0.*`` and ``mlp.2.*``."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_embedding_size))


def absolute_position_embedding(coords: Tensor, channels: int) -> Tensor:
    """APE of integer coords [N, D] -> [N, channels] (SPEC 3, quirk 12).

    F = channels // D // 2 frequencies 10000^(-j/F); per axis in order [sin(c·f), cos(c·f)]; zeros pad the end
    (at C=1024 and D=3: F=170 and 4 pad zeros). Computed in float32 like the original.
    """
    n, d = coords.shape
    freq_dim = channels // d // 2
    freqs = 1.0 / (10000 ** (torch.arange(freq_dim, dtype=torch.float32, device=coords.device) / freq_dim))
    out = torch.outer(coords.reshape(-1).float(), freqs)
    emb = torch.cat([torch.sin(out), torch.cos(out)], dim=-1).reshape(n, -1)
    if emb.shape[1] < channels:
        emb = torch.cat([emb, emb.new_zeros(n, channels - emb.shape[1])], dim=-1)
    return emb


class LayerNorm32(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back to the input dtype (the fp16 torso keeps fp32 norms, quirk 17)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


class MultiHeadRMSNorm(nn.Module):
    """Per-head QK norm: normalize over Dh (L2) · gamma[heads, Dh] · sqrt(Dh), in float32 (SPEC 3)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: Tensor) -> Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma * self.scale).to(x.dtype)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """Full softmax attention, scale 1/sqrt(Dh): q [..., Lq, H, Dh], k/v [..., Lk, H, Dh] -> [..., Lq, H, Dh].

    All tokens of a leading index attend to each other; sparse/windowed callers group tokens before calling this.
    SDPA always gets 4-D [batch, heads, L, Dh] tensors: its fused kernels (flash, memory-efficient) take nothing
    else, and the math fallback materialises every score (at 20k tokens, 16 heads: 25 GB in fp32 per call).
    """
    lead = q.shape[:-3]
    q4, k4, v4 = (t.reshape(-1, *t.shape[-3:]).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q4, k4, v4).transpose(1, 2)
    return out.reshape(*lead, *out.shape[1:])


class MultiHeadAttention(nn.Module):
    """Self- (``to_qkv``) or cross-attention (``to_q`` + ``to_kv``), ``to_out``, optional QK RMS norm.

    The qkv split is [..., L, 3, heads, Dh] (q, k, v each head-major); kv is [..., Lk, 2, heads, Dh] (SPEC 3).
    ``forward(x, context, core)`` runs ``core(q, k, v)``; the default `attention` is plain full attention.
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: int | None = None, kind: str = "self",
                 qkv_bias: bool = True, qk_rms_norm: bool = False) -> None:
        super().__init__()
        if kind not in ("self", "cross"):
            raise ValueError(f"attention kind must be 'self' or 'cross', got {kind!r}")
        if channels % num_heads:
            raise ValueError(f"channels {channels} not divisible by num_heads {num_heads}")
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.kind = kind
        self.qk_rms_norm = qk_rms_norm
        if kind == "self":
            self.to_qkv = nn.Linear(channels, channels * 3, bias=qkv_bias)
        else:
            self.to_q = nn.Linear(channels, channels, bias=qkv_bias)
            self.to_kv = nn.Linear(ctx_channels if ctx_channels is not None else channels, channels * 2,
                                   bias=qkv_bias)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
            self.k_rms_norm = MultiHeadRMSNorm(self.head_dim, num_heads)
        self.to_out = nn.Linear(channels, channels)

    def qkv(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Project to q, k, v of shape [..., L, heads, Dh] (QK norm applied when configured)."""
        heads, dh = self.num_heads, self.head_dim
        if self.kind == "self":
            q, k, v = self.to_qkv(x).unflatten(-1, (3, heads, dh)).unbind(-3)
        else:
            if context is None:
                raise ValueError("cross-attention needs a context")
            q = self.to_q(x).unflatten(-1, (heads, dh))
            k, v = self.to_kv(context).unflatten(-1, (2, heads, dh)).unbind(-3)
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        return q, k, v

    def forward(self, x: Tensor, context: Tensor | None = None, core: AttentionCore = attention) -> Tensor:
        q, k, v = self.qkv(x, context)
        return self.to_out(core(q, k, v).flatten(-2))


class FeedForward(nn.Module):
    """Linear(C->ratio·C), GELU (tanh approximation), Linear(ratio·C->C); keys ``mlp.0.*``, ``mlp.2.*``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(channels * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, channels))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def _modulate(h: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """h·(1+scale)+shift with the per-sample vectors broadcast over the token axis."""
    return h * (1 + scale.unsqueeze(-2)) + shift.unsqueeze(-2)


class ModulatedCrossBlock(nn.Module):
    """The DiT block of SPEC 3 (original: ModulatedTransformerCrossBlock), quirk 10.

    mod = adaLN_modulation(t_emb) -> (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp);
    x += gate_msa·SelfAttn(mod(LN1 x)); x += CrossAttn(LN2 x, cond); x += gate_mlp·MLP(mod(LN3 x)).
    LN1/LN3 have no affine, LN2 has one; eps 1e-6. Cross-attention never has QK norm unless ``qk_rms_norm_cross``.
    With ``share_mod`` the caller passes the 6C modulation itself and the block has no ``adaLN_modulation``.
    x is [B, L, C] with t_emb [B, C], or [L, C] tokens with t_emb [C].
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, qkv_bias: bool = True,
                 share_mod: bool = False) -> None:
        super().__init__()
        self.share_mod = share_mod
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm3 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.self_attn = MultiHeadAttention(channels, num_heads, kind="self", qkv_bias=qkv_bias,
                                            qk_rms_norm=qk_rms_norm)
        self.cross_attn = MultiHeadAttention(channels, num_heads, ctx_channels=ctx_channels, kind="cross",
                                             qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross)
        self.mlp = FeedForward(channels, mlp_ratio)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(channels, 6 * channels, bias=True))

    def forward(self, x: Tensor, mod: Tensor, context: Tensor, self_core: AttentionCore = attention,
                cross_core: AttentionCore = attention) -> Tensor:
        if not self.share_mod:
            mod = self.adaLN_modulation(mod)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = self.self_attn(_modulate(self.norm1(x), shift_msa, scale_msa), core=self_core)
        x = x + h * gate_msa.unsqueeze(-2)
        x = x + self.cross_attn(self.norm2(x), context, core=cross_core)
        h = self.mlp(_modulate(self.norm3(x), shift_mlp, scale_mlp))
        return x + h * gate_mlp.unsqueeze(-2)


class TransformerBlock(nn.Module):
    """Plain pre-LN block (Gaussian decoder, SPEC 7): x += attn(LN1 x); x += mlp(LN2 x); LN no affine, eps 1e-6.

    Keys ``attn.to_qkv.*``, ``attn.to_out.*``, ``mlp.mlp.*``. Pass a windowed ``core`` for swin attention.
    """

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 qk_rms_norm: bool = False) -> None:
        super().__init__()
        self.norm1 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.norm2 = LayerNorm32(channels, elementwise_affine=False, eps=1e-6)
        self.attn = MultiHeadAttention(channels, num_heads, kind="self", qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm)
        self.mlp = FeedForward(channels, mlp_ratio)

    def forward(self, x: Tensor, core: AttentionCore = attention) -> Tensor:
        x = x + self.attn(self.norm1(x), core=core)
        return x + self.mlp(self.norm2(x))


def linears_to(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast only the Linear layers of ``module`` (the original ``convert_to_fp16`` of a torso); norms stay fp32."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            m.to(dtype)
    return module


def state_dict_mismatch(model: nn.Module, state: dict[str, Tensor]) -> str:
    """How `state` differs from `model`'s state dict: its missing, unexpected and mis-shaped keys (up to 5 each),
    "" when the keys and shapes agree (what every loader here names in its error)."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    return "; ".join(f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                     for label, items in (("missing", missing), ("unexpected", extra), ("shape", shapes)) if items)
