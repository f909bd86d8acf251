"""TRELLIS ``SLatGaussianDecoder``: the structured latent (8 features per occupied 64^3 voxel) -> 32 Gaussians per
voxel (SPEC 7, quirks 12-16), then the conversion of those Gaussians into this project's `Gaussians` (`to_world`).

Three steps, each usable on its own:

    SLatGaussianDecoder.forward   SparseTensor [N, 8] -> raw features [N, 448] (a sparse swin transformer)
    raw_to_gaussians              raw [N, 448] + voxel coords -> `TrellisGaussians` (TRELLIS's ``Gaussian`` object:
                                  its raw ``_xyz`` .. ``_opacity`` and its activated ``get_*`` getters)
    to_world                      `TrellisGaussians` -> `ai_modules.gaussians.Gaussians` (log-scales, logits, SH DC)

State-dict keys, shapes and dtypes equal the published checkpoint's (``manifest_gs_decoder.json``; hub
``ckpts/slat_dec_gs_swin8_B_64l8gs32_fp16``), including the persistent buffer ``offset_perturbation`` (quirk 16),
so it loads with ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..gaussians import Gaussians
from ..geometry import yaw_matrix
from .modules import TransformerBlock, absolute_position_embedding, linears_to
from .sparse import SparseTensor, per_sample_attention, windowed_attention

__all__ = ["DEFAULT_REPRESENTATION_CONFIG", "PUBLISHED_CONFIG", "TRELLIS_TO_WORLD_YAW_DEG", "SLatGaussianDecoder",
           "TrellisGaussians", "gaussian_layout", "hammersley_offset_perturbation", "raw_to_gaussians", "to_world"]

# configs/vae/slat_vae_enc_dec_gs_swin8_B_64l8_fp16.json, models.decoder.args ``representation_config``.
DEFAULT_REPRESENTATION_CONFIG: dict = {
    "lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0, "_rotation": 0.1},
    "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32, "2d_filter_kernel_size": 0.1,
    "3d_filter_kernel_size": 9e-4, "scaling_bias": 4e-3, "opacity_bias": 0.1, "scaling_activation": "softplus",
}

# The same file's decoder args (the manifest's ``config_args``).
PUBLISHED_CONFIG: dict = {"resolution": 64, "model_channels": 768, "latent_channels": 8, "num_blocks": 12,
                          "num_heads": 12, "mlp_ratio": 4, "attn_mode": "swin", "window_size": 8, "use_fp16": True,
                          "representation_config": DEFAULT_REPRESENTATION_CONFIG}

# Yaw (degrees, about +Z) that turns TRELLIS's object frame into the world frame; see `to_world`.
TRELLIS_TO_WORLD_YAW_DEG = 90.0

# TRELLIS ``Gaussian(aabb=[-0.5, -0.5, -0.5, 1, 1, 1])``: get_xyz = _xyz * 1 + (-0.5).
_AABB_MIN, _AABB_SIZE = -0.5, 1.0


def gaussian_layout(num_gaussians: int) -> list[tuple[str, tuple[int, ...]]]:
    """The raw channel segments in order, each Gaussian-major with its per-Gaussian shape (SPEC 7):
    [xyz G x 3 | f_dc G x 1 x 3 | scaling G x 3 | rotation G x 4 | opacity G x 1] (G = 32: 448 channels)."""
    g = num_gaussians
    return [("_xyz", (g, 3)), ("_features_dc", (g, 1, 3)), ("_scaling", (g, 3)), ("_rotation", (g, 4)),
            ("_opacity", (g, 1))]


def _radical_inverse(base: int, n: int) -> float:
    """Van der Corput radical inverse of ``n`` in ``base``, in Python floats like the original."""
    val, inv_base = 0.0, 1.0 / base
    inv_base_n = inv_base
    while n > 0:
        digit = n % base
        val += digit * inv_base_n
        n //= base
        inv_base_n *= inv_base
    return val


def hammersley_offset_perturbation(num_gaussians: int, voxel_size: float) -> Tensor:
    """[G, 3] float32 P[g] = atanh((2 h(g) - 1) / voxel_size), h(g) = (g/G, radical inverse base 2, base 3 of g)
    (SPEC 7, quirk 14): added before tanh, it spreads the 32 Gaussians of a voxel over a Hammersley pattern.

    Rounded to float32 first, then (·2 - 1) / voxel_size and atanh in float32, as the original does."""
    points = [[g / num_gaussians, _radical_inverse(2, g), _radical_inverse(3, g)] for g in range(num_gaussians)]
    p = torch.tensor(points, dtype=torch.float32) * 2 - 1
    return torch.atanh(p / voxel_size)


def _f32(value: float) -> Tensor:
    return torch.tensor(value, dtype=torch.float32)


@dataclass(frozen=True, eq=False)
class TrellisGaussians:
    """TRELLIS's ``Gaussian`` object as plain tensors: the raw attributes (names without the leading underscore)
    and the activation constants; the ``get_*`` properties give its activated getters (SPEC 7, quirk 15).

    Rows are voxel-major, then Gaussian index (voxel i owns rows 32 i .. 32 i + 31), in the voxels' row order.
    Frame: TRELLIS's object frame (Z up); ``xyz`` in [0, 1]^3, ``get_xyz`` in [-0.5, 0.5]^3 (plus the 1.5-voxel
    offset reach at the border)."""

    xyz: Tensor          # [N, 3] ``_xyz``: voxel centre + tanh offset, in [0, 1]^3
    features_dc: Tensor  # [N, 1, 3] ``_features_dc``: SH DC coefficient (colour = 0.5 + SH_C0 * dc)
    scaling: Tensor      # [N, 3] ``_scaling``: raw, before the softplus
    rotation: Tensor     # [N, 4] ``_rotation``: 0.1 * raw, (w, x, y, z) before adding (1, 0, 0, 0)
    opacity: Tensor      # [N, 1] ``_opacity``: raw, before the sigmoid
    scale_bias: float = math.nan    # softplus^-1(scaling_bias), float32
    opacity_bias: float = math.nan  # logit(opacity_bias), float32
    min_kernel_size: float = 9e-4   # 3d_filter_kernel_size, combined in quadrature with the scale

    @property
    def num(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def get_xyz(self) -> Tensor:
        """[N, 3] positions in [-0.5, 0.5]^3: ``_xyz * aabb_size + aabb_min``."""
        return self.xyz * _AABB_SIZE + _AABB_MIN

    @property
    def get_features(self) -> Tensor:
        """[N, 1, 3] SH DC (degree 0: there are no higher bands)."""
        return self.features_dc

    @property
    def get_scaling(self) -> Tensor:
        """[N, 3] sqrt(softplus(raw + b)^2 + k^2): never below the 3-D filter size k (quirk 15)."""
        s = F.softplus(self.scaling + self.scale_bias)
        return torch.sqrt(torch.square(s) + self.min_kernel_size ** 2)

    @property
    def get_rotation(self) -> Tensor:
        """[N, 4] unit quaternions (w, x, y, z): normalize(``_rotation`` + (1, 0, 0, 0))."""
        bias = torch.zeros(4, dtype=self.rotation.dtype, device=self.rotation.device)
        bias[0] = 1
        return F.normalize(self.rotation + bias[None], dim=-1)

    @property
    def get_opacity(self) -> Tensor:
        """[N, 1] sigmoid(raw + logit(0.1)) (quirk 15)."""
        return torch.sigmoid(self.opacity_logits[:, None])

    @property
    def opacity_logits(self) -> Tensor:
        """[N] the exact pre-sigmoid value raw + logit(0.1). TRELLIS's ``save_ply`` writes logit(get_opacity)
        instead, which is the same number up to rounding but infinite where the sigmoid saturates."""
        return (self.opacity + self.opacity_bias)[:, 0]

    @property
    def log_scaling(self) -> Tensor:
        """[N, 3] natural log of ``get_scaling`` (what ``save_ply`` writes); finite since get_scaling >= 9e-4."""
        return torch.log(self.get_scaling)


def raw_to_gaussians(raw: Tensor, coords: Tensor, resolution: int, offset_perturbation: Tensor | None = None,
                     representation_config: dict | None = None) -> TrellisGaussians:
    """Raw decoder output [N, 448] of voxels ``coords`` ([N, 4] (b, x, y, z) or [N, 3]) -> their Gaussians
    (TRELLIS ``SLatGaussianDecoder.to_representation`` for one sample; SPEC 7, quirk 14).

    ``_xyz`` = (coord + 0.5) / res + tanh(raw·lr + P[g]) / res · 0.5 · voxel_size; the other attributes are
    raw·lr (rotation lr 0.1). ``offset_perturbation`` P is needed when ``perturb_offset`` is set. The operation
    order is the original's so the float32 results match it to the last bits."""
    cfg = DEFAULT_REPRESENTATION_CONFIG if representation_config is None else representation_config
    g = int(cfg["num_gaussians"])
    layout = gaussian_layout(g)
    width = sum(math.prod(shape) for _, shape in layout)
    if raw.dim() != 2 or raw.shape[1] != width:
        raise ValueError(f"raw features must be [N, {width}], got {tuple(raw.shape)}")
    if coords.shape[0] != raw.shape[0] or coords.shape[1] not in (3, 4):
        raise ValueError(f"coords must be [N={raw.shape[0]}, 4 or 3], got {tuple(coords.shape)}")
    if cfg.get("scaling_activation", "softplus") != "softplus":
        raise ValueError("only scaling_activation='softplus' (the published setting) is implemented")
    xyz_voxel = coords[:, -3:]
    attrs: dict[str, Tensor] = {}
    start = 0
    for name, shape in layout:
        size = math.prod(shape)
        seg = raw[:, start:start + size].reshape(-1, *shape) * cfg["lr"][name]
        start += size
        if name == "_xyz":
            if cfg["perturb_offset"]:
                if offset_perturbation is None:
                    raise ValueError("perturb_offset is set: pass the decoder's offset_perturbation buffer")
                seg = seg + offset_perturbation.to(seg)
            offset = torch.tanh(seg) / resolution * 0.5 * cfg["voxel_size"]
            centre = (xyz_voxel.float() + 0.5) / resolution
            attrs[name] = (centre.unsqueeze(1) + offset).flatten(0, 1)
        else:
            attrs[name] = seg.flatten(0, 1)
    # The original builds both biases from python floats as float32 tensors: softplus^-1(y) = y + log(-expm1(-y)),
    # logit(p) = log(p / (1 - p)).
    y = _f32(cfg["scaling_bias"])
    p = _f32(cfg["opacity_bias"])
    return TrellisGaussians(xyz=attrs["_xyz"], features_dc=attrs["_features_dc"], scaling=attrs["_scaling"],
                            rotation=attrs["_rotation"], opacity=attrs["_opacity"],
                            scale_bias=float(y + torch.log(-torch.expm1(-y))),
                            opacity_bias=float(torch.log(p / (1 - p))),
                            min_kernel_size=float(cfg["3d_filter_kernel_size"]))


