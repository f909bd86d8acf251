"""TRELLIS structured-latent flow: SLatFlowModel, its sparse res block, the SLat sampler run and the
de-normalisation, checked against the original code's golden vectors (``../shared/trellis``; skipped when absent)."""

from __future__ import annotations

import pytest
import torch
from trellis_golden import SAMPLER, SINGLE, assert_close, assert_matches_manifest, golden, manifest, meta, tiny

from ai_modules.trellis.sampler import SamplerSettings, sample
from ai_modules.trellis.slat_flow import SLatFlowModel, SparseResBlock3d, denormalize, feature_model
from ai_modules.trellis.sparse import SparseTensor, downsample2

STEP_FIELDS = ("x_t", "t_model", "v_cond", "v_uncond", "v_guided", "x_next", "pred_x0")
CALL0_MODULES = ("input_layer", "input_blocks.0", "input_blocks.1", "blocks.0", "blocks.1", "out_blocks.0",
                 "out_blocks.1")


@pytest.fixture(scope="module")
def slat() -> dict[str, torch.Tensor]:
    return golden("slat")


@pytest.fixture(scope="module")
def conditioning() -> dict[str, torch.Tensor]:
    return golden("conditioning")


@pytest.fixture(scope="module")
def tiny_model() -> SLatFlowModel:
    return tiny(SLatFlowModel, "slat_flow")


@pytest.fixture(scope="module")
def run(tiny_model, slat, conditioning):
    settings = SamplerSettings.from_params(meta()["sampler_params"]["slat"], sigma_min=meta()["sigma_min"])
    velocity = feature_model(tiny_model, slat["slat_noise_coords"])
    return sample(velocity, slat["slat_noise_feats"], conditioning["cond"], conditioning["neg_cond"], settings,
                  batch_size=1, record=True)


# --- published layout ---------------------------------------------------------------------------------------------

def test_published_model_matches_manifest():
    man = manifest("slat_flow")
    with torch.device("meta"):
        assert_matches_manifest(SLatFlowModel(**man["config_args"]), "slat_flow")


def test_tiny_state_dict_loads_strictly(tiny_model):
    assert set(tiny_model.state_dict()) == set(golden("tiny_state_dict_slat_flow"))


# --- golden: first model call -----------------------------------------------------------------------------------

def test_call0_every_block(tiny_model, slat, conditioning):
    outs: dict[str, SparseTensor] = {}
    modules = dict(tiny_model.named_modules())

    def keep(name: str):
        def hook(_module, _inputs, out) -> None:   # returns None: the output is left unchanged
            outs.setdefault(name, out)
        return hook

    hooks = [modules[name].register_forward_hook(keep(name)) for name in CALL0_MODULES]
    try:
        x = SparseTensor(slat["slat_noise_coords"], slat["slat_noise_feats"])
        with torch.no_grad():
            v = tiny_model(x, slat["slat_step0_t_model"], conditioning["cond"])
    finally:
        for h in hooks:
            h.remove()
    assert set(outs) == set(CALL0_MODULES)
    for name in CALL0_MODULES:
        assert torch.equal(outs[name].coords, slat[f"slat_call0_{name}_coords"]), f"{name} coords"
        assert_close(outs[name].feats, slat[f"slat_call0_{name}_feats"], SINGLE, f"{name} feats")
    assert torch.equal(v.coords, slat["slat_noise_coords"])
    assert_close(v.feats, slat["slat_step0_v_cond"], SINGLE, "step 0 v_cond")


def test_noise_coords_are_the_structure_coords(slat):
    assert torch.equal(slat["slat_noise_coords"], slat["slat_coords"])


# --- golden: sampler and de-normalisation -----------------------------------------------------------------------

def test_sampler_steps(run, slat):
    info = meta()["run_info"]["slat_steps"]
    assert len(run.steps) == len(info)
    for rec, step in zip(run.steps, info):
        k = step["step"]
        assert rec.step == k and rec.cfg_applied == step["cfg_applied"]
        assert rec.t == pytest.approx(step["t"], abs=1e-12)
        assert (f"slat_step{k}_v_uncond" in slat) == step["cfg_applied"]
        for name in STEP_FIELDS:
            got = getattr(rec, name)
            if name == "v_uncond" and not step["cfg_applied"]:
                assert got is None
                continue
            assert_close(got, slat[f"slat_step{k}_{name}"], SAMPLER, f"step {k} {name}")


