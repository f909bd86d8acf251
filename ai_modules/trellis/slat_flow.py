"""SLatFlowModel: the sparse DiT velocity model over 8 features per occupied voxel (SPEC 6, quirks 11-12).

    x [N, 8] at fine coords -> SparseLinear -> input res blocks (the last one downsamples ×2)
    -> + APE of the coarse coords -> modulated cross blocks (full attention within each sample)
    -> out res blocks on concat[h, skip] (the first one upsamples back) -> LN(no affine, eps 1e-5) -> SparseLinear

State-dict keys equal ``manifest_slat_flow.json`` at the published config (``SLatFlowModel(**config_args)``); the
sparse convs keep spconv's weight layout [out, kx, ky, kz, in] under ``*.conv.weight``. Also `denormalize` (SPEC 6)
and `feature_model`, which adapts the model to the sampler's ``model(feats, t_model, cond)`` interface.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .modules import LayerNorm32, ModulatedCrossBlock, TimestepEmbedder, absolute_position_embedding, linears_to
from .sparse import DownsampleCache, SparseTensor, downsample2, neighbour_map, submanifold_conv3d, upsample2

__all__ = ["SLatFlowModel", "SparseConv3d", "SparseLinear", "SparseModulatedCrossBlock", "SparseResBlock3d",
           "denormalize", "feature_model"]


class _Resampling:
    """Per-forward state shared by the res blocks: the downsample caches (a stack, undone in reverse by the
    upsampling blocks) and one neighbour map per coords tensor (coords objects are reused, so `is` finds them)."""

    def __init__(self) -> None:
        self.caches: list[DownsampleCache] = []
        self._maps: list[tuple[Tensor, Tensor]] = []

    def neighbours(self, coords: Tensor) -> Tensor:
        for c, m in self._maps:
            if c is coords:
                return m
        m = neighbour_map(coords)
        self._maps.append((coords, m))
        return m


class SparseLinear(nn.Linear):
    """nn.Linear on the features of a `SparseTensor` (original ``sp.SparseLinear``; keys ``weight``, ``bias``)."""

    def forward(self, x: SparseTensor) -> SparseTensor:  # type: ignore[override]
        return x.replace(super().forward(x.feats))


class _SubMConv(nn.Module):
    """Holds spconv's ``weight`` [out, 3, 3, 3, in] and ``bias`` [out] (the original's ``conv`` child)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channels, 3, 3, 3, in_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        nn.init.kaiming_uniform_(self.weight.view(out_channels, -1), a=5**0.5)


class SparseConv3d(nn.Module):
    """Submanifold 3³ conv (original ``sp.SparseConv3d`` with stride 1 = spconv ``SubMConv3d``; SPEC 8): output
    sites equal input sites. Keys ``conv.weight`` [out, kx, ky, kz, in] and ``conv.bias``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = _SubMConv(in_channels, out_channels)

    def forward(self, x: SparseTensor, neighbours: Tensor | None = None) -> SparseTensor:
        return submanifold_conv3d(x, self.conv.weight, self.conv.bias, neighbours)


class SparseResBlock3d(nn.Module):
    """The sparse res block of SPEC 6 (quirk 11).

    (scale, shift) = emb_layers(t_emb).chunk(2) (**scale first**); x = resample(x) **first**;
    h = conv1(SiLU(LN_affine(x))); h = SiLU(LN(h)·(1+scale)+shift); out = conv2(h) + skip(x), where skip is a
    SparseLinear when the channels change. LNs have eps 1e-6. The modulation is per sample (row ``coords[:, 0]``).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: int | None = None, downsample: bool = False,
                 upsample: bool = False) -> None:
        super().__init__()
        if downsample and upsample:
            raise ValueError("a res block cannot both downsample and upsample")
        self.channels = channels
        self.out_channels = out_channels or channels
        self.downsample = downsample
        self.upsample = upsample
        self.norm1 = LayerNorm32(channels, elementwise_affine=True, eps=1e-6)
        self.norm2 = LayerNorm32(self.out_channels, elementwise_affine=False, eps=1e-6)
        self.conv1 = SparseConv3d(channels, self.out_channels)
        self.conv2 = SparseConv3d(self.out_channels, self.out_channels)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * self.out_channels, bias=True))
        self.skip_connection: nn.Module = (SparseLinear(channels, self.out_channels) if channels != self.out_channels
                                           else nn.Identity())

    def forward(self, x: SparseTensor, emb: Tensor, state: _Resampling | None = None) -> SparseTensor:
        """x: SparseTensor [N, channels]; emb: t_emb [B, emb_channels]. ``state`` carries the downsample caches
        (an upsampling block needs the one its downsampling partner pushed) and the shared neighbour maps."""
        state = _Resampling() if state is None else state
        emb_out = self.emb_layers(emb).type(x.feats.dtype)
        scale, shift = emb_out.chunk(2, dim=-1)
        if self.downsample:
            x, cache = downsample2(x)
            state.caches.append(cache)
        elif self.upsample:
            if not state.caches:
                raise ValueError("upsampling block without a matching downsample cache")
            x = upsample2(x, state.caches.pop())
        nbr = state.neighbours(x.coords)
        rows = x.batch_index if scale.shape[0] > 1 else slice(None)  # one sample: broadcast, no gather
        h = x.replace(F.silu(self.norm1(x.feats)))
        h = self.conv1(h, nbr)
        h = h.replace(F.silu(self.norm2(h.feats) * (1 + scale[rows]) + shift[rows]))
        h = self.conv2(h, nbr)
        return h.replace(h.feats + self.skip_connection(x).feats)


