"""TRELLIS ``SparseStructureDecoder``: the dense 16^3 x 8 structure latent -> 64^3 occupancy logits (SPEC 5), and
`occupancy_coords`, which turns the logits into the voxel coordinates every later stage is ordered by (quirk 9).

State-dict keys and shapes equal the published checkpoint's (``manifest_ss_decoder.json``; hub
``ckpts/ss_dec_conv3d_16l8_fp16``), so it loads with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PUBLISHED_CONFIG", "ChannelLayerNorm3d", "ResBlock3d", "SparseStructureDecoder", "UpsampleBlock3d",
           "occupancy_coords", "pixel_shuffle_3d"]

# configs/vae/ss_vae_conv3d_16l8_fp16.json, models.decoder.args (the manifest's config_args).
PUBLISHED_CONFIG: dict = {"out_channels": 1, "latent_channels": 8, "num_res_blocks": 2, "num_res_blocks_middle": 2,
                          "channels": [512, 128, 32], "use_fp16": True}


class ChannelLayerNorm3d(nn.LayerNorm):
    """LayerNorm over the channel axis of [B, C, X, Y, Z], per voxel, computed in fp32 and cast back (TRELLIS's
    ``ChannelLayerNorm32``; affine, eps 1e-5). Its parameters stay fp32 when the torso is fp16."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float().movedim(1, -1)
        h = F.layer_norm(h, self.normalized_shape, self.weight, self.bias, self.eps)
        return h.movedim(-1, 1).to(x.dtype)


class ResBlock3d(nn.Module):
    """chLN, SiLU, conv3^3, chLN, SiLU, conv3^3, plus the skip (identity, or a 1x1x1 conv if channels change)."""

    def __init__(self, channels: int, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        self.norm1 = ChannelLayerNorm3d(channels)
        self.norm2 = ChannelLayerNorm3d(out_channels)
        self.conv1 = nn.Conv3d(channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, padding=1)
        self.skip_connection = nn.Conv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip_connection(x)


def pixel_shuffle_3d(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """[B, C*f^3, X, Y, Z] -> [B, C, fX, fY, fZ]: channel c*f^3 + f^2*i + f*j + k moves to (fx+i, fy+j, fz+k)
    (SPEC 5)."""
    b, c, sx, sy, sz = x.shape
    c_out = c // factor**3
    x = x.reshape(b, c_out, factor, factor, factor, sx, sy, sz).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, sx * factor, sy * factor, sz * factor)


class UpsampleBlock3d(nn.Module):
    """conv3^3 (C -> 8 C') then a 3-D pixel shuffle: doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels * 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), 2)


class SparseStructureDecoder(nn.Module):
    """[B, latent, R, R, R] -> [B, out, 4R, 4R, 4R] logits (published: 8 x 16^3 -> 1 x 64^3; tiny: 4^3 -> 16^3).

    Layout: conv3^3(latent -> ch0), ``num_res_blocks_middle`` x Res(ch0), then per stage i ``num_res_blocks`` x
    Res(ch_i) followed by Up(ch_i -> ch_{i+1}) except after the last, then chLN, SiLU, conv3^3(ch_last -> out).

    ``use_fp16`` stores the torso convs (``middle_block``, ``blocks``) in fp16 as the original does (its norms stay
    fp32) and runs the torso in fp16; pass False to run everything in fp32 (e.g. on CPU). Loading a checkpoint casts
    its tensors to the module's dtypes either way."""

    def __init__(self, out_channels: int = 1, latent_channels: int = 8, num_res_blocks: int = 2,
                 num_res_blocks_middle: int = 2, channels: Sequence[int] = (512, 128, 32),
                 use_fp16: bool = False) -> None:
        super().__init__()
        channels = list(channels)
        self.input_layer = nn.Conv3d(latent_channels, channels[0], 3, padding=1)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0]) for _ in range(num_res_blocks_middle)])
        self.blocks = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch) for _ in range(num_res_blocks))
            if i < len(channels) - 1:
                self.blocks.append(UpsampleBlock3d(ch, channels[i + 1]))
        self.out_layer = nn.Sequential(ChannelLayerNorm3d(channels[-1]), nn.SiLU(),
                                       nn.Conv3d(channels[-1], out_channels, 3, padding=1))
        self.torso_dtype = torch.float32
        if use_fp16:
            self.set_torso_dtype(torch.float16)

    def set_torso_dtype(self, dtype: torch.dtype) -> None:
        """Cast the torso convs (not the norms, input or output layers) to ``dtype`` and run the torso in it."""
        for module in (*self.middle_block.modules(), *self.blocks.modules()):
            if isinstance(module, nn.Conv3d):
                module.to(dtype)
        self.torso_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.input_layer(x).to(self.torso_dtype)
        h = self.middle_block(h)
        for block in self.blocks:
            h = block(h)
        return self.out_layer(h.to(x.dtype))


def occupancy_coords(logits: torch.Tensor) -> torch.Tensor:
    """[B, 1, X, Y, Z] logits -> [N, 4] int32 (b, x, y, z) of the voxels with logit > 0 (strict), in lexicographic
    order (SPEC 5, quirk 9): this order fixes the SLat noise rows and the order of every Gaussian."""
    if logits.dim() != 5 or logits.shape[1] != 1:
        raise ValueError(f"expected logits [B, 1, X, Y, Z], got {tuple(logits.shape)}")
    return torch.argwhere(logits[:, 0] > 0).to(torch.int32)
