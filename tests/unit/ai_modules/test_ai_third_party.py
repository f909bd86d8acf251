"""Our exports checked by tools we did not write (pinned in tools/package.json; see nodetools.py).

- Khronos glTF-Validator on the mesh .glb and the KHR_gaussian_splatting .glb.
- PlayCanvas splat-transform reading the export stage's .ply and .splat, and
  converting our .ply to its own KHR_gaussian_splatting .glb for comparison.
- What splat-transform accepts silently (truncated or ASCII .ply) and our reader refuses.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ai_modules import ply
from ai_modules.errors import FormatError
from ai_modules.export import ExportInputs, ExportStage
from ai_modules.export.functional import splat_order
from ai_modules.export.gltf import EXTENSION, accessor_array, gaussians_to_glb, read_glb
from ai_modules.export.mesh import extract_mesh, mesh_to_glb
from ai_modules.export.texture import bake_texture
from ai_modules.export.tsdf import fuse_tsdf
from ai_modules.gaussians import SH_C0, Gaussians
from ai_modules.settings import ExportSettings
from nodetools import NodeTools, require_tools
from test_ai_mesh import ring_views


@pytest.fixture(scope="module")
def tools() -> NodeTools:
    return require_tools()


def blob(n: int = 300, degree: int = 3, seed: int = 1) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.8, quats=torch.randn(n, 4, generator=gen),
                     log_scales=torch.full((n, 3), -4.5) + torch.rand(n, 3, generator=gen),
                     opacity_logits=torch.randn(n, generator=gen) * 2, sh_dc=torch.randn(n, 3, generator=gen),
                     sh_rest=torch.randn(n, (degree + 1) ** 2 - 1, 3, generator=gen) * 0.3)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """splat-transform's CSV: one column per property, values as it holds them (float64)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    values = np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(rows[0]))
    return {name: values[:, i] for i, name in enumerate(rows[0])}


def run_ok(tools: NodeTools, *args: str | Path) -> None:
    done = tools.splat_transform_run(*args)
    assert done.returncode == 0, f"splat-transform {args} failed: {done.stderr}"


def report_issues(report: dict, name: str) -> list[dict]:
    """Print the validator's messages (so warnings show with -s) and return them."""
    issues = report["issues"]
    print(f"\n{name}: {issues['numErrors']} errors, {issues['numWarnings']} warnings, "
          f"{issues['numInfos']} infos, {issues['numHints']} hints")
    for m in issues["messages"]:
        print(f"  [{m['severity']}] {m['code']} {m.get('pointer', '')}: {m['message']}")
    return issues["messages"]


def test_validator_accepts_the_fused_mesh_glb(tools: NodeTools, tmp_path: Path):
    tsdf, colour = fuse_tsdf(*ring_views("sphere", size=96), voxels=48)
    path = tmp_path / "mesh.glb"
    mesh_to_glb(extract_mesh(tsdf, colour, max_faces=3000), path)
    report = tools.validate_glb(path)
    report_issues(report, "mesh.glb")
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0
    assert report["info"]["totalTriangleCount"] <= 3000


def test_validator_accepts_the_texture_baked_mesh_glb(tools: NodeTools, tmp_path: Path):
    views = ring_views("sphere", size=96)
    mesh = bake_texture(extract_mesh(*fuse_tsdf(*views, voxels=48), max_faces=2000), *views, size=256)
    path = tmp_path / "textured.glb"
    mesh_to_glb(mesh, path)
    report = tools.validate_glb(path)
    report_issues(report, "textured.glb")
    assert report["issues"]["numErrors"] == 0 and report["issues"]["numWarnings"] == 0
    assert report["info"]["materialCount"] == 1 and report["info"]["hasTextures"] is True


def test_validator_finds_no_error_in_the_splat_glb_beyond_the_extension_names(tools: NodeTools, tmp_path: Path):
    path = tmp_path / "splats.glb"
    gaussians_to_glb(blob(300, 3), path)
    messages = report_issues(tools.validate_glb(path), "splats.glb")
    errors = [m for m in messages if m["severity"] == 0]
    # validator 2.0.0-dev.3.10 predates extension-prefixed attribute names (KhronosGroup/glTF-Validator#252)
    flagged = {m["pointer"].rsplit("/", 1)[1] for m in errors if m["code"] == "MESH_PRIMITIVE_INVALID_ATTRIBUTE"}
    assert [m for m in errors if m["code"] != "MESH_PRIMITIVE_INVALID_ATTRIBUTE"] == []
    gltf, _ = read_glb(path)
    assert flagged == {a for a in gltf["meshes"][0]["primitives"][0]["attributes"] if a.startswith(f"{EXTENSION}:")}
    assert [m for m in messages if m["severity"] == 1] == []                     # no warnings


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Gaussians, Path]:
    """The export stage's model.ply and model.splat of 300 degree-3 Gaussians; returns (file-frame Gaussians, dir)."""
    stage = ExportStage(ExportSettings(formats=("ply", "splat")))
    out = stage.run(ExportInputs(blob()))
    stage.save(out, tmp_path)
    return out.file_gaussians, tmp_path


