"""ai_modules.trellis.ss_decoder: published key/shape compatibility and the tiny golden (z_s -> logits -> coords)."""

from __future__ import annotations

import torch
from trellis_golden import SINGLE, assert_close, assert_matches_manifest, golden, manifest, tiny

from ai_modules.trellis.ss_decoder import SparseStructureDecoder, occupancy_coords, pixel_shuffle_3d


def _z_s(ss: dict[str, torch.Tensor]) -> torch.Tensor:
    """The sampled structure latent. The README lists ``z_s``; the stored file has only the sampler trace, whose
    last ``x_next`` (t = 0) is z_s (SPEC 4)."""
    return ss["z_s"] if "z_s" in ss else ss["ss_step4_x_next"]


def _tiny_decoder(use_fp16: bool = False) -> SparseStructureDecoder:
    return tiny(SparseStructureDecoder, "ss_decoder", use_fp16=use_fp16)


def test_published_decoder_has_manifest_keys_shapes_and_dtypes() -> None:
    man = manifest("ss_decoder")
    with torch.device("meta"):
        assert_matches_manifest(SparseStructureDecoder(**man["config_args"]), "ss_decoder")


def test_tiny_decoder_reproduces_golden_logits_and_coords() -> None:
    ss = golden("sparse_structure")
    with torch.no_grad():
        logits = _tiny_decoder()(_z_s(ss))
    assert_close(logits, ss["ss_occupancy_logits"], SINGLE, "ss_occupancy_logits")
    coords = occupancy_coords(logits)
    assert coords.dtype == torch.int32 and coords.shape == (96, 4)
    assert torch.equal(coords, ss["ss_coords"])


def test_fp16_torso_stays_close() -> None:
    """use_fp16 (the published setting) runs the torso in half precision; the logits stay near the fp32 ones."""
    ss = golden("sparse_structure")
    with torch.no_grad():
        logits = _tiny_decoder(use_fp16=True)(_z_s(ss))
    assert logits.dtype == torch.float32
    assert_close(logits, ss["ss_occupancy_logits"], 2e-2, "fp16 torso")


def test_pixel_shuffle_3d_channel_order() -> None:
    """Channel c*8 + 4i + 2j + k lands at (2x+i, 2y+j, 2z+k) (SPEC 5)."""
    x = torch.randn(2, 16, 3, 4, 5)
    y = pixel_shuffle_3d(x, 2)
    assert y.shape == (2, 2, 6, 8, 10)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                for k in range(2):
                    assert torch.equal(y[:, c, i::2, j::2, k::2], x[:, c * 8 + 4 * i + 2 * j + k])


def test_occupancy_coords_strict_and_lexicographic() -> None:
    logits = torch.full((2, 1, 3, 3, 3), -1.0)
    logits[1, 0, 0, 2, 1] = 0.5
    logits[0, 0, 2, 0, 0] = 1.0
    logits[0, 0, 0, 1, 2] = 0.0  # exactly zero is not occupied
    logits[0, 0, 0, 0, 1] = 3.0
    assert occupancy_coords(logits).tolist() == [[0, 0, 0, 1], [0, 2, 0, 0], [1, 0, 2, 1]]