def to_world(g: TrellisGaussians, yaw_deg: float = TRELLIS_TO_WORLD_YAW_DEG) -> Gaussians:
    """TRELLIS Gaussians -> this project's `Gaussians` (ARCHITECTURE.md: world Z up, object in [-0.5, 0.5]^3,
    quaternions (w, x, y, z), log-scales, opacity logits, SH DC, degree 0).

    Values: log_scales = log(get_scaling), opacity_logits = raw + logit(0.1) (exactly the pre-sigmoid value, so
    sigmoid gives get_opacity back), quats = get_rotation (unit), sh_dc = ``_features_dc`` (same SH convention,
    colour = 0.5 + SH_C0 * dc). Scales, opacities and colours do not depend on the frame.

    Frame: no axis swap is needed (TRELLIS's object frame is already right-handed, Z up, with get_xyz in
    [-0.5, 0.5]^3, the 1/64-voxel grid centred at 0). Only the facing differs: this project puts the photographed
    side at world +X (the input camera on +X, its right at +Y; cameras.py, tests/unit/ai_modules/
    test_ai_orientation.py), while TRELLIS's canonical front is -Y. TRELLIS inherits that from its training data:
    Objaverse glTF (front +Z, Y up) imported into Blender becomes (x, -z, y), so the glTF front lands at -Y, and
    TRELLIS's own ``to_glb`` undoes exactly that ((x, y, z) -> (x, z, -y)) so its GLBs face a viewer's default
    camera. The default ``yaw_deg`` = 90 turns -Y onto +X (and +X, the photo's right, onto +Y):
    (x, y, z) -> (-y, x, z), quaternions left-multiplied by (cos 45°, 0, 0, sin 45°). A quarter turn about Z maps
    the cube [-0.5, 0.5]^3 onto itself. The generated pose is the model's guess of the canonical pose, so for a
    photo taken from the side the object may still need turning; pass ``yaw_deg=0`` to keep TRELLIS's frame
    as is (every value then equals the activated one exactly)."""
    n = g.num
    trellis_frame = Gaussians(means=g.get_xyz.float(), quats=g.get_rotation.float(), log_scales=g.log_scaling.float(),
                              opacity_logits=g.opacity_logits.float(), sh_dc=g.features_dc.reshape(n, 3).float(),
                              sh_rest=g.features_dc.new_zeros(n, 0, 3).float())
    return trellis_frame.rotated(yaw_matrix(yaw_deg)) if yaw_deg % 360.0 else trellis_frame


