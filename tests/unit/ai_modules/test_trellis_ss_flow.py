"""TRELLIS sparse-structure flow: shared blocks, SparseStructureFlowModel and the Euler CFG-interval sampler,
checked against the original code's golden vectors (``../shared/trellis``; skipped when absent)."""

from __future__ import annotations

import math

import pytest
import torch
from trellis_golden import SAMPLER, SINGLE, assert_close, assert_matches_manifest, golden, manifest, meta, tiny

from ai_modules.trellis.modules import (
    ModulatedCrossBlock,
    MultiHeadAttention,
    TransformerBlock,
    absolute_position_embedding,
    timestep_embedding,
)
from ai_modules.trellis.sampler import NoiseStream, SamplerSettings, cfg_applies, sample, timesteps
from ai_modules.trellis.ss_flow import SparseStructureFlowModel, patchify, unpatchify

STEP_FIELDS = ("x_t", "t_model", "v_cond", "v_uncond", "v_guided", "x_next", "pred_x0")


@pytest.fixture(scope="module")
def tiny_model() -> SparseStructureFlowModel:
    return tiny(SparseStructureFlowModel, "ss_flow")


@pytest.fixture(scope="module")
def ss() -> dict[str, torch.Tensor]:
    return golden("sparse_structure")


@pytest.fixture(scope="module")
def conditioning() -> dict[str, torch.Tensor]:
    return golden("conditioning")


@pytest.fixture(scope="module", params=[False, True], ids=["two calls", "batched guidance"])
def run(request, tiny_model, ss, conditioning):
    """The golden SS sampling, with cond and neg_cond in two calls (the original's way) and in one doubled batch
    (the pipeline's): both must reproduce every step."""
    settings = SamplerSettings.from_params(meta()["sampler_params"]["ss"], sigma_min=meta()["sigma_min"])
    return sample(tiny_model, ss["ss_noise"], conditioning["cond"], conditioning["neg_cond"], settings, record=True,
                  batch_guidance=request.param)


# --- published layout ---------------------------------------------------------------------------------------------

def test_published_model_matches_manifest():
    man = manifest("ss_flow")
    with torch.device("meta"):
        assert_matches_manifest(SparseStructureFlowModel(**man["config_args"]), "ss_flow")   # pos_emb: a buffer


def test_tiny_state_dict_loads_strictly_and_pos_emb_is_the_ape(tiny_model):
    sd = golden("tiny_state_dict_ss_flow")
    assert set(tiny_model.state_dict()) == set(sd)
    assert torch.equal(tiny_model.pos_emb, sd["pos_emb"])


# --- building blocks ----------------------------------------------------------------------------------------------

def test_timestep_embedding_is_cos_first():
    emb = timestep_embedding(torch.tensor([0.0, 500.0]), 256)
    assert emb.shape == (2, 256)
    assert torch.equal(emb[0, :128], torch.ones(128)) and torch.equal(emb[0, 128:], torch.zeros(128))
    f1 = math.exp(-math.log(1e4) / 128)
    assert emb[1, 1].item() == pytest.approx(math.cos(500 * f1), abs=1e-4)
    assert emb[1, 129].item() == pytest.approx(math.sin(500 * f1), abs=1e-4)


def test_ape_layout_and_zero_pad():
    coords = torch.tensor([[1, 2, 3], [0, 0, 0]])
    emb = absolute_position_embedding(coords, 1024)
    assert emb.shape == (2, 1024)
    assert torch.equal(emb[:, 1020:], torch.zeros(2, 4))           # F = 170, 4 pad zeros at the end
    f = 10000 ** (-torch.arange(170, dtype=torch.float64) / 170)
    for axis, c in enumerate((1, 2, 3)):
        block = emb[0, axis * 340:(axis + 1) * 340].double()
        assert torch.allclose(block[:170], torch.sin(c * f), atol=1e-5)
        assert torch.allclose(block[170:], torch.cos(c * f), atol=1e-5)
    assert absolute_position_embedding(coords, 768).shape == (2, 768)


def test_patchify_round_trip():
    x = torch.randn(2, 3, 4, 6, 8)
    p = patchify(x, 2)
    assert p.shape == (2, 24, 2, 3, 4)
    assert torch.equal(p[:, 1 * 8 + 4 * 1 + 2 * 0 + 1, 1, 2, 3], x[:, 1, 3, 4, 7])   # c·8 + (i, j, k)
    assert torch.equal(unpatchify(p, 2), x)


def test_blocks_accept_unbatched_tokens():
    """[L, C] tokens with a [C] modulation give the same result as a batch of one (for sparse callers)."""
    torch.manual_seed(1)
    block = ModulatedCrossBlock(32, 16, 2, qk_rms_norm=True).eval()
    plain = TransformerBlock(32, 2).eval()
    attn = MultiHeadAttention(32, 4, ctx_channels=16, kind="cross")
    x, mod, ctx = torch.randn(1, 10, 32), torch.randn(1, 32), torch.randn(1, 7, 16)
    with torch.no_grad():
        assert torch.allclose(block(x[0], mod[0], ctx[0]), block(x, mod, ctx)[0], atol=1e-6)
        assert torch.allclose(plain(x[0]), plain(x)[0], atol=1e-6)
        assert torch.allclose(attn(x[0], ctx[0]), attn(x, ctx)[0], atol=1e-6)


