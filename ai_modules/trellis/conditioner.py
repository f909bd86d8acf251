"""TRELLIS's image condition: DINOv2 ViT-L/14 with 4 registers, in plain PyTorch (SPEC section 2, quirks 3-4).

The module tree copies facebookresearch/dinov2's ``DinoVisionTransformer`` so that its state dict has the same keys
and shapes as the published ``dinov2_vitl14_reg4_pretrain.pth`` (344 keys; ``mask_token`` and ``norm.*`` are loaded
but unused here). TRELLIS does not use DINOv2's own final norm: it takes the last block's output (``x_prenorm``) and
applies a LayerNorm without affine, eps 1e-5, over all 1374 tokens [cls, 4 registers, 37x37 patches].

    model = DinoV2Reg.from_pth("dinov2_vitl14_reg4_pretrain.pth").eval()
    cond = model.features(to_model_input(rgb518))     # [1,1374,1024]
    neg = neg_cond(cond)                               # zeros: TRELLIS's negative condition

A Hugging Face ``Dinov2WithRegistersModel`` snapshot (facebook/dinov2-with-registers-large, ``model.safetensors``)
is read too: `hf_to_dinov2_state_dict` maps its keys onto these (q, k and v are concatenated into ``qkv``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FormatError
from .modules import state_dict_mismatch

COND_LN_EPS = 1e-5     # TRELLIS's non-affine LN over x_prenorm
BLOCK_LN_EPS = 1e-6    # DINOv2's pre-norms and final norm


@dataclass(frozen=True)
class DinoV2Config:
    """The ViT hyper-parameters; the defaults are the published ``dinov2_vitl14_reg`` (ViT-L/14, 4 registers)."""

    img_size: int = 518
    patch_size: int = 14
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_register_tokens: int = 4
    interpolate_antialias: bool = True
    interpolate_offset: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> DinoV2Config:
        """From a dinov2-style kwargs dict (e.g. meta.json ``tiny_config.image_cond``); unknown keys are ignored.

        Raises:
            ValueError: a key that changes the architecture to one not built here (ffn_layer, block_chunks,
                init_values 0 meaning no LayerScale).
        """
        if d.get("ffn_layer", "mlp") != "mlp":
            raise ValueError(f"only ffn_layer 'mlp' is built here, got {d['ffn_layer']!r}")
        if d.get("block_chunks", 0) not in (0, None):
            raise ValueError(f"only block_chunks 0 (flat `blocks.N` keys) is built here, got {d['block_chunks']!r}")
        if not d.get("init_values", 1.0):
            raise ValueError("init_values must be non-zero: the published model has LayerScale (ls1/ls2.gamma)")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})


class PatchEmbed(nn.Module):
    """14x14 stride-14 conv -> [B, N, C] with patches in row-major order."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {self.patch_size}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv Linear laid out [3, heads, head_dim] (q, then k, then v)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    """x * gamma, per channel."""

    def __init__(self, dim: int, init_values: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_values))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """Linear, exact (erf) GELU, Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block with LayerScale: x += ls1(attn(norm1(x))); x += ls2(mlp(norm2(x)))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Reg(nn.Module):
    """DINOv2 ViT with register tokens; state-dict compatible with the dinov2 hub ``.pth`` files."""

    def __init__(self, config: DinoV2Config | None = None) -> None:
        super().__init__()
        self.config = cfg = config or DinoV2Config()
        dim = cfg.embed_dim
        n_patches = (cfg.img_size // cfg.patch_size) ** 2
        self.patch_embed = PatchEmbed(cfg.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, cfg.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))   # masked pre-training only; kept for strict loading
        self.blocks = nn.ModuleList(Block(dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)       # DINOv2's final norm; TRELLIS does not use it

    def _pos_embed(self, n_patches: int, h: int, w: int) -> torch.Tensor:
        """The pos-embed for an h x w pixel input: as stored at the training size, else bicubic-resized (dinov2's)."""
        n = self.pos_embed.shape[1] - 1
        if n_patches == n and h == w:
            return self.pos_embed
        m = int(math.sqrt(n))
        dim = self.pos_embed.shape[-1]
        h0, w0 = h // self.config.patch_size, w // self.config.patch_size
        grid = self.pos_embed[:, 1:].float().reshape(1, m, m, dim).permute(0, 3, 1, 2)
        if self.config.interpolate_offset:
            sy = float(h0 + self.config.interpolate_offset) / m
            sx = float(w0 + self.config.interpolate_offset) / m
            grid = F.interpolate(grid, scale_factor=(sy, sx), mode="bicubic",
                                 antialias=self.config.interpolate_antialias)
        else:
            grid = F.interpolate(grid, size=(h0, w0), mode="bicubic", antialias=self.config.interpolate_antialias)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((self.pos_embed[:, :1].float(), grid), dim=1).to(self.pos_embed.dtype)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] -> [B, 1+R+N, C]: [cls, registers, patches]; pos-embed on cls and patches, none on registers."""
        b, _, h, w = x.shape
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(b, -1, -1), t), dim=1)
        t = t + self._pos_embed(t.shape[1] - 1, h, w)
        return torch.cat((t[:, :1], self.register_tokens.expand(b, -1, -1), t[:, 1:]), dim=1)

    def forward_prenorm(self, x: torch.Tensor, return_blocks: bool = False
                        ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """``x_prenorm``: the last block's output, before DINOv2's final norm. With `return_blocks`, also every
        block's output (the last one is x_prenorm itself)."""
        t = self.tokens(x)
        outs = []
        for blk in self.blocks:
            t = blk(t)
            outs.append(t)
        return (t, outs) if return_blocks else t

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """TRELLIS's ``cond``: LN(no affine, eps 1e-5) of x_prenorm over the channels, all 1374 tokens kept."""
        h = self.forward_prenorm(x)
        return F.layer_norm(h, h.shape[-1:], eps=COND_LN_EPS)

    forward = features

    @classmethod
    def from_pth(cls, path: str | Path, config: DinoV2Config | None = None,
                 map_location: str | torch.device = "cpu") -> DinoV2Reg:
        """Build and strictly load a dinov2 hub checkpoint (e.g. ``dinov2_vitl14_reg4_pretrain.pth``), eval mode.

        Raises:
            FileNotFoundError: `path` does not exist.
            FormatError: the file is not a tensor dict, or its keys/shapes do not match the config.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"DINOv2 checkpoint {path} not found; download "
                                    "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_reg4_pretrain.pth")
        try:
            sd = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # pickle/zip errors have no common base class
            raise FormatError(f"{path}: not a loadable torch checkpoint ({type(exc).__name__}: {exc})") from exc
        if isinstance(sd, dict) and isinstance(sd.get("model"), dict):
            sd = sd["model"]
        return cls._from_state_dict(sd, config, str(path))

    @classmethod
    def from_hf_snapshot(cls, folder: str | Path, config: DinoV2Config | None = None) -> DinoV2Reg:
        """Build and strictly load a Hugging Face ``Dinov2WithRegistersModel`` folder (``model.safetensors``).

        Raises:
            FileNotFoundError: no ``model.safetensors`` in `folder`.
            FormatError: unknown keys, or keys/shapes that do not match the config.
        """
        from safetensors.torch import load_file

        file = Path(folder) / "model.safetensors"
        if not file.is_file():
            raise FileNotFoundError(f"{file} not found; download facebook/dinov2-with-registers-large into {folder}")
        return cls._from_state_dict(hf_to_dinov2_state_dict(load_file(str(file)), str(file)), config, str(file))

    @classmethod
    def _from_state_dict(cls, sd: object, config: DinoV2Config | None, where: str) -> DinoV2Reg:
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise FormatError(f"{where}: expected a dict of tensors (a DINOv2 state dict)")
        model = cls(config)
        check_state_dict(model, sd, where)
        model.load_state_dict(sd, strict=True)
        return model.eval()


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], where: str = "state dict") -> None:
    """Raise FormatError naming the missing, unexpected and mis-shaped keys (up to 5 each) of `sd` for `model`."""
    mismatch = state_dict_mismatch(model, sd)
    if mismatch:
        raise FormatError(f"{where} does not match DINOv2 {model.config}: {mismatch} (is it the ViT-L/14 reg4 "
                          "checkpoint?)")


def neg_cond(cond: torch.Tensor) -> torch.Tensor:
    """TRELLIS's negative condition for CFG: zeros shaped like `cond` (not an encoded blank image)."""
    return torch.zeros_like(cond)


