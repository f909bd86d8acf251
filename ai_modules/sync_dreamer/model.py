"""`SyncDreamerModel`: the top-level module whose `state_dict()` is the published checkpoint's.

Mirrors `SyncMultiviewDiffusion` (inference parts only): schedule and camera buffers, the
volume time MLP, the VAE, the CLIP image tower, `cc_projection`, the spatial volume nets and the
UNet wrapper, registered in the original order so even the key order matches.
The methods are the steps of SYNCDREAMER_SPEC.md section 4; `denoise` runs them for one DDIM step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .cameras import camera16
from .clip import CLIPImageEncoder
from .config import (CLIP_EMBED_DIM, LATENT_SCALE, TARGET_ELEVATION_DEG, TIME_EMBED_DIM, VIEW_NUM, VIEWPOINT_DIM,
                     SyncDreamerConfig)
from .sampler import training_schedule
from .unet import UNetWrapper, timestep_embedding
from .vae import AutoencoderKL
from .volume import SpatialVolumeNet

# Called per view chunk: (chunk views [TN] int64, conditional context [B*TN,1,768],
# frustum features {w: [B*TN,...]}, concat latent [B*TN,4,h,w]). Used by tests to record intermediates.
ChunkHook = Callable[[torch.Tensor, torch.Tensor, dict[int, torch.Tensor], torch.Tensor], None]


class SyncDreamerModel(nn.Module):
    """SyncDreamer's network (`SyncMultiviewDiffusion`), checkpoint-compatible.

    Args:
        config: sizes; `SyncDreamerConfig.full()` for the published checkpoint.
    """

    def __init__(self, config: SyncDreamerConfig | None = None) -> None:
        super().__init__()
        self.config = config = SyncDreamerConfig.full() if config is None else config
        config.validate()
        for name, value in training_schedule().items():
            self.register_buffer(name, value)
        poses, ks, azimuth = camera16()
        self.register_buffer("poses", poses)
        self.register_buffer("Ks", ks)
        self.register_buffer("azimuth", azimuth)
        self.time_embed = nn.Sequential(nn.Linear(TIME_EMBED_DIM, TIME_EMBED_DIM), nn.SiLU(True),
                                        nn.Linear(TIME_EMBED_DIM, TIME_EMBED_DIM))
        self.first_stage_model = AutoencoderKL(config.vae)
        self.clip_image_encoder = CLIPImageEncoder(config.clip)
        self.cc_projection = nn.Linear(CLIP_EMBED_DIM + VIEWPOINT_DIM, CLIP_EMBED_DIM)
        with torch.no_grad():   # identity on the CLIP part, as the original initialises it
            self.cc_projection.weight.zero_()
            self.cc_projection.weight[:, :CLIP_EMBED_DIM] = torch.eye(CLIP_EMBED_DIM, device=self.azimuth.device)
            self.cc_projection.bias.zero_()
        self.spatial_volume = SpatialVolumeNet(config.volume)
        self.model = UNetWrapper(config.unet)

    # --- conditioning -------------------------------------------------------------------------

    def encode_posterior(self, image_nchw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VAE posterior of the input image [B,3,256,256] in [-1,1]: (mean, clamped logvar), each [B,4,32,32]."""
        return self.first_stage_model.encode(image_nchw)

    def encode_input_latent(self, image_nchw: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """`x_input` [B,4,32,32] = (mean + exp(0.5 logvar) * eps) * 0.18215: a posterior *sample*, as the original."""
        mean, logvar = self.encode_posterior(image_nchw)
        return (mean + torch.exp(0.5 * logvar) * eps.to(mean)) * LATENT_SCALE

    def encode_clip(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP embedding [B,1,768] of CLIP-normalised pixels [B,3,224,224]."""
        return self.clip_image_encoder(pixels)

    def viewpoint_embedding(self, batch_size: int, elevation: torch.Tensor) -> torch.Tensor:
        """[B,16,4] = [elev - 30 deg, sin(az_n - az_0), cos(az_n - az_0), 0] (zero123's relative camera).

        Args:
            elevation: [B] input elevation in radians.
        """
        elevation_input = -elevation
        elevation_target = -math.radians(TARGET_ELEVATION_DEG)
        d_e = (elevation_target - elevation_input)[:, None].expand(batch_size, self.azimuth.shape[0])
        d_a = (self.azimuth - self.azimuth[0:1])[None].expand(batch_size, -1)
        return torch.stack([d_e, torch.sin(d_a), torch.cos(d_a), torch.zeros_like(d_a)], -1)

    def embed_time(self, t: torch.Tensor) -> torch.Tensor:
        """Volume-net time embedding [B,256] of integer timesteps [B]."""
        return self.time_embed(timestep_embedding(t, TIME_EMBED_DIM).to(self.time_embed[0].weight.dtype))

    def target_view_feats(self, x_input: torch.Tensor, spatial_volume: torch.Tensor, clip_embed: torch.Tensor,
                          t_embed: torch.Tensor, v_embed: torch.Tensor, target_indices: torch.Tensor,
                          ) -> tuple[torch.Tensor, dict[int, torch.Tensor], torch.Tensor]:
        """Conditions of one chunk of target views (`get_target_view_feats`), sample-major [B*TN,...].

        Returns:
            context [B*TN,1,768] (= cc_projection([clip, v_embed])), frustum features {w: ...},
            x_concat [B*TN,4,32,32] (x_input repeated, still scaled by 0.18215).
        """
        b = x_input.shape[0]
        tn = target_indices.shape[0]
        feats = self.spatial_volume.construct_view_frustum_volume(spatial_volume, t_embed, v_embed, self.poses,
                                                                  self.Ks, target_indices)
        v_ = v_embed[:, target_indices].reshape(b * tn, 1, VIEWPOINT_DIM)
        clip_ = clip_embed[:, None].expand(b, tn, 1, CLIP_EMBED_DIM).reshape(b * tn, 1, CLIP_EMBED_DIM)
        context = self.cc_projection(torch.cat([clip_, v_.to(clip_.dtype)], -1))
        x_concat = x_input[:, None].expand(b, tn, *x_input.shape[1:]).reshape(b * tn, *x_input.shape[1:])
        return context, feats, x_concat

    # --- one denoising step -------------------------------------------------------------------

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, x_input: torch.Tensor, clip_embed: torch.Tensor,
                elevation: torch.Tensor, cfg_scale: float = 2.0, batch_view_num: int = VIEW_NUM,
                unet: Callable[..., torch.Tensor] | None = None, chunk_hook: ChunkHook | None = None,
                ) -> torch.Tensor:
        """Predicted noise of all views for one step, with classifier-free guidance (`denoise_apply`).

        Args:
            x_t: [B,16,4,32,32] noisy latents; t: [B] int64 (same value for all samples);
            x_input: [B,4,32,32]; clip_embed: [B,1,768]; elevation: [B] radians;
            cfg_scale: guidance scale (1 = conditional only); batch_view_num: views per UNet call;
            unet: the UNet wrapper to call (default `self.model`; e.g. a compiled one);
            chunk_hook: called with each chunk's conditions (tests record intermediates with it).

        Returns:
            eps [B,16,4,32,32].
        """
        b, n = x_t.shape[:2]
        unet = self.model if unet is None else unet
        device_type = x_t.device.type
        # The conditions (embeddings, both 3D volume nets, cc_projection) always run in fp32: under
        # bf16 autocast the volume nets are the numerically sensitive part (on the tiny golden model
        # they make up most of the bf16-vs-fp32 difference) and only ~7% of a step's FLOPs.
        with torch.autocast(device_type, enabled=False):
            x_t, x_input, clip_embed = x_t.float(), x_input.float(), clip_embed.float()
            v_embed = self.viewpoint_embedding(b, elevation.float())
            t_embed = self.embed_time(t)
            spatial_volume = self.spatial_volume.construct_spatial_volume(x_t, t_embed, v_embed, self.poses, self.Ks)
        views = torch.arange(n, device=x_t.device)
        eps = []
        for start in range(0, n, batch_view_num):
            indices = views[start:start + batch_view_num]
            tn = indices.shape[0]
            with torch.autocast(device_type, enabled=False):
                context, feats, x_concat = self.target_view_feats(x_input, spatial_volume, clip_embed, t_embed,
                                                                  v_embed, indices)
            if chunk_hook is not None:
                chunk_hook(indices, context, feats, x_concat)
            x_chunk = x_t[:, start:start + tn].reshape(b * tn, *x_t.shape[2:])
            t_chunk = t[:, None].expand(b, tn).reshape(b * tn)
            out = unet(x_chunk, t_chunk, context, feats, x_concat, cfg_scale)
            eps.append(out.reshape(b, tn, *out.shape[1:]).to(x_t.dtype))
        return torch.cat(eps, 1)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents [B,4,32,32] -> images [B,3,256,256] (raw, unclamped).

        Multiplies by the reciprocal 1/0.18215 as the original (dividing differs by ~4e-6 after the decoder).
        """
        return self.first_stage_model.decode(1.0 / LATENT_SCALE * latents)
