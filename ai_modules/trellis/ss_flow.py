"""SparseStructureFlowModel: the dense DiT velocity model over the 16³×8 sparse-structure latent (SPEC 4).

x [B, 8, R, R, R] -> patchify -> tokens [B, (R/p)³, 8p³] in x·R²+y·R+z order -> Linear -> + pos_emb (APE buffer,
persistent, quirk 16) -> modulated cross blocks -> LN(no affine, eps 1e-5) -> Linear -> unpatchify.
State-dict keys equal ``manifest_ss_flow.json`` at the published config (``SparseStructureFlowModel(**config_args)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import (
    ModulatedCrossBlock,
    TimestepEmbedder,
    absolute_position_embedding,
    linears_to,
)


def patchify(x: Tensor, patch_size: int) -> Tensor:
    """[B, C, *S] -> [B, C·p^D, *S/p]; channel index c·p^D + patch offset (original ordering)."""
    if patch_size == 1:
        return x
    dims = x.dim() - 2
    shape = [s for d in range(2, dims + 2) for s in (x.shape[d] // patch_size, patch_size)]
    x = x.reshape(*x.shape[:2], *shape)
    x = x.permute(0, 1, *[2 * i + 3 for i in range(dims)], *[2 * i + 2 for i in range(dims)])
    return x.reshape(x.shape[0], x.shape[1] * patch_size**dims, *x.shape[-dims:])


def unpatchify(x: Tensor, patch_size: int) -> Tensor:
    """Inverse of `patchify`."""
    if patch_size == 1:
        return x
    dims = x.dim() - 2
    c = x.shape[1] // patch_size**dims
    x = x.reshape(x.shape[0], c, *[patch_size] * dims, *x.shape[-dims:])
    x = x.permute(0, 1, *[j for i in range(dims) for j in (2 + dims + i, 2 + i)])
    return x.reshape(x.shape[0], c, *[x.shape[2 + 2 * i] * patch_size for i in range(dims)])


def grid_coords(size: int, device: torch.device | str | None = None) -> Tensor:
    """All (x, y, z) of a size³ grid, row-major (index x·size²+y·size+z) -> LongTensor [size³, 3]."""
    axes = [torch.arange(size, device=device)] * 3
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


class SparseStructureFlowModel(nn.Module):
    """The SS flow denoiser; ``forward(x, t, cond)`` returns the velocity, same shape as x.

    Arguments are the original constructor's (the manifest's ``config_args``). ``use_fp16`` casts the blocks'
    Linear layers to float16 as the original does; h, t_emb and cond are then cast to float16 for the blocks
    (norms stay float32), and the head runs in the input dtype. ``use_checkpoint`` is accepted and ignored.
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, share_mod: bool = False, qk_rms_norm: bool = False,
                 qk_rms_norm_cross: bool = False) -> None:
        super().__init__()
        if pe_mode != "ape":
            raise NotImplementedError(f"pe_mode {pe_mode!r}: only 'ape' (the published config) is implemented")
        self.resolution = resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.patch_size = patch_size
        self.share_mod = share_mod
        num_heads = num_heads or model_channels // num_head_channels

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        pos_emb = absolute_position_embedding(grid_coords(resolution // patch_size), model_channels)
        self.register_buffer("pos_emb", pos_emb, persistent=True)
        self.input_layer = nn.Linear(in_channels * patch_size**3, model_channels)
        self.blocks = nn.ModuleList([
            ModulatedCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio=mlp_ratio,
                                qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod)
            for _ in range(num_blocks)
        ])
        self.out_layer = nn.Linear(model_channels, out_channels * patch_size**3)
        if use_fp16:
            self.convert_to_fp16()

    def convert_to_fp16(self) -> None:
        """Cast the torso's Linear layers to float16 (norm weights and QK gammas stay float32, quirk 17)."""
        linears_to(self.blocks, torch.float16)

    def convert_to_fp32(self) -> None:
        """Cast the torso back to float32."""
        linears_to(self.blocks, torch.float32)

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the blocks run in (that of their Linear layers)."""
        return self.blocks[0].self_attn.to_out.weight.dtype if len(self.blocks) else self.input_layer.weight.dtype

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x [B, in, R, R, R], t [B] (= 1000·t, quirk 5), cond [B, L, cond_channels] -> velocity [B, out, R, R, R]."""
        r = self.resolution
        if list(x.shape[1:]) != [self.in_channels, r, r, r]:
            raise ValueError(f"expected x of shape [B, {self.in_channels}, {r}, {r}, {r}], got {list(x.shape)}")
        h = patchify(x, self.patch_size)
        h = h.reshape(*h.shape[:2], -1).permute(0, 2, 1)
        h = self.input_layer(h) + self.pos_emb[None]
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        dtype = self.torso_dtype
        h, t_emb, cond = h.type(dtype), t_emb.type(dtype), cond.type(dtype)
        for block in self.blocks:
            h = block(h, t_emb, cond)
        h = F.layer_norm(h.type(x.dtype), h.shape[-1:])
        h = self.out_layer(h)
        rp = r // self.patch_size
        h = h.permute(0, 2, 1).reshape(h.shape[0], h.shape[2], rp, rp, rp)
        return unpatchify(h, self.patch_size).contiguous()