_HF_RENAMES = [  # (regex on the HF key, dinov2 key); q/k/v are handled separately
    (r"embeddings\.cls_token", "cls_token"),
    (r"embeddings\.mask_token", "mask_token"),
    (r"embeddings\.register_tokens", "register_tokens"),
    (r"embeddings\.position_embeddings", "pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)", r"blocks.\1.norm\2.\3"),
    (r"encoder\.layer\.(\d+)\.attention\.(?:output\.dense|o_proj)\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (r"encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1", r"blocks.\1.ls\2.gamma"),
    (r"encoder\.layer\.(\d+)\.mlp\.(fc[12])\.(weight|bias)", r"blocks.\1.mlp.\2.\3"),
    (r"layernorm\.(weight|bias)", r"norm.\1"),
]
_HF_QKV = re.compile(r"encoder\.layer\.(\d+)\.attention\.(?:attention\.(query|key|value)|([qkv])_proj)\.(weight|bias)")


def hf_to_dinov2_state_dict(sd: dict[str, torch.Tensor], where: str = "HF state dict") -> dict[str, torch.Tensor]:
    """Map a transformers ``Dinov2WithRegistersModel`` state dict (legacy ``attention.attention.query`` names as on
    the hub, or transformers 5's ``q_proj`` names) to dinov2 ``.pth`` keys; q, k and v are concatenated into qkv.

    Raises:
        FormatError: a key that is not part of the model, or a layer without all of q, k and v.
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        k = key.removeprefix("dinov2_with_registers.")
        m = _HF_QKV.fullmatch(k)
        if m:
            part = m.group(2)[0] if m.group(2) else m.group(3)
            qkv.setdefault((int(m.group(1)), m.group(4)), {})[part] = value
            continue
        for pattern, repl in _HF_RENAMES:
            if re.fullmatch(pattern, k):
                out[re.sub(pattern, repl, k)] = value
                break
        else:
            raise FormatError(f"{where}: unexpected key {key!r} for a Dinov2WithRegistersModel")
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise FormatError(f"{where}: layer {layer} {kind} has only {sorted(parts)} of q, k, v")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out
