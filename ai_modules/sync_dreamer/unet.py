"""SyncDreamer's denoiser: the SD-1.x `UNetModel` plus depth-wise attention (`DepthWiseAttention`).

Hand-written (not diffusers' `UNet2DConditionModel`) so that parameter names are the original
`ldm` ones (`input_blocks.1.0.in_layers.0.weight`, `middle_conditions.proj_in.0.weight` ...) and
the published checkpoint loads with `strict=True`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .attention import DepthTransformer, SpatialTransformer
from .config import LATENT_SCALE, UNetConfig


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    """Sinusoidal embedding [B,dim] of integer timesteps [B], ordered [cos, sin] (ldm's `timestep_embedding`)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
                      / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class GroupNorm32(nn.GroupNorm):
    """GroupNorm evaluated in float32 and cast back (ldm's `normalization`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _normalization(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


class ResBlock(nn.Module):
    """`in_layers` (GN, SiLU, conv) + `emb_layers` (SiLU, Linear) -> `out_layers` (GN, SiLU, dropout, conv) + skip."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(_normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, 1, 1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(_normalization(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, 1, 1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).type(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """3x3 conv stride 2 (`op`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv (`conv`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# Output block index -> output_conditions index (blocks 0..2 get none), as DepthWiseAttention.output_b2c.
OUTPUT_B2C = {3: 0, 4: 1, 5: 2, 6: 3, 7: 4, 8: 5, 9: 6, 10: 7, 11: 8}


class TimestepEmbedSequential(nn.Sequential):
    """Passes the time embedding to ResBlocks and the context to SpatialTransformers."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor,  # type: ignore[override]
                context: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x


class DepthWiseUNet(nn.Module):
    """`DepthWiseAttention`: the SD-1.x UNet whose middle and output blocks 3..11 attend into the frustum volume.

    Forward inputs: `x` [B,8,32,32] (4 noisy + 4 concat channels), `timesteps` [B] int64,
    `context` [B,1,768], `source_dict` {width: [B,C_w,D_w,w,w]} (widths 32/16/8/4).
    """

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        mc, mult = cfg.model_channels, tuple(cfg.channel_mult)
        self.model_channels = mc
        emb_dim = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        def transformer(ch: int) -> SpatialTransformer:
            return SpatialTransformer(ch, cfg.num_heads, ch // cfg.num_heads, cfg.transformer_depth, cfg.context_dim)

        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(cfg.in_channels, mc, 3, 1, 1))])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, m * mc)]
                ch = m * mc
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(TimestepEmbedSequential(Downsample(ch)))
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(ResBlock(ch, emb_dim, ch), transformer(ch),
                                                    ResBlock(ch, emb_dim, ch))
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), emb_dim, mc * m)]
                ch = mc * m
                if ds in cfg.attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(_normalization(ch), nn.SiLU(), nn.Conv2d(mc, cfg.out_channels, 3, 1, 1))

        d0, d1, d2, d3 = cfg.volume_dims
        c0, c1, c2 = mc * mult[0], mc * mult[1], mc * mult[2]
        self.middle_conditions = DepthTransformer(c2, 4, d3 // 2, context_dim=d3)
        # (UNet channels, volume channels) of output_conditions 0..8, as DepthWiseAttention.__init__.
        pairs = [(c2, d2), (c2, d2), (c2, d1), (c1, d1), (c1, d1), (c1, d0), (c0, d0), (c0, d0), (c0, d0)]
        self.output_conditions = nn.ModuleList(DepthTransformer(c, 4, d // 2, context_dim=d) for c, d in pairs)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
                source_dict: dict[int, torch.Tensor]) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))
        hs = []
        h = x
        for module in self.input_blocks:
            h = module(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        h = self.middle_conditions(h, source_dict[h.shape[-1]])
        for index, module in enumerate(self.output_blocks):
            h = module(torch.cat([h, hs.pop()], dim=1), emb, context)
            if index in OUTPUT_B2C:
                h = self.output_conditions[OUTPUT_B2C[index]](h, source_dict[h.shape[-1]])
        return self.out(h.type(x.dtype))


def cfg_batch(x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, volume_feats: dict[int, torch.Tensor],
              x_concat: torch.Tensor, guided: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                             dict[int, torch.Tensor]]:
    """The UNet inputs of one view chunk: [conditional ; unconditional] when `guided`, else conditional only.

    The unconditional half zeroes all three conditions (context after `cc_projection`, every frustum
    level, the concat latent). The concat latent is divided by 0.18215 (zero123's quirk) and
    appended to the noisy latent as channels 4..7.

    Args:
        x: [n,4,h,w] noisy latents; t: [n] int64; context: [n,1,768]; volume_feats: {w: [n,C,D,w,w]};
        x_concat: [n,4,h,w] the input-view latent (scaled by 0.18215); guided: cfg_scale != 1.

    Returns:
        (unet_input [m,8,h,w], timesteps [m], context [m,1,768], source_dict) with m = 2n or n.
    """
    if guided:
        x = torch.cat([x, x], 0)
        t = torch.cat([t, t], 0)
        context = torch.cat([context, torch.zeros_like(context)], 0)
        volume_feats = {k: torch.cat([v, torch.zeros_like(v)], 0) for k, v in volume_feats.items()}
        x_concat = torch.cat([x_concat, torch.zeros_like(x_concat)], 0)
    else:
        x_concat = x_concat * 1.0
    x_concat[:, :4] = x_concat[:, :4] / LATENT_SCALE
    return torch.cat([x, x_concat], 1), t, context, volume_feats


class UNetWrapper(nn.Module):
    """`model`: holds `diffusion_model` and runs one chunk with or without classifier-free guidance."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.diffusion_model = DepthWiseUNet(cfg)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor, volume_feats: dict[int, torch.Tensor],
                x_concat: torch.Tensor, cfg_scale: float = 1.0) -> torch.Tensor:
        """Predicted noise [n,4,h,w]: `eps_uc + cfg_scale * (eps_c - eps_uc)`, or eps_c when cfg_scale == 1."""
        guided = cfg_scale != 1.0
        unet_in, t_in, ctx_in, vol_in = cfg_batch(x, t, context, volume_feats, x_concat, guided)
        out = self.diffusion_model(unet_in, t_in, ctx_in, vol_in)
        if not guided:
            return out
        eps_c, eps_uc = out.chunk(2)
        return eps_uc + cfg_scale * (eps_c - eps_uc)
