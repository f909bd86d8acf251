"""Sizes of the SyncDreamer network (full and tiny) and the run options that trade speed for memory.

`SyncDreamerConfig.full()` is `configs/syncdreamer.yaml` of liuyuan-pal/SyncDreamer (the
published checkpoint); `SyncDreamerConfig.tiny()` is the seeded test model of
`../shared/syncdreamer/golden/tiny_config.json` (same graph, small widths).
Everything else the original hard-codes (16 views, 256-d time embedding, 32^3 volume ...)
is a module-level constant here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..cameras import SYNCDREAMER_RING

# Constants the original code hard-codes (SYNCDREAMER_SPEC.md section 8).
VIEW_NUM = len(SYNCDREAMER_RING.azimuths)  # target views
TIME_EMBED_DIM = 256                # volume-net time embedding
VIEWPOINT_DIM = 4                   # [d_elevation, sin d_azimuth, cos d_azimuth, 0]
TARGET_ENCODER_DIM = 16             # NoisyTargetViewEncoder run/output channels
SPATIAL_VOLUME_SIZE = 32            # voxels per axis
SPATIAL_VOLUME_LENGTH = 0.5         # the volume spans [-0.5, 0.5]^3
FRUSTUM_DEPTH = 48                  # depth planes per target frustum
FRUSTUM_LENGTH = 0.86603            # half depth range of a frustum (sqrt(3)/2, as typed in the original)
ORIGIN_DEPTH = 1.5                  # camera distance to the origin
VOLUME_IMAGE_SIZE = 256             # SpatialVolumeNet.input_image_size (not tied to image_size)
LATENT_SCALE = 0.18215              # SD-1.x VAE latent scale factor
CLIP_EMBED_DIM = 768                # CLIP image embedding / UNet context width
TARGET_ELEVATION_DEG = SYNCDREAMER_RING.elevation  # elevation of the 16 target views
NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 0.00085, 0.012   # "scaled linear" schedule
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLIP_INPUT_SIZE = 224


@dataclass(frozen=True)
class UNetConfig:
    """`DepthWiseAttention` (SD-1.x UNet + depth-wise attention) hyper-parameters."""

    in_channels: int = 8
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (4, 2, 1)
    num_heads: int = 8
    transformer_depth: int = 1
    context_dim: int = CLIP_EMBED_DIM
    volume_dims: tuple[int, int, int, int] = (64, 128, 256, 512)


@dataclass(frozen=True)
class VAEConfig:
    """LDM `AutoencoderKL` (KL-f8) hyper-parameters."""

    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = ()
    z_channels: int = 4
    embed_dim: int = 4
    resolution: int = 256
    in_channels: int = 3
    out_ch: int = 3


@dataclass(frozen=True)
class CLIPConfig:
    """OpenAI CLIP: the ViT image tower that is used, and the text leftovers kept for the state dict."""

    image_size: int = CLIP_INPUT_SIZE
    patch_size: int = 14
    width: int = 1024
    layers: int = 24
    heads: int = 16
    output_dim: int = CLIP_EMBED_DIM
    # Unused text-side parameters that stay in the original state dict (the text transformer is deleted).
    context_length: int = 77
    vocab_size: int = 49408
    text_width: int = 768


@dataclass(frozen=True)
class VolumeConfig:
    """Channel widths of the two 3D networks (`SpatialTime3DNet`, `FrustumTV3DNet`)."""

    spatial_dims: tuple[int, int, int, int] = (64, 128, 256, 512)
    frustum_dims: tuple[int, int, int, int] = (64, 128, 256, 512)


@dataclass(frozen=True)
class SyncDreamerConfig:
    """The whole model; `validate()` checks the constraints the original code assumes silently."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    clip: CLIPConfig = field(default_factory=CLIPConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    image_size: int = 256

    @property
    def latent_size(self) -> int:
        """Side of the latent images (VAE factor 8)."""
        return self.image_size // 8

    @classmethod
    def full(cls) -> SyncDreamerConfig:
        """The published model (`configs/syncdreamer.yaml`)."""
        return cls()

    @classmethod
    def tiny(cls) -> SyncDreamerConfig:
        """The golden test model (`golden/tiny_config.json`); its CLIP tower is a tiny random stand-in."""
        return cls(
            unet=UNetConfig(model_channels=32, channel_mult=(1, 1, 2, 2), num_heads=4, volume_dims=(8, 16, 24, 32)),
            vae=VAEConfig(ch=32, ch_mult=(1, 1, 2, 2)),
            clip=CLIPConfig(patch_size=32, width=64, layers=1, heads=2, context_length=8, vocab_size=16,
                            text_width=32),
            volume=VolumeConfig(spatial_dims=(8, 16, 24, 32), frustum_dims=(8, 16, 24, 32)),
        )

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (for ``syncdreamer/config.json``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SyncDreamerConfig:
        """Build from `to_dict` output (lists become tuples; missing keys keep the published sizes).

        Raises:
            ValueError: unknown keys, or sizes that cannot form the graph.
        """
        parts = {"unet": UNetConfig, "vae": VAEConfig, "clip": CLIPConfig, "volume": VolumeConfig}
        unknown = set(data) - set(parts) - {"image_size"}
        if unknown:
            raise ValueError(f"unknown SyncDreamer config keys {sorted(unknown)}; known: {sorted(parts)}, image_size")
        kwargs: dict = {k: v for k, v in data.items() if k == "image_size"}
        for name, part in parts.items():
            values = data.get(name, {})
            known = {f.name for f in dataclasses.fields(part)}
            if set(values) - known:
                raise ValueError(f"unknown keys {sorted(set(values) - known)} in SyncDreamer config `{name}`")
            kwargs[name] = part(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ValueError when the sizes cannot form the original graph."""
        u = self.unet
        if len(u.channel_mult) != 4 or u.channel_mult[2] != u.channel_mult[3]:
            raise ValueError(f"`unet.channel_mult` must have 4 entries with [2] == [3], got {u.channel_mult}")
        if tuple(u.volume_dims) != tuple(self.volume.frustum_dims):
            raise ValueError(f"`unet.volume_dims` must equal `volume.frustum_dims`, got {u.volume_dims} "
                             f"and {self.volume.frustum_dims}")
        if any(d % 2 or d % 8 for d in u.volume_dims):
            raise ValueError(f"`unet.volume_dims` must be multiples of 8, got {u.volume_dims}")
        if self.image_size != 256:
            raise ValueError(f"`image_size` must be 256 (the cameras' K), got {self.image_size}")
        if self.clip.output_dim != CLIP_EMBED_DIM or u.context_dim != CLIP_EMBED_DIM:
            raise ValueError(f"CLIP `output_dim` and `unet.context_dim` must be {CLIP_EMBED_DIM}")


@dataclass(frozen=True)
class RunOptions:
    """How to run (never what is computed): precision, view batching, compile, memory mode.

    Attributes:
        precision: "auto" (bf16 autocast on CUDA, fp32 on CPU), "fp32" (the exact reference path),
            "bf16" or "fp16" (autocast; GroupNorm/softmax stay fp32 under autocast).
        batch_view_num: target views per UNet call (the CFG batch is twice that), 1..16, or "auto"
            (from free VRAM on CUDA, see `speed.auto_batch_view_num`; 16 on CPU).
        compile_unet: wrap the UNet in `torch.compile` (CUDA only; first call compiles for minutes).
        low_memory: keep CLIP and the VAE on the CPU and move each to the GPU only while it runs,
            decode one view at a time, and cap `batch_view_num` at `low_memory_batch_view_num`.
        low_memory_batch_view_num: the view chunk used in low-memory mode when batch_view_num is "auto".
    """

    precision: str = "auto"
    batch_view_num: int | str = "auto"
    compile_unet: bool = False
    low_memory: bool = False
    low_memory_batch_view_num: int = 2

    def validate(self) -> None:
        """Raise ValueError naming the bad option."""
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"`precision` must be one of auto, fp32, bf16, fp16, got {self.precision!r}")
        bvn = self.batch_view_num
        if bvn != "auto" and not (isinstance(bvn, int) and not isinstance(bvn, bool) and 1 <= bvn <= VIEW_NUM):
            raise ValueError(f"`batch_view_num` must be 'auto' or an integer 1..{VIEW_NUM}, got {bvn!r}")
        if not 1 <= self.low_memory_batch_view_num <= VIEW_NUM:
            raise ValueError(f"`low_memory_batch_view_num` must be 1..{VIEW_NUM}, "
                             f"got {self.low_memory_batch_view_num!r}")
