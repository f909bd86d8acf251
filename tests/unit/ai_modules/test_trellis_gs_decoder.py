"""ai_modules.trellis.gs_decoder: published key/shape compatibility, the tiny golden (denormalised SLat -> block
features -> raw 448 channels -> Gaussians) and the conversion into the project's `Gaussians` (SPEC 7)."""

from __future__ import annotations

import math

import pytest
import torch
from trellis_golden import SINGLE, assert_close, assert_matches_manifest, golden, manifest, meta, tiny

from ai_modules.gaussians import SH_C0, sh_dc_to_rgb
from ai_modules.geometry import quat_to_matrix
from ai_modules.trellis.gs_decoder import (
    PUBLISHED_CONFIG,
    SLatGaussianDecoder,
    TrellisGaussians,
    hammersley_offset_perturbation,
    raw_to_gaussians,
    to_world,
)
from ai_modules.trellis.sparse import SparseTensor

ATTRS = ("xyz", "features_dc", "scaling", "rotation", "opacity")
GETTERS = ("xyz", "features", "scaling", "rotation", "opacity")


def _tiny_decoder(use_fp16: bool = False) -> SLatGaussianDecoder:
    return tiny(SLatGaussianDecoder, "gs_decoder", "slat_decoder_gs", use_fp16=use_fp16)


def _slat() -> SparseTensor:
    """The decoder's input: the de-normalised SLat at the sparse-structure coords (README "Structured latent")."""
    s = golden("slat")
    return SparseTensor(s["slat_noise_coords"], s["slat_denormalized_feats"])


@pytest.fixture(scope="module")
def decoded() -> tuple[dict[str, torch.Tensor], torch.Tensor, TrellisGaussians, SparseTensor]:
    """Block outputs, raw output and Gaussians of the tiny decoder on the golden SLat."""
    dec, x = _tiny_decoder(), _slat()
    blocks: dict[str, torch.Tensor] = {}
    for i, block in enumerate(dec.blocks):
        block.register_forward_hook(lambda _m, _a, out, i=i: blocks.__setitem__(f"gs_block{i}_feats", out))
    with torch.no_grad():
        raw = dec(x)
        (gauss,) = dec.to_representation(raw, x.coords)
    return blocks, raw, gauss, x


def test_published_decoder_has_manifest_keys_shapes_dtypes_and_kinds() -> None:
    man = manifest("gs_decoder")
    assert {k: v for k, v in man["config_args"].items()} == PUBLISHED_CONFIG
    with torch.device("meta"):
        assert_matches_manifest(SLatGaussianDecoder(**man["config_args"]), "gs_decoder")


def test_offset_perturbation_buffer_is_the_golden_one() -> None:
    """The buffer is computed at construction (Hammersley, SPEC 7) and equals the original's bit for bit."""
    expected = golden("gaussians")["gs_offset_perturbation"]
    assert torch.equal(hammersley_offset_perturbation(32, 1.5), expected)
    assert torch.equal(SLatGaussianDecoder(**meta()["tiny_config"]["gs_decoder"]).offset_perturbation, expected)
    assert torch.equal(golden("tiny_state_dict_slat_decoder_gs")["offset_perturbation"], expected)


def test_tiny_decoder_reproduces_golden_blocks_and_raw_output(decoded) -> None:
    blocks, raw, _, _ = decoded
    gs = golden("gaussians")
    assert sorted(blocks) == sorted(k for k in gs if k.startswith("gs_block"))
    for name, feats in blocks.items():
        assert_close(feats, gs[name], SINGLE, name)
    assert raw.dtype == torch.float32
    assert_close(raw, gs["gs_raw_out_feats"], SINGLE, "gs_raw_out_feats")


def test_tiny_decoder_reproduces_golden_gaussian_attributes_and_getters(decoded) -> None:
    _, _, gauss, x = decoded
    gs = golden("gaussians")
    assert gauss.num == 3072 == 32 * x.num_voxels
    for name in ATTRS:
        assert_close(getattr(gauss, name), gs[f"gs_attr_{name}"], SINGLE, f"gs_attr_{name}")
    for name in GETTERS:
        assert_close(getattr(gauss, f"get_{name}"), gs[f"gs_get_{name}"], SINGLE, f"gs_get_{name}")