class SparseModulatedCrossBlock(ModulatedCrossBlock):
    """`ModulatedCrossBlock` on the tokens of each sample (original ``ModulatedSparseTransformerCrossBlock``):
    sample b's voxels attend to each other and to ``cond[b]``, modulated by ``t_emb[b]``. Batch 1 is one plain
    call on [N, C], decided from ``mod``'s batch so that no block waits on the device. Same keys as the dense
    block."""

    def forward(self, x: SparseTensor, mod: Tensor, context: Tensor) -> SparseTensor:  # type: ignore[override]
        if mod.shape[0] == 1:                  # one sample: every voxel is row 0's (coords[:, 0] indexes t and cond)
            return x.replace(super().forward(x.feats, mod[0], context[0]))
        batch = x.batch_index
        if x.num_voxels and bool((batch == batch[0]).all()):
            b = int(batch[0])
            return x.replace(super().forward(x.feats, mod[b], context[b]))
        out = torch.empty_like(x.feats)
        for b in torch.unique(batch).tolist():
            rows = (batch == b).nonzero().squeeze(1)
            out[rows] = super().forward(x.feats[rows], mod[b], context[b])
        return x.replace(out)


class SLatFlowModel(nn.Module):
    """The SLat flow denoiser; ``forward(x, t, cond)`` returns the velocity as a SparseTensor at x's coords/order.

    Arguments are the original constructor's (the manifest's ``config_args``). ``use_fp16`` casts the Linear and
    conv layers of the input, transformer and output blocks to float16 as the original does (norms and QK gammas
    stay float32, quirk 17); features, t_emb and cond are cast to match, the head runs in the input dtype.
    ``use_checkpoint`` is accepted and ignored. Only ``pe_mode='ape'`` (the published config) is implemented.
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: int | None = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: list[int] | None = None, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, use_skip_connection: bool = True, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False) -> None:
        super().__init__()
        if pe_mode != "ape":
            raise NotImplementedError(f"pe_mode {pe_mode!r}: only 'ape' (the published config) is implemented")
        io = list(io_block_channels or [])
        if len(io) != _log2(patch_size):
            raise ValueError(f"need log2(patch_size) = {_log2(patch_size)} io_block_channels, got {io}")
        self.resolution = resolution
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.model_channels = model_channels
        self.patch_size = patch_size
        self.io_block_channels = io
        self.use_skip_connection = use_skip_connection
        self.share_mod = share_mod
        num_heads = num_heads or model_channels // num_head_channels

        self.t_embedder = TimestepEmbedder(model_channels)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(model_channels, 6 * model_channels))
        self.input_layer = SparseLinear(in_channels, io[0] if io else model_channels)
        self.input_blocks = nn.ModuleList()
        for chs, next_chs in zip(io, io[1:] + [model_channels]):
            self.input_blocks.extend(SparseResBlock3d(chs, model_channels, chs) for _ in range(num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(chs, model_channels, next_chs, downsample=True))
        self.blocks = nn.ModuleList([
            SparseModulatedCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio=mlp_ratio,
                                      qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross,
                                      share_mod=share_mod)
            for _ in range(num_blocks)
        ])
        self.out_blocks = nn.ModuleList()
        mult = 2 if use_skip_connection else 1
        for chs, prev_chs in zip(reversed(io), [model_channels] + list(reversed(io[1:]))):
            self.out_blocks.append(SparseResBlock3d(prev_chs * mult, model_channels, chs, upsample=True))
            self.out_blocks.extend(SparseResBlock3d(chs * mult, model_channels, chs)
                                   for _ in range(num_io_res_blocks - 1))
        self.out_layer = SparseLinear(io[0] if io else model_channels, out_channels)
        if use_fp16:
            self.convert_to_fp16()

    def _torso(self) -> list[nn.Module]:
        return [self.input_blocks, self.blocks, self.out_blocks]

    def convert_to_fp16(self) -> None:
        """Cast the torso's Linear and conv layers to float16 (norms and QK gammas stay float32, quirk 17)."""
        for part in self._torso():
            _cast_torso(part, torch.float16)

    def convert_to_fp32(self) -> None:
        """Cast the torso back to float32."""
        for part in self._torso():
            _cast_torso(part, torch.float32)

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the torso runs in (that of its first Linear)."""
        for part in self._torso():
            for m in part.modules():
                if isinstance(m, nn.Linear):
                    return m.weight.dtype
        return self.input_layer.weight.dtype

    def forward(self, x: SparseTensor, t: Tensor, cond: Tensor) -> SparseTensor:
        """x: SparseTensor, feats [N, in] at coords (b, x, y, z) in [0, resolution); t [B] (= 1000·t, quirk 5);
        cond [B, L, cond_channels] -> velocity SparseTensor [N, out], same coords and row order as x."""
        if x.feats.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.feats.shape[1]}")
        dtype = self.torso_dtype
        h = self.input_layer(x)
        h = h.replace(h.feats.type(dtype))
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        t_emb, cond = t_emb.type(dtype), cond.type(dtype)

        state = _Resampling()
        skips = []
        for block in self.input_blocks:
            h = block(h, t_emb, state)
            skips.append(h.feats)
        # APE of the coarse (downsampled) coords, added after the input blocks (quirk 12)
        h = h.replace(h.feats + absolute_position_embedding(h.coords[:, 1:], self.model_channels).type(dtype))
        for block in self.blocks:
            h = block(h, t_emb, cond)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            if self.use_skip_connection:
                h = h.replace(torch.cat([h.feats, skip], dim=1))
            h = block(h, t_emb, state)
        h = h.replace(F.layer_norm(h.feats.type(x.feats.dtype), h.feats.shape[-1:], eps=1e-5))
        return self.out_layer(h)


def feature_model(model: SLatFlowModel, coords: Tensor) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``model`` as the sampler's ``f(feats [N, in], t_model [B], cond) -> velocity feats [N, out]`` over fixed
    ``coords`` [N, 4] (the SLat noise rows are the coords in order, SPEC 6); use with ``batch_size`` = #samples."""

    def velocity(feats: Tensor, t_model: Tensor, cond: Tensor) -> Tensor:
        return model(SparseTensor(coords, feats), t_model, cond).feats

    return velocity


def denormalize(feats: Tensor, mean: Tensor | list[float], std: Tensor | list[float]) -> Tensor:
    """The sampled (normalised) SLat back to the decoder's scale: feats·std + mean per channel (SPEC 6)."""
    mean_t = torch.as_tensor(mean, dtype=feats.dtype, device=feats.device)
    std_t = torch.as_tensor(std, dtype=feats.dtype, device=feats.device)
    return feats * std_t[None] + mean_t[None]


def _cast_torso(module: nn.Module, dtype: torch.dtype) -> None:
    """`linears_to` plus the sparse convs (the original ``convert_module_to_f16`` also covers ``SparseConv3d``)."""
    linears_to(module, dtype)
    for m in module.modules():
        if isinstance(m, _SubMConv):
            m.to(dtype)


def _log2(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise ValueError(f"patch_size must be a power of two, got {n}")
    return n.bit_length() - 1
