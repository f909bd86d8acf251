"""KHR_gaussian_splatting .glb: GLB structure, accessors, the Y-up frame and the round trip."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules.errors import FormatError
from ai_modules.export.gltf import (EXTENSION, EXTENSION_PROPERTIES, WORLD_TO_GLTF, accessor_array, gaussians_to_glb,
                                    glb_bytes, glb_to_gaussians, read_glb, sh_attribute_names)
from ai_modules.gaussians import SH_C0, Gaussians
from ai_modules.geometry import fibonacci_sphere, quat_to_matrix, sh_basis


def blob(n: int = 300, degree: int = 3, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.8, quats=torch.randn(n, 4, generator=gen),
                     log_scales=torch.full((n, 3), -4.5) + torch.rand(n, 3, generator=gen),
                     opacity_logits=torch.randn(n, generator=gen) * 2, sh_dc=torch.randn(n, 3, generator=gen),
                     sh_rest=torch.randn(n, k, 3, generator=gen) * 0.3)


def attributes(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    gltf, binary = read_glb(path)
    prim = gltf["meshes"][0]["primitives"][0]
    return gltf, {name: accessor_array(gltf, binary, i) for name, i in prim["attributes"].items()}


def test_sh_attribute_names_follow_the_spec_order():
    assert sh_attribute_names(0) == [f"{EXTENSION}:SH_DEGREE_0_COEF_0"]
    names = sh_attribute_names(3)
    assert len(names) == 16 and names[1] == f"{EXTENSION}:SH_DEGREE_1_COEF_0"
    assert names[4] == f"{EXTENSION}:SH_DEGREE_2_COEF_0" and names[-1] == f"{EXTENSION}:SH_DEGREE_3_COEF_6"


@pytest.mark.parametrize("degree", [0, 3])
def test_glb_header_chunks_and_accessors(tmp_path: Path, degree: int):
    g = blob(301, degree)                                # odd count: the COLOR_0 bytes stay 4-aligned anyway
    path = tmp_path / "s.glb"
    gaussians_to_glb(g, path)
    raw = path.read_bytes()
    magic, version, total = struct.unpack_from("<III", raw, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(raw))
    json_len, json_type = struct.unpack_from("<II", raw, 12)
    assert json_type == 0x4E4F534A and json_len % 4 == 0
    text = raw[20:20 + json_len]
    assert json.loads(text.decode("utf-8"))["asset"]["version"] == "2.0"       # padding is spaces, not NULs
    bin_len, bin_type = struct.unpack_from("<II", raw, 20 + json_len)
    assert bin_type == 0x004E4942 and bin_len % 4 == 0 and 28 + json_len + bin_len == len(raw)
    gltf, attrs = attributes(path)
    assert gltf["asset"]["version"] == "2.0" and gltf["extensionsUsed"] == [EXTENSION]
    assert "extensionsRequired" not in gltf                                     # points are the fallback
    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0 and prim["extensions"] == {EXTENSION: EXTENSION_PROPERTIES}
    assert len(gltf["meshes"]) == 1 and len(gltf["meshes"][0]["primitives"]) == 1
    want = {"POSITION", "COLOR_0", f"{EXTENSION}:ROTATION", f"{EXTENSION}:SCALE", f"{EXTENSION}:OPACITY",
            *sh_attribute_names(degree)}
    assert set(prim["attributes"]) == want
    shapes = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}
    for name, index in prim["attributes"].items():
        acc = gltf["accessors"][index]
        view = gltf["bufferViews"][acc["bufferView"]]
        size = 1 if acc["componentType"] == 5121 else 4
        assert acc["count"] == 301 and attrs[name].shape == (301, shapes[acc["type"]])
        assert view["byteLength"] == 301 * shapes[acc["type"]] * size and view["byteOffset"] % 4 == 0
    assert gltf["buffers"][0]["byteLength"] <= bin_len
    pos = gltf["accessors"][prim["attributes"]["POSITION"]]
    assert pos["min"] == attrs["POSITION"].min(axis=0).tolist() and pos["max"] == attrs["POSITION"].max(axis=0).tolist()
    color = gltf["accessors"][prim["attributes"]["COLOR_0"]]
    assert (color["componentType"], color["type"], color["normalized"]) == (5121, "VEC4", True)


def test_values_are_in_the_gltf_frame_and_activated(tmp_path: Path):
    g = blob(200, 2)
    path = tmp_path / "s.glb"
    gaussians_to_glb(g, path)
    _, a = attributes(path)
    r = torch.tensor(WORLD_TO_GLTF, dtype=torch.float32)
    assert np.allclose(a["POSITION"], (g.means @ r.T).numpy(), atol=1e-6)
    q = a[f"{EXTENSION}:ROTATION"]
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    rot = quat_to_matrix(torch.from_numpy(q[:, [3, 0, 1, 2]]).double())         # (x,y,z,w) -> (w,x,y,z)
    assert torch.allclose(rot, r.double() @ quat_to_matrix(g.quats.double()), atol=1e-5)
    assert np.allclose(a[f"{EXTENSION}:SCALE"], np.exp(g.log_scales.numpy()), rtol=1e-6)
    assert np.allclose(a[f"{EXTENSION}:OPACITY"][:, 0], torch.sigmoid(g.opacity_logits).numpy(), atol=1e-7)
    assert np.array_equal(a[f"{EXTENSION}:SH_DEGREE_0_COEF_0"], g.sh_dc.numpy())
    rgb = np.clip(0.5 + SH_C0 * g.sh_dc.double().numpy(), 0, 1)
    assert np.allclose(a["COLOR_0"][:, :3], np.rint(rgb * 255) / 255, atol=1e-7)
    assert np.allclose(a["COLOR_0"][:, 3], np.rint(torch.sigmoid(g.opacity_logits).double().numpy() * 255) / 255)
    sh = np.stack([a[n] for n in sh_attribute_names(2)[1:]], axis=1)           # [N,8,3] in the glTF frame
    dirs = fibonacci_sphere(40).float()
    world = torch.einsum("mk,nkc->nmc", sh_basis(dirs, 2), g.sh_rest)
    gltf = torch.einsum("mk,nkc->nmc", sh_basis(dirs @ r.T, 2), torch.from_numpy(sh))
    assert torch.allclose(world, gltf, atol=1e-4)                                # colours turn with the frame


def test_round_trip_recovers_the_gaussians(tmp_path: Path):
    g = blob(257, 3)
    path = tmp_path / "s.glb"
    gaussians_to_glb(g, path)
    back = glb_to_gaussians(path)
    assert back.num == g.num and back.sh_degree == 3
    assert torch.allclose(back.means, g.means, atol=1e-6)
    unit = g.quats / g.quats.norm(dim=1, keepdim=True)
    assert torch.allclose(torch.abs((back.quats * unit).sum(dim=1)), torch.ones(g.num), atol=1e-5)
    assert torch.allclose(back.log_scales, g.log_scales, atol=1e-5)
    assert torch.allclose(torch.sigmoid(back.opacity_logits), torch.sigmoid(g.opacity_logits), atol=1e-6)
    assert torch.allclose(back.sh_dc, g.sh_dc) and torch.allclose(back.sh_rest, g.sh_rest, atol=1e-5)
    gaussians_to_glb(g, path, sh_degree=1)
    assert glb_to_gaussians(path).sh_degree == 1


def test_bad_inputs_and_bad_files_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="`sh_degree`"):
        gaussians_to_glb(blob(4), tmp_path / "x.glb", sh_degree=4)
    with pytest.raises(ValueError, match="at least one"):
        gaussians_to_glb(Gaussians.empty(), tmp_path / "x.glb")
    g = blob(4)
    g.means[1, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        gaussians_to_glb(g, tmp_path / "x.glb")
    assert not (tmp_path / "x.glb").exists()
    path = tmp_path / "s.glb"
    gaussians_to_glb(blob(8, 2), path)
    raw = path.read_bytes()
    for bad in (raw[:-4], b"gltf" + raw[4:], raw[:16]):
        (tmp_path / "bad.glb").write_bytes(bad)
        with pytest.raises(FormatError):
            read_glb(tmp_path / "bad.glb")
    gltf, binary = read_glb(path)
    del gltf["meshes"][0]["primitives"][0]["attributes"][f"{EXTENSION}:SH_DEGREE_1_COEF_2"]
    (tmp_path / "partial.glb").write_bytes(glb_bytes(gltf, binary))
    with pytest.raises(FormatError, match="partly"):
        glb_to_gaussians(tmp_path / "partial.glb")