def test_activations_from_golden_raw_are_bit_exact() -> None:
    """raw_to_gaussians alone (SPEC 7, quirks 14-15) reproduces the original from its own raw output exactly."""
    gs = golden("gaussians")
    g = raw_to_gaussians(gs["gs_raw_out_feats"], _slat().coords, 16, gs["gs_offset_perturbation"])
    for name in ATTRS:
        assert torch.equal(getattr(g, name), gs[f"gs_attr_{name}"]), name
    for name in GETTERS:
        assert torch.equal(getattr(g, f"get_{name}"), gs[f"gs_get_{name}"]), name


def test_gaussians_are_voxel_major(decoded) -> None:
    """Rows 32 i .. 32 i + 31 belong to voxel i: each lies within 1.5 voxels of that voxel's centre."""
    _, _, gauss, x = decoded
    centre = (x.coords[:, 1:].float() + 0.5) / 16 - 0.5
    dist = (gauss.get_xyz.reshape(-1, 32, 3) - centre[:, None]).abs().max()
    assert float(dist) <= 0.5 * 1.5 / 16 + 1e-6


def test_to_world_without_yaw_keeps_the_activated_values(decoded) -> None:
    _, _, gauss, _ = decoded
    w = to_world(gauss, yaw_deg=0.0)
    assert w.num == gauss.num and w.sh_degree == 0
    assert torch.equal(w.means, gauss.get_xyz)
    assert torch.equal(w.quats, gauss.get_rotation)
    assert torch.equal(w.sh_dc, gauss.get_features[:, 0])
    assert_close(w.log_scales.exp(), gauss.get_scaling, 1e-6, "exp(log_scales)")
    assert_close(torch.sigmoid(w.opacity_logits), gauss.get_opacity[:, 0], 1e-7, "sigmoid(opacity_logits)")
    assert_close(w.log_scales, torch.log(golden("gaussians")["gs_get_scaling"]), SINGLE, "log of golden scales")
    assert torch.isfinite(w.opacity_logits).all() and torch.isfinite(w.log_scales).all()
    rgb = sh_dc_to_rgb(w.sh_dc)
    assert torch.equal(rgb, 0.5 + SH_C0 * gauss.get_features[:, 0])


def test_to_world_default_turns_trellis_front_onto_world_x(decoded) -> None:
    """The default quarter turn about +Z: TRELLIS -Y (its front) -> world +X (the photo side), +X -> +Y;
    positions and rotations turn together, scales, opacities and colours do not change."""
    _, _, gauss, _ = decoded
    w, w0 = to_world(gauss), to_world(gauss, yaw_deg=0.0)
    x, y, z = gauss.get_xyz.unbind(-1)
    assert torch.equal(w.means, torch.stack([-y, x, z], dim=-1))
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert_close(quat_to_matrix(w.quats), rz @ quat_to_matrix(gauss.get_rotation), 1e-6, "rotations")
    assert_close(w.quats.norm(dim=-1), torch.ones(w.num), 1e-6, "unit quaternions")
    for name in ("log_scales", "opacity_logits", "sh_dc"):
        assert torch.equal(getattr(w, name), getattr(w0, name)), name
    front = TrellisGaussians(xyz=torch.tensor([[0.5, 0.0, 0.5]]), features_dc=torch.zeros(1, 1, 3),
                             scaling=torch.zeros(1, 3), rotation=torch.zeros(1, 4), opacity=torch.zeros(1, 1),
                             scale_bias=0.0, opacity_bias=0.0)
    assert torch.equal(to_world(front).means, torch.tensor([[0.5, 0.0, 0.0]]))


def test_fp16_torso_stays_close() -> None:
    """use_fp16 (the published setting) runs the blocks in half precision; the raw output stays near fp32's."""
    with torch.no_grad():
        raw = _tiny_decoder(use_fp16=True)(_slat())
    assert raw.dtype == torch.float32
    assert_close(raw, golden("gaussians")["gs_raw_out_feats"], 2e-2, "fp16 torso")


def test_scale_and_opacity_biases() -> None:
    """b = softplus^-1(0.004) and logit(0.1) (quirk 15): a zero raw value gives scale sqrt(0.004^2 + 9e-4^2)
    and opacity 0.1."""
    g = raw_to_gaussians(torch.zeros(1, 448), torch.zeros(1, 4, dtype=torch.int32), 64,
                         torch.zeros(32, 3))
    assert_close(g.get_scaling, torch.full((32, 3), math.hypot(0.004, 9e-4)), 1e-6, "scale at raw 0")
    assert_close(g.get_opacity, torch.full((32, 1), 0.1), 1e-6, "opacity at raw 0")
    assert torch.equal(g.get_rotation, torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(32, 4))