class SLatGaussianDecoder(nn.Module):
    """SLat -> raw Gaussian features (SPEC 7): SparseLinear(latent -> C) + APE of the voxel coords (quirk 12),
    ``num_blocks`` plain pre-LN transformer blocks with shifted-window attention (swin: block i shifts by
    (window/2)·(i mod 2), quirk 13), LN (no affine, eps 1e-5), SparseLinear(C -> 14·G).

    Constructor arguments are the original's (``SLatGaussianDecoder(**config_args)`` works for the manifest and for
    meta.json's tiny config). ``use_fp16`` stores the block Linears in fp16 as the original does and runs the blocks
    in fp16 (norms in fp32); the input and output layers and the buffer stay fp32. Only ``attn_mode`` 'swin' (the
    published one) and 'full' are implemented, and ``pe_mode`` 'ape'."""

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: int | None = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 representation_config: dict | None = None) -> None:
        super().__init__()
        if attn_mode not in ("swin", "full"):
            raise ValueError(f"attn_mode {attn_mode!r} is not implemented (only 'swin' and 'full')")
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not implemented (only 'ape')")
        del use_checkpoint  # training-only (gradient checkpointing)
        self.resolution = resolution
        self.model_channels = model_channels
        self.num_heads = num_heads or model_channels // num_head_channels
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.rep_config = dict(DEFAULT_REPRESENTATION_CONFIG if representation_config is None
                               else representation_config)
        self.num_gaussians = int(self.rep_config["num_gaussians"])
        self.out_channels = sum(math.prod(shape) for _, shape in gaussian_layout(self.num_gaussians))
        if self.rep_config["perturb_offset"]:
            perturbation = hammersley_offset_perturbation(self.num_gaussians, self.rep_config["voxel_size"])
            self.register_buffer("offset_perturbation", perturbation)  # persistent: in the state dict (quirk 16)
        else:
            self.offset_perturbation = None
        self.input_layer = nn.Linear(latent_channels, model_channels)
        self.blocks = nn.ModuleList([TransformerBlock(model_channels, self.num_heads, mlp_ratio,
                                                      qk_rms_norm=qk_rms_norm) for _ in range(num_blocks)])
        self.out_layer = nn.Linear(model_channels, self.out_channels)
        self.torso_dtype = torch.float32
        if use_fp16:
            self.set_torso_dtype(torch.float16)

    def set_torso_dtype(self, dtype: torch.dtype) -> None:
        """Cast the blocks' Linears (the original ``convert_to_fp16``) and run the blocks in ``dtype``."""
        linears_to(self.blocks, dtype)
        self.torso_dtype = dtype

    def block_shift(self, i: int) -> int:
        """Window shift of block ``i``: 0 for even blocks, window/2 for odd ones (swin, quirk 13)."""
        return self.window_size // 2 * (i % 2)

    def forward(self, x: SparseTensor) -> Tensor:
        """[N, latent] de-normalised SLat features at ``x.coords`` -> raw Gaussian features [N, 14·G] (float32)."""
        coords = x.coords
        h = self.input_layer(x.feats) + absolute_position_embedding(coords[:, 1:], self.model_channels)
        h = h.to(self.torso_dtype)
        for i, block in enumerate(self.blocks):
            if self.attn_mode == "swin":
                core = partial(windowed_attention, coords=coords, window=self.window_size, shift=self.block_shift(i))
            else:
                core = partial(_full_core, batch_index=x.batch_index)
            h = block(h, core=core)
        h = F.layer_norm(h.to(x.feats.dtype), h.shape[-1:])
        return self.out_layer(h)

    def to_representation(self, raw: Tensor, coords: Tensor) -> list[TrellisGaussians]:
        """Raw features of ``coords`` [N, 4] -> one `TrellisGaussians` per batch index present (rows in order)."""
        out = []
        for b in torch.unique(coords[:, 0].long(), sorted=True).tolist():
            rows = coords[:, 0].long() == b
            out.append(raw_to_gaussians(raw[rows], coords[rows], self.resolution, self.offset_perturbation,
                                        self.rep_config))
        return out

    def decode(self, x: SparseTensor) -> list[TrellisGaussians]:
        """`forward` then `to_representation`: what the original's ``forward`` returns."""
        return self.to_representation(self(x), x.coords)


def _full_core(q: Tensor, k: Tensor, v: Tensor, batch_index: Tensor) -> Tensor:
    return per_sample_attention(q, k, v, batch_index)
