"""SyncDreamer's 3D feature volumes (`sync_dreamer_network.py`, `SpatialVolumeNet`).

Per denoising step: every noisy target view is encoded (`NoisyTargetViewEncoder`), unprojected
into one 32^3 spatial volume over [-0.5, 0.5]^3 and refined by `SpatialTime3DNet`; then for each
target view a 48x32x32 frustum is resampled from it and refined by `FrustumTV3DNet`, whose four
levels condition the UNet's depth-wise attention (SYNCDREAMER_SPEC.md section 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .cameras import projection_matrices
from .config import (FRUSTUM_DEPTH, FRUSTUM_LENGTH, ORIGIN_DEPTH, SPATIAL_VOLUME_LENGTH, SPATIAL_VOLUME_SIZE,
                     TARGET_ENCODER_DIM, TIME_EMBED_DIM, VIEW_NUM, VIEWPOINT_DIM, VOLUME_IMAGE_SIZE, VolumeConfig)


class Image2DResBlockWithTV(nn.Module):
    """`x + conv(x + Wt t + Wv v)` with conv = GN8, SiLU, 3x3, GN8, SiLU, 3x3."""

    def __init__(self, dim: int, tdim: int, vdim: int) -> None:
        super().__init__()
        self.time_embed = nn.Conv2d(tdim, dim, 1, 1)
        self.view_embed = nn.Conv2d(vdim, dim, 1, 1)
        self.conv = nn.Sequential(nn.GroupNorm(8, dim), nn.SiLU(True), nn.Conv2d(dim, dim, 3, 1, 1),
                                  nn.GroupNorm(8, dim), nn.SiLU(True), nn.Conv2d(dim, dim, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x + self.time_embed(t) + self.view_embed(v))


class NoisyTargetViewEncoder(nn.Module):
    """Noisy latent [B,4,h,w] + time [B,256] + view [B,4] -> features [B,16,h,w]."""

    def __init__(self, time_dim: int, view_dim: int, run_dim: int = 16, output_dim: int = 16) -> None:
        super().__init__()
        self.init_conv = nn.Conv2d(4, run_dim, 3, 1, 1)
        self.out_conv0 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.out_conv1 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.out_conv2 = Image2DResBlockWithTV(run_dim, time_dim, view_dim)
        self.final_out = nn.Sequential(nn.GroupNorm(8, run_dim), nn.SiLU(True), nn.Conv2d(run_dim, output_dim, 3, 1, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        t = t[:, :, None, None]
        v = v[:, :, None, None]
        x = self.init_conv(x)
        x = self.out_conv0(x, t, v)
        x = self.out_conv1(x, t, v)
        x = self.out_conv2(x, t, v)
        return self.final_out(x)


class SpatialTimeBlock(nn.Module):
    """Pre-activation 3D block `conv(SiLU(GN8(x + Wt t)))` (no residual), `bn` is a GroupNorm."""

    def __init__(self, x_dim: int, t_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.bn = nn.GroupNorm(8, x_dim)
        self.silu = nn.SiLU(True)
        self.conv = nn.Conv3d(x_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.bn(x + self.t_conv(t))))


class SpatialUpTimeBlock(nn.Module):
    """Same pre-activation with a stride-2 transposed conv (`norm` is the GroupNorm)."""

    def __init__(self, x_dim: int, t_dim: int, out_dim: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.norm = nn.GroupNorm(8, x_dim)
        self.silu = nn.SiLU(True)
        self.conv = nn.ConvTranspose3d(x_dim, out_dim, kernel_size=3, padding=1, output_padding=1, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.norm(x + self.t_conv(t))))


class SpatialTime3DNet(nn.Module):
    """3D U-Net over the spatial volume: [B,256,32^3] + time [B,256] -> [B,dims[0],32^3]."""

    def __init__(self, time_dim: int, input_dim: int, dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        d0, d1, d2, d3 = dims
        dt = time_dim
        self.init_conv = nn.Conv3d(input_dim, d0, 3, 1, 1)
        self.conv0 = SpatialTimeBlock(d0, dt, d0, stride=1)
        self.conv1 = SpatialTimeBlock(d0, dt, d1, stride=2)
        self.conv2_0 = SpatialTimeBlock(d1, dt, d1, stride=1)
        self.conv2_1 = SpatialTimeBlock(d1, dt, d1, stride=1)
        self.conv3 = SpatialTimeBlock(d1, dt, d2, stride=2)
        self.conv4_0 = SpatialTimeBlock(d2, dt, d2, stride=1)
        self.conv4_1 = SpatialTimeBlock(d2, dt, d2, stride=1)
        self.conv5 = SpatialTimeBlock(d2, dt, d3, stride=2)
        self.conv6_0 = SpatialTimeBlock(d3, dt, d3, stride=1)
        self.conv6_1 = SpatialTimeBlock(d3, dt, d3, stride=1)
        self.conv7 = SpatialUpTimeBlock(d3, dt, d2)
        self.conv8 = SpatialUpTimeBlock(d2, dt, d1)
        self.conv9 = SpatialUpTimeBlock(d1, dt, d0)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t[:, :, None, None, None]
        x = self.init_conv(x)
        conv0 = self.conv0(x, t)
        x = self.conv1(conv0, t)
        x = self.conv2_0(x, t)
        conv2 = self.conv2_1(x, t)
        x = self.conv3(conv2, t)
        x = self.conv4_0(x, t)
        conv4 = self.conv4_1(x, t)
        x = self.conv5(conv4, t)
        x = self.conv6_0(x, t)
        x = self.conv6_1(x, t)
        x = conv4 + self.conv7(x, t)
        x = conv2 + self.conv8(x, t)
        return conv0 + self.conv9(x, t)


class FrustumTVBlock(nn.Module):
    """Pre-activation 3D block `conv(SiLU(GN8(x + Wt t + Wv v)))`."""

    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.bn = nn.GroupNorm(8, x_dim)
        self.silu = nn.SiLU(True)
        self.conv = nn.Conv3d(x_dim, out_dim, 3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.bn(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTVUpBlock(nn.Module):
    """Same pre-activation with a stride-2 transposed conv."""

    def __init__(self, x_dim: int, t_dim: int, v_dim: int, out_dim: int) -> None:
        super().__init__()
        self.t_conv = nn.Conv3d(t_dim, x_dim, 1, 1)
        self.v_conv = nn.Conv3d(v_dim, x_dim, 1, 1)
        self.norm = nn.GroupNorm(8, x_dim)
        self.silu = nn.SiLU(True)
        self.conv = nn.ConvTranspose3d(x_dim, out_dim, kernel_size=3, padding=1, output_padding=1, stride=2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.conv(self.silu(self.norm(x + self.t_conv(t) + self.v_conv(v))))


class FrustumTV3DNet(nn.Module):
    """Frustum volume [n,C,48,32,32] -> {32: [n,d0,48,32,32], 16: [n,d1,24,16,16], 8: ..., 4: ...}."""

    def __init__(self, in_dim: int, t_dim: int, v_dim: int, dims: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.conv0 = nn.Conv3d(in_dim, dims[0], 3, 1, 1)
        self.conv1 = FrustumTVBlock(dims[0], t_dim, v_dim, dims[1], 2)
        self.conv2 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[1], 1)
        self.conv3 = FrustumTVBlock(dims[1], t_dim, v_dim, dims[2], 2)
        self.conv4 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[2], 1)
        self.conv5 = FrustumTVBlock(dims[2], t_dim, v_dim, dims[3], 2)
        self.conv6 = FrustumTVBlock(dims[3], t_dim, v_dim, dims[3], 1)
        self.up0 = FrustumTVUpBlock(dims[3], t_dim, v_dim, dims[2])
        self.up1 = FrustumTVUpBlock(dims[2], t_dim, v_dim, dims[1])
        self.up2 = FrustumTVUpBlock(dims[1], t_dim, v_dim, dims[0])

    def forward(self, x: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> dict[int, torch.Tensor]:
        t = t[:, :, None, None, None]
        v = v[:, :, None, None, None]
        w = x.shape[-1]
        x0 = self.conv0(x)
        x1 = self.conv2(self.conv1(x0, t, v), t, v)
        x2 = self.conv4(self.conv3(x1, t, v), t, v)
        x3 = self.conv6(self.conv5(x2, t, v), t, v)
        x2 = self.up0(x3, t, v) + x2
        x1 = self.up1(x2, t, v) + x1
        x0 = self.up2(x1, t, v) + x0
        return {w: x0, w // 2: x1, w // 4: x2, w // 8: x3}


def spatial_volume_points(device: torch.device | str = "cpu") -> torch.Tensor:
    """World coordinates of the 32^3 voxel centres, [3, z, y, x] (voxel (i,j,k) at (lin[k], lin[j], lin[i]))."""
    v = SPATIAL_VOLUME_SIZE
    lin = torch.linspace(-SPATIAL_VOLUME_LENGTH, SPATIAL_VOLUME_LENGTH, v, dtype=torch.float32, device=device)
    pts = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(v ** 3, 3)[:, (2, 1, 0)]
    return pts.reshape(v, v, v, 3).permute(3, 0, 1, 2)


def spatial_warp_grid(points: torch.Tensor, ks: torch.Tensor, poses: torch.Tensor, feature_size: int) -> torch.Tensor:
    """Normalised (u, v) of world points in each view, align-corners convention.

    Args:
        points: [3,M] world points; ks: [n,3,3]; poses: [n,3,4]; feature_size: side of the feature map.

    Returns:
        [n,M,2]; depths below 1e-4 are clamped to 1e-4 before the divide (the original's quirk).
    """
    proj = projection_matrices(ks, poses, feature_size / VOLUME_IMAGE_SIZE)
    grid = proj[:, :3, :3] @ points[None] + proj[:, :3, 3:]
    depth = grid[:, 2:].clamp_min(1e-4)
    uv = grid[:, :2] / depth
    uv = uv / ((feature_size - 1) / 2) - 1
    return uv.permute(0, 2, 1)


def frustum_grid(ks: torch.Tensor, poses: torch.Tensor, size: int = VOLUME_IMAGE_SIZE // 8,
                 depth: int = FRUSTUM_DEPTH) -> torch.Tensor:
    """Normalised sample positions (world / 0.5) of each target view's frustum, [n,D,H,W,3] ordered (x,y,z).

    Pixel (u, v) at depth d (linear in [1.5 - 0.86603, 1.5 + 0.86603]) is unprojected through the
    inverse of the view's 4x4 projection (feature scale size/256), as `create_target_volume`.
    """
    n, dev = ks.shape[0], ks.device
    near = torch.ones(n, 1, size, size, dtype=torch.float32, device=dev) * ORIGIN_DEPTH - FRUSTUM_LENGTH
    far = torch.ones(n, 1, size, size, dtype=torch.float32, device=dev) * ORIGIN_DEPTH + FRUSTUM_LENGTH
    depth_values = torch.linspace(0, 1, steps=depth, dtype=torch.float32, device=dev).view(1, depth, 1, 1)
    depth_values = depth_values * (far - near) + near                                    # [n,D,H,W]
    coords = torch.arange(size, dtype=torch.float32, device=dev)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    pix = torch.stack([xs, ys, torch.ones_like(xs)], 0).reshape(1, 3, size * size).expand(n, -1, -1)
    pts = pix.unsqueeze(2) * depth_values.view(n, 1, depth, size * size)                # [n,3,D,HW]
    inv = torch.inverse(projection_matrices(ks, poses, size / VOLUME_IMAGE_SIZE))
    world = inv[:, :3, :3] @ pts.reshape(n, 3, depth * size * size) + inv[:, :3, 3:]
    world = world.reshape(n, 3, depth, size, size) / SPATIAL_VOLUME_LENGTH
    return world.permute(0, 2, 3, 4, 1)


class SpatialVolumeNet(nn.Module):
    """`spatial_volume`: target encoder + `SpatialTime3DNet` + `FrustumTV3DNet` and the volume geometry."""

    def __init__(self, cfg: VolumeConfig) -> None:
        super().__init__()
        self.target_encoder = NoisyTargetViewEncoder(TIME_EMBED_DIM, VIEWPOINT_DIM, run_dim=TARGET_ENCODER_DIM,
                                                     output_dim=TARGET_ENCODER_DIM)
        self.spatial_volume_feats = SpatialTime3DNet(TIME_EMBED_DIM, TARGET_ENCODER_DIM * VIEW_NUM, cfg.spatial_dims)
        self.frustum_volume_feats = FrustumTV3DNet(cfg.spatial_dims[0], TIME_EMBED_DIM, VIEWPOINT_DIM,
                                                   cfg.frustum_dims)

    def encode_views(self, x: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor) -> torch.Tensor:
        """Target-encoder features of all views: x [B,N,4,h,w], t [B,256], v [B,N,4] -> [B,N,16,h,w]."""
        b, n = x.shape[:2]
        feats = self.target_encoder(x.reshape(b * n, *x.shape[2:]),
                                    t_embed[:, None].expand(b, n, -1).reshape(b * n, -1),
                                    v_embed.reshape(b * n, -1))
        return feats.reshape(b, n, *feats.shape[1:])

    def construct_spatial_volume(self, x: torch.Tensor, t_embed: torch.Tensor, v_embed: torch.Tensor,
                                 poses: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
        """Unproject every view's features into the 32^3 volume and refine it.

        Args:
            x: [B,N,4,h,w] noisy latents of all views; t_embed: [B,256]; v_embed: [B,N,4];
            poses: [N,3,4]; ks: [N,3,3].

        Returns:
            [B,C,32,32,32] spatial volume, layout (C, z, y, x).
        """
        b, n, _, h, w = x.shape
        v = SPATIAL_VOLUME_SIZE
        feats = self.encode_views(x, t_embed, v_embed)                                   # [B,N,16,h,w]
        c = feats.shape[2]
        points = spatial_volume_points(x.device).reshape(3, v ** 3)
        grid = spatial_warp_grid(points, ks, poses, w).reshape(1, n, v, v * v, 2).expand(b, -1, -1, -1, -1)
        unproj = F.grid_sample(feats.reshape(b * n, c, h, w), grid.reshape(b * n, v, v * v, 2).to(feats.dtype),
                               mode="bilinear", padding_mode="zeros", align_corners=True)
        volume = unproj.reshape(b, n * c, v, v, v)                                       # channel = view*16 + c
        return self.spatial_volume_feats(volume, t_embed)

    def construct_view_frustum_volume(self, spatial_volume: torch.Tensor, t_embed: torch.Tensor,
                                      v_embed: torch.Tensor, poses: torch.Tensor, ks: torch.Tensor,
                                      target_indices: torch.Tensor) -> dict[int, torch.Tensor]:
        """Resample the spatial volume in each target view's frustum and refine it.

        Args:
            spatial_volume: [B,C,V,V,V]; t_embed: [B,256]; v_embed: [B,N,4]; poses: [N,3,4]; ks: [N,3,3];
            target_indices: [TN] view indices (the same for every sample).

        Returns:
            {32: [B*TN,d0,48,32,32], 16: ..., 8: ..., 4: ...}, sample-major.
        """
        b, c = spatial_volume.shape[:2]
        tn = target_indices.shape[0]
        grid = frustum_grid(ks[target_indices], poses[target_indices])                    # [TN,D,H,W,3]
        d, h, w = grid.shape[1:4]
        # One grid_sample per sample over all its target frusta (same values as repeating the volume per view).
        grid = grid.reshape(1, tn * d, h, w, 3).expand(b, -1, -1, -1, -1).to(spatial_volume.dtype)
        feats = F.grid_sample(spatial_volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        feats = feats.reshape(b, c, tn, d, h, w).transpose(1, 2).reshape(b * tn, c, d, h, w)
        t_ = t_embed[:, None].expand(b, tn, -1).reshape(b * tn, -1)
        v_ = v_embed[:, target_indices].reshape(b * tn, -1)
        return self.frustum_volume_feats(feats, t_, v_)
