"""The Gaussians container and the strict Inria .ply reader/writer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_modules import ply
from ai_modules.errors import FormatError
from ai_modules.gaussians import Gaussians, rgb_to_sh_dc, sh_dc_to_rgb


def random_gaussians(n: int = 50, degree: int = 0, seed: int = 0) -> Gaussians:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(means=torch.rand(n, 3, generator=g) - 0.5, quats=torch.randn(n, 4, generator=g),
                     log_scales=torch.randn(n, 3, generator=g) - 4, opacity_logits=torch.randn(n, generator=g),
                     sh_dc=torch.randn(n, 3, generator=g), sh_rest=torch.randn(n, k, 3, generator=g))


def assert_same(a: Gaussians, b: Gaussians) -> None:
    for name in ("means", "quats", "log_scales", "opacity_logits", "sh_dc", "sh_rest"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_shapes_are_checked():
    g = random_gaussians(4)
    with pytest.raises(ValueError, match="`quats` must be"):
        Gaussians(g.means, g.quats[:, :3], g.log_scales, g.opacity_logits, g.sh_dc, g.sh_rest)
    with pytest.raises(ValueError, match="`sh_rest`"):
        Gaussians(g.means, g.quats, g.log_scales, g.opacity_logits, g.sh_dc, torch.zeros(4, 2, 3))


def test_basic_operations():
    g = random_gaussians(10, degree=1)
    assert g.num == 10 and g.sh_degree == 1 and g.device.type == "cpu"
    both = Gaussians.concat([g, g.clone()])
    assert both.num == 20
    keep = torch.arange(10) < 4
    assert g.select(keep).num == 4 and g.prune(keep).num == 6
    assert g.with_sh_degree(3).sh_rest.shape == (10, 15, 3) and g.with_sh_degree(0).sh_degree == 0
    assert_same(g.to("cpu"), g)
    assert Gaussians.empty(2).num == 0
    with pytest.raises(ValueError, match="one SH degree"):
        Gaussians.concat([g, random_gaussians(3)])
    rgb = torch.tensor([[0.0, 0.5, 1.0]])
    assert torch.allclose(sh_dc_to_rgb(rgb_to_sh_dc(rgb)), rgb)


def test_sanitize_counts_and_removes_nonfinite():
    g = random_gaussians(10, degree=1)
    g.means[2, 0] = float("nan")
    g.sh_rest[5, 1, 2] = float("inf")
    g.opacity_logits[7] = -float("inf")
    clean, dropped = g.sanitize()
    assert dropped == 3 and clean.num == 7
    assert bool(torch.isfinite(clean.means).all())
    with pytest.raises(ValueError, match="non-finite"):
        g.save_ply("unused.ply")


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_round_trip_is_exact(tmp_path, degree):
    g = random_gaussians(37, degree)
    path = tmp_path / "g.ply"
    g.save_ply(path)
    assert_same(Gaussians.load_ply(path), g)


def test_ply_padding_and_byte_size(tmp_path):
    g = random_gaussians(25, 0)
    path = tmp_path / "g.ply"
    g.save_ply(path, sh_degree=3)
    assert path.stat().st_size == len(ply.header(25, 3)) + 25 * 248
    back = Gaussians.load_ply(path)
    assert back.sh_degree == 3 and torch.equal(back.sh_rest, torch.zeros(25, 15, 3))
    assert torch.equal(back.sh_dc, g.sh_dc)
    names = ply.property_names(3)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9] == "f_rest_0" and names[53] == "f_rest_44"
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_f_rest_is_channel_major(tmp_path):
    g = random_gaussians(3, 1)
    records = g.to_records()
    # f_rest_0..2 are the three red coefficients, f_rest_3..5 the green ones.
    assert np.array_equal(records[:, 9:12], g.sh_rest[:, :, 0].numpy())
    assert np.array_equal(records[:, 12:15], g.sh_rest[:, :, 1].numpy())
    assert np.array_equal(records[:, 3:6], np.zeros((3, 3), np.float32))


def test_strict_reader_rejects_bad_files(tmp_path):
    g = random_gaussians(10, 0)
    good = tmp_path / "good.ply"
    g.save_ply(good, sh_degree=3)
    data = good.read_bytes()
    cases = {
        "truncated": data[:-5],
        "trailing": data + b"\0" * 4,
        "ascii": data.replace(b"binary_little_endian", b"ascii", 1),
        "renamed": data.replace(b"property float opacity", b"property float opacit_", 1),
        "double": data.replace(b"property float x\n", b"property double x\n", 1),
        "noend": data.replace(b"end_header", b"end_headr", 1),
        "extra_element": data.replace(b"end_header\n", b"element face 0\nend_header\n", 1),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.ply"
        path.write_bytes(content)
        with pytest.raises(FormatError):
            Gaussians.load_ply(path)