def test_normalized_and_denormalized(run, slat):
    assert_close(run.samples, slat["slat_normalized_feats"], SAMPLER, "slat_normalized_feats")
    norm = meta()["slat_normalization_used"]
    assert torch.equal(slat["slat_norm_mean"], torch.tensor(norm["mean"]))
    assert torch.equal(slat["slat_norm_std"], torch.tensor(norm["std"]))
    out = denormalize(run.samples, norm["mean"], norm["std"])
    assert_close(out, slat["slat_denormalized_feats"], SAMPLER, "slat_denormalized_feats")
    exact = denormalize(slat["slat_normalized_feats"], slat["slat_norm_mean"], slat["slat_norm_std"])
    assert_close(exact, slat["slat_denormalized_feats"], 1e-6, "denormalize on the golden input")


# --- structure -----------------------------------------------------------------------------------------------------

def _random_voxels(n: int, size: int, batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        flat = torch.randperm(size**3, generator=g)[:n].sort().values
        xyz = torch.stack([flat // size**2, (flat // size) % size, flat % size], dim=1)
        rows.append(torch.cat([torch.full((n, 1), b), xyz], dim=1))
    return torch.cat(rows).to(torch.int32)


def test_res_block_scale_first_and_skip_on_resampled_x():
    """Zero convs isolate the skip (on the downsampled x); the modulation chunk order is (scale, shift)."""
    torch.manual_seed(3)
    block = SparseResBlock3d(4, 6, 5, downsample=True).eval()
    coords = _random_voxels(40, 8, 1, 0)
    x = SparseTensor(coords, torch.randn(40, 4))
    emb = torch.randn(1, 6)
    with torch.no_grad():
        block.conv2.conv.weight.zero_()
        block.conv2.conv.bias.fill_(0.5)
        out = block(x, emb)
        xd, _ = downsample2(x)
        assert torch.equal(out.coords, xd.coords)
        assert torch.allclose(out.feats, block.skip_connection(xd).feats + 0.5, atol=1e-6)
        # conv2 = identity-like on the centre tap: out - skip = h, and h = SiLU(LN(h1)·(1+scale)+shift)
        block.conv2.conv.weight[:, 1, 1, 1, :] = torch.eye(5)
        block.conv2.conv.bias.zero_()
        h = block(x, emb).feats - block.skip_connection(xd).feats
        scale, shift = block.emb_layers(emb).chunk(2, dim=-1)
        h1 = block.conv1(xd.replace(torch.nn.functional.silu(block.norm1(xd.feats)))).feats
        ref = torch.nn.functional.silu(block.norm2(h1) * (1 + scale) + shift)
        assert torch.allclose(h, ref, atol=1e-5)


def test_batch_of_two_equals_two_single_runs(tiny_model, conditioning):
    """Per-sample attention/modulation: a batch of two samples gives each sample's single-sample velocity."""
    coords = _random_voxels(30, 16, 2, 1)
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(coords.shape[0], 8, generator=g)
    cond = torch.cat([conditioning["cond"], 0.5 * conditioning["cond"]])
    t = torch.tensor([1000.0, 600.0])
    with torch.no_grad():
        both = tiny_model(SparseTensor(coords, feats), t, cond)
        for b in range(2):
            rows = coords[:, 0] == b
            one_coords = coords[rows].clone()
            one_coords[:, 0] = 0
            single = tiny_model(SparseTensor(one_coords, feats[rows]), t[b:b + 1], cond[b:b + 1])
            assert torch.allclose(both.feats[rows], single.feats, atol=1e-5)
    assert torch.equal(both.coords, coords)


def test_fp16_torso_stays_near_fp32(slat, conditioning):
    """use_fp16 casts the torso's Linear and conv layers only (norms fp32, quirk 17); ~1e-3 relative differences."""
    cfg = dict(meta()["tiny_config"]["slat_flow"], use_fp16=True)
    model = SLatFlowModel(**cfg).eval()
    model.load_state_dict(golden("tiny_state_dict_slat_flow"), strict=True)
    assert model.input_blocks[0].conv1.conv.weight.dtype == torch.float16
    assert model.blocks[0].mlp.mlp[0].weight.dtype == torch.float16
    assert model.out_blocks[0].norm1.weight.dtype == torch.float32
    assert model.input_layer.weight.dtype == torch.float32
    with torch.no_grad():
        v = model(SparseTensor(slat["slat_noise_coords"], slat["slat_noise_feats"]), slat["slat_step0_t_model"],
                  conditioning["cond"])
    assert v.feats.dtype == torch.float32
    assert_close(v.feats, slat["slat_step0_v_cond"], 1e-2, "fp16 step 0 v_cond")
    model.convert_to_fp32()
    assert model.torso_dtype == torch.float32
