"""TRELLIS end to end on the tiny golden run: the input PNG, through all five components and both samplers, to the
same 3072 Gaussians as the original code (``../shared/trellis``)."""

from __future__ import annotations

import torch
from PIL import Image
from trellis_golden import GOLDEN, SAMPLER, assert_close, golden, meta, tiny

from ai_modules.trellis.conditioner import DinoV2Config, DinoV2Reg
from ai_modules.trellis.gs_decoder import SLatGaussianDecoder
from ai_modules.trellis.pipeline import TrellisModels, TrellisSettings, run
from ai_modules.trellis.sampler import SamplerSettings
from ai_modules.trellis.slat_flow import SLatFlowModel
from ai_modules.trellis.ss_decoder import SparseStructureDecoder
from ai_modules.trellis.ss_flow import SparseStructureFlowModel


def tiny_models() -> TrellisModels:
    """The five tiny golden networks, each loaded strictly from its seeded state dict."""
    conditioner = DinoV2Reg(DinoV2Config.from_dict(meta()["tiny_config"]["image_cond"])).eval()
    conditioner.load_state_dict(golden("tiny_state_dict_image_cond"), strict=True)
    return TrellisModels(conditioner, tiny(SparseStructureFlowModel, "ss_flow"),
                         tiny(SparseStructureDecoder, "ss_decoder"), tiny(SLatFlowModel, "slat_flow"),
                         tiny(SLatGaussianDecoder, "gs_decoder", "slat_decoder_gs"))


def golden_settings() -> TrellisSettings:
    m = meta()
    return TrellisSettings(ss_sampler=SamplerSettings.from_params(m["sampler_params"]["ss"], m["sigma_min"]),
                           slat_sampler=SamplerSettings.from_params(m["sampler_params"]["slat"], m["sigma_min"]),
                           slat_mean=m["slat_normalization_used"]["mean"], slat_std=m["slat_normalization_used"]["std"],
                           seed=m["seeds"]["pipeline_seed"])


def test_the_png_becomes_the_original_codes_gaussians():
    torch.manual_seed(0)                                 # the run draws its own noise: any ambient seed will do
    result = run(tiny_models(), Image.open(GOLDEN / "input_rgba.png"), golden_settings())
    cond, ss, slat, gs = golden("conditioning"), golden("sparse_structure"), golden("slat"), golden("gaussians")
    assert_close(result.cond, cond["cond"], what="cond")
    assert_close(result.ss_latent, ss["ss_step4_x_next"], SAMPLER, "z_s")
    assert torch.equal(result.coords, ss["ss_coords"]) and result.coords.shape[0] == 96
    assert_close(result.slat.feats, slat["slat_denormalized_feats"], SAMPLER, "denormalised SLat")
    g = result.gaussians
    assert g.get_xyz.shape == (3072, 3)
    for name in ("xyz", "features", "scaling", "rotation", "opacity"):
        assert_close(getattr(g, f"get_{name}"), gs[f"gs_get_{name}"], SAMPLER, f"get_{name}")


def test_every_attention_reaches_sdpa_in_four_dimensions(monkeypatch):
    """CUDA's fused SDPA kernels (flash, memory-efficient) take only [batch, heads, L, Dh]; anything else falls back
    to the math kernel, which materialises every score (on an H100 the SLat flow's 44 calls at 20,000 voxels took
    11.0 s that way, 4.0 s with 4-D tensors; docs/trellis.md)."""
    sdpa, dims = torch.nn.functional.scaled_dot_product_attention, []

    def recording(q, k, v, *args, **kwargs):
        dims.append((q.dim(), k.dim(), v.dim()))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    run(tiny_models(), Image.open(GOLDEN / "input_rgba.png"), golden_settings())
    assert dims and set(dims) == {(4, 4, 4)}, sorted(set(dims))