# --- golden: model -------------------------------------------------------------------------------------------------

def test_call0_blocks_and_velocity(tiny_model, ss, conditioning):
    outs: dict[int, torch.Tensor] = {}
    hooks = [blk.register_forward_hook(lambda _m, _i, out, i=i: outs.setdefault(i, out))
             for i, blk in enumerate(tiny_model.blocks)]
    try:
        with torch.no_grad():
            v = tiny_model(ss["ss_noise"], ss["ss_step0_t_model"], conditioning["cond"])
    finally:
        for h in hooks:
            h.remove()
    assert len(outs) == len(tiny_model.blocks)
    for i, out in outs.items():
        assert_close(out, ss[f"ss_call0_blocks.{i}_out"], SINGLE, f"blocks.{i}")
    assert_close(v, ss["ss_step0_v_cond"], SINGLE, "step 0 v_cond")


# --- golden: sampler -----------------------------------------------------------------------------------------------

def test_schedule_and_cfg_flags_match_meta():
    info = meta()["run_info"]["ss_steps"]
    params = meta()["sampler_params"]["ss"]
    ts = timesteps(params["steps"], params["rescale_t"])
    assert len(ts) == len(info) + 1 and ts[-1] == 0.0
    for step in info:
        assert ts[step["step"]] == pytest.approx(step["t"], abs=1e-12)
        assert cfg_applies(ts[step["step"]], tuple(params["cfg_interval"])) == step["cfg_applied"]


def test_sampler_steps(run, ss):
    info = meta()["run_info"]["ss_steps"]
    assert len(run.steps) == len(info)
    for rec, step in zip(run.steps, info):
        k = step["step"]
        assert rec.step == k and rec.cfg_applied == step["cfg_applied"]
        assert (f"ss_step{k}_v_uncond" in ss) == step["cfg_applied"]
        for name in STEP_FIELDS:
            got = getattr(rec, name)
            if name == "v_uncond" and not step["cfg_applied"]:
                assert got is None
                continue
            assert_close(got, ss[f"ss_step{k}_{name}"], SAMPLER, f"step {k} {name}")


def test_sampler_final_z_s(run, ss):
    # The golden README lists `z_s`; the file may not carry it, but the last step lands at t=0, so its x_next is z_s.
    last = len(meta()["run_info"]["ss_steps"]) - 1
    expected = ss.get("z_s", ss[f"ss_step{last}_x_next"])
    assert_close(run.samples, expected, SAMPLER, "z_s")
    assert torch.equal(run.samples, run.steps[-1].x_next)


def test_sampler_sparse_features_use_batch_size():
    """A model over sparse [N, C] features gets t_model of length batch_size, not N."""
    seen = []

    def model(x, t, cond):
        seen.append((tuple(t.shape), cond))
        return torch.ones_like(x)

    out = sample(model, torch.zeros(5, 3), "c", "u", SamplerSettings(steps=2, cfg_strength=2.0), batch_size=1)
    assert all(shape == (1,) for shape, _ in seen)
    assert [c for _, c in seen] == ["c", "u", "c", "u"]             # t = 1, 0.75 (both in [0.5, 1]), then 0
    assert torch.allclose(out.samples, torch.full((5, 3), -1.0))    # v = 1 throughout (guided: 3·1 − 2·1)


def test_noise_stream_reproduces_golden_noise(ss):
    noise = NoiseStream(meta()["seeds"]["pipeline_seed"])
    assert torch.equal(noise.randn(*ss["ss_noise"].shape), ss["ss_noise"])
    slat = golden("slat")["slat_noise_feats"]
    assert torch.equal(noise.randn(*slat.shape), slat)


def test_fp16_torso_stays_near_fp32(ss, conditioning):
    """use_fp16 casts only the blocks' Linear layers (norms fp32, quirk 17); expect ~1e-3 relative differences."""
    cfg = dict(meta()["tiny_config"]["ss_flow"], use_fp16=True)
    model = SparseStructureFlowModel(**cfg).eval()
    model.load_state_dict(golden("tiny_state_dict_ss_flow"), strict=True)
    assert model.blocks[0].mlp.mlp[0].weight.dtype == torch.float16
    assert model.blocks[0].norm2.weight.dtype == torch.float32
    with torch.no_grad():
        v = model(ss["ss_noise"], ss["ss_step0_t_model"], conditioning["cond"])
    assert v.dtype == torch.float32
    assert_close(v, ss["ss_step0_v_cond"], 1e-2, "fp16 step 0 v_cond")
