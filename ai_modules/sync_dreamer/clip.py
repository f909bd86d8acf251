"""OpenAI CLIP ViT image tower with OpenAI's key names (`clip_image_encoder.model.visual.*`).

SyncDreamer's `FrozenCLIPImageEmbedder` loads `ViT-L-14.pt` with `clip.load(jit=False)`, deletes the
text transformer, and keeps the rest: the text-side leftovers (`token_embedding`,
`positional_embedding`, `ln_final`, `text_projection`, `logit_scale`) stay in the checkpoint but
are never used. They are plain parameters here so the state dict matches the original.

`hf_to_openai(...)` maps a transformers `CLIPVisionModelWithProjection` (or `CLIPModel`) state
dict to these names (the same rules as `clip_openai_to_hf_mapping.json`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from .config import CLIPConfig


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 (OpenAI CLIP's subclass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: `attn` (nn.MultiheadAttention), `ln_1`, `mlp` (c_fc, QuickGELU, c_proj), `ln_2`."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(width * 4, width))]))
        self.ln_2 = LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """`resblocks` over sequence-first input [L,B,width]."""

    def __init__(self, width: int, layers: int, heads: int) -> None:
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    """CLIP image tower: pixels [B,3,224,224] -> `ln_post(CLS) @ proj` [B,output_dim] (not normalised)."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        grid = cfg.image_size // cfg.patch_size
        scale = cfg.width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(cfg.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, cfg.width))
        self.proj = nn.Parameter(scale * torch.randn(cfg.width, cfg.output_dim))
        self.conv1 = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.ln_pre = LayerNorm(cfg.width)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads)
        self.ln_post = LayerNorm(cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype,
                                                             device=x.device)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class CLIPLeftovers(nn.Module):
    """OpenAI `CLIP` with the text transformer deleted: `visual` plus the unused text-side parameters."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        # Registration order = the original state-dict order.
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.text_width))
        self.text_projection = nn.Parameter(torch.empty(cfg.text_width, cfg.output_dim))
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.visual = VisionTransformer(cfg)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.ln_final = LayerNorm(cfg.text_width)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=cfg.text_width ** -0.5)


class CLIPImageEncoder(nn.Module):
    """`clip_image_encoder`: wraps `model` (the leftovers); `encode` gives the [B,1,768] UNet context source."""

    def __init__(self, cfg: CLIPConfig) -> None:
        super().__init__()
        self.model = CLIPLeftovers(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP-normalised pixels [B,3,224,224] (see `preprocess.clip_pixels`) -> embedding [B,1,768] float32."""
        return self.model.visual(pixels.to(self.model.visual.conv1.weight.dtype)).float().unsqueeze(1)


OPENAI_UNUSED_KEYS = ("positional_embedding", "text_projection", "logit_scale", "token_embedding.weight",
                      "ln_final.weight", "ln_final.bias")

_HF_LAYER_RENAMES = (("self_attn.out_proj.", "attn.out_proj."), ("layer_norm1.", "ln_1."), ("mlp.fc1.", "mlp.c_fc."),
                     ("mlp.fc2.", "mlp.c_proj."), ("layer_norm2.", "ln_2."))
_HF_TOP_RENAMES = {
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    # Text leftovers, present only in a full CLIPModel snapshot (unused, mapped for completeness).
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "logit_scale": "logit_scale",
}
_HF_IGNORED_SUFFIXES = ("position_ids",)   # buffers of older transformers versions


def hf_to_openai(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers CLIP state dict to OpenAI `CLIP` names (without the `clip_image_encoder.model.` prefix).

    Rules: embeddings/pre/post layer norms renamed; per layer q/k/v projections concatenated
    (q, k, v order) into `attn.in_proj_weight`/`in_proj_bias`; `visual_projection.weight` and
    `text_projection.weight` transposed into `visual.proj` / `text_projection`; the text encoder
    layers (`text_model.encoder.*`) are dropped (the original deleted that transformer).

    Raises:
        KeyError: a vision key has no mapping (an unexpected layout).
    """
    out: dict[str, torch.Tensor] = {}
    prefix = "vision_model.encoder.layers."
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in hf.items():
        if key.endswith(_HF_IGNORED_SUFFIXES) or key.startswith("text_model.encoder."):
            continue
        if key in _HF_TOP_RENAMES:
            out[_HF_TOP_RENAMES[key]] = value
        elif key == "visual_projection.weight":
            out["visual.proj"] = value.t().contiguous()
        elif key == "text_projection.weight":
            out["text_projection"] = value.t().contiguous()
        elif key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                _, proj, kind = rest.split(".")
                qkv.setdefault((int(index), kind), {})[proj[0]] = value
                continue
            for old, new in _HF_LAYER_RENAMES:
                if rest.startswith(old):
                    out[f"visual.transformer.resblocks.{index}.{new}{rest[len(old):]}"] = value
                    break
            else:
                raise KeyError(f"no OpenAI name for transformers key {key!r}")
        else:
            raise KeyError(f"no OpenAI name for transformers key {key!r}")
    for (index, kind), parts in sorted(qkv.items()):
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"layer {index} `self_attn` {kind}: needs q, k and v projections, got {sorted(parts)}")
        suffix = "in_proj_weight" if kind == "weight" else "in_proj_bias"
        out[f"visual.transformer.resblocks.{index}.attn.{suffix}"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    return out