def test_splat_transform_reads_our_ply_exactly_and_writes_it_back_identical(tools: NodeTools, exported: tuple):
    g, d = exported
    run_ok(tools, d / "model.ply", d / "ply.csv")
    theirs = read_csv(d / "ply.csv")
    records, degree = ply.read(d / "model.ply")
    assert degree == 3 and list(theirs) == ply.property_names(3)
    for i, name in enumerate(ply.property_names(3)):
        assert np.array_equal(theirs[name].astype(np.float32), records[:, i]), name
    assert np.array_equal(theirs["x"].astype(np.float32), g.means[:, 0].numpy())
    run_ok(tools, d / "model.ply", d / "again.ply")
    assert (d / "again.ply").read_bytes() == (d / "model.ply").read_bytes()


def test_splat_transform_reads_our_splat_within_quantisation(tools: NodeTools, exported: tuple):
    g, d = exported
    run_ok(tools, d / "model.splat", d / "splat.csv")
    t = read_csv(d / "splat.csv")
    order = splat_order(g.log_scales.numpy(), g.opacity_logits.numpy())
    assert len(t["x"]) == g.num
    pos = np.stack([t["x"], t["y"], t["z"]], 1)
    assert np.array_equal(pos.astype(np.float32), g.means.numpy()[order])
    assert np.allclose(pos.min(0), g.means.numpy().min(0)) and np.allclose(pos.max(0), g.means.numpy().max(0))
    scale = np.stack([t[f"scale_{i}"] for i in range(3)], 1)
    assert np.allclose(scale, g.log_scales.numpy()[order], atol=1e-5)
    rgb = 0.5 + SH_C0 * np.stack([t[f"f_dc_{i}"] for i in range(3)], 1)
    ours = np.clip(0.5 + SH_C0 * g.sh_dc.double().numpy(), 0, 1)[order]
    assert np.abs(rgb - ours).max() <= 0.5 / 255 + 1e-6                          # 8-bit colour
    alpha = 1 / (1 + np.exp(-t["opacity"]))
    assert np.abs(alpha - torch.sigmoid(g.opacity_logits.double()).numpy()[order]).max() <= 0.5 / 255 + 1e-5
    q = np.stack([t[f"rot_{i}"] for i in range(4)], 1)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    unit = g.quats.double().numpy()[order]
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    assert np.percentile(1 - np.abs((q * unit).sum(1)), 99) < 1e-3             # 8-bit rotations, decoded their way


def test_splat_transform_glb_of_our_ply_matches_our_glb(tools: NodeTools, exported: tuple):
    _, d = exported                          # theirs: our .ply (file frame) -> their glTF frame; ours: from the world
    run_ok(tools, d / "model.ply", d / "theirs.glb")
    ours = d / "ours.glb"
    gaussians_to_glb(blob(), ours)                                   # the world-frame input of `exported`
    (gt, bt), (go, bo) = read_glb(d / "theirs.glb"), read_glb(ours)
    at, ao = gt["meshes"][0]["primitives"][0]["attributes"], go["meshes"][0]["primitives"][0]["attributes"]
    assert set(at) == set(ao)
    for name in ao:
        a, b = accessor_array(gt, bt, at[name]).astype(np.float64), accessor_array(go, bo, ao[name])
        if name.endswith("ROTATION"):
            a /= np.linalg.norm(a, axis=1, keepdims=True)
            assert np.allclose(np.abs((a * b).sum(1)), 1.0, atol=1e-6), name
        else:
            assert np.allclose(a, b, atol=1e-5), name


def test_splat_transform_accepts_broken_ply_files_that_we_refuse(tools: NodeTools, exported: tuple):
    _, d = exported
    raw = (d / "model.ply").read_bytes()
    (d / "truncated.ply").write_bytes(raw[:len(raw) * 2 // 3])
    with pytest.raises(FormatError, match="truncated"):
        ply.read(d / "truncated.ply")
    run_ok(tools, d / "truncated.ply", d / "truncated.csv")         # no error: the missing rows read as zeros
    rows = read_csv(d / "truncated.csv")
    assert len(rows["x"]) == 300 and np.all(np.stack(list(rows.values()))[:, -50:] == 0)
    records, _ = ply.read(d / "model.ply")
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    text = raw[:end].replace(b"binary_little_endian", b"ascii") + "\n".join(
        " ".join(repr(float(v)) for v in row) for row in records).encode() + b"\n"
    (d / "ascii.ply").write_bytes(text)
    with pytest.raises(FormatError, match="binary_little_endian"):
        ply.read(d / "ascii.ply")
    run_ok(tools, d / "ascii.ply", d / "ascii.csv")                # no error: the text is read as binary floats
    assert not np.allclose(read_csv(d / "ascii.csv")["x"].astype(np.float32), records[:, 0])
