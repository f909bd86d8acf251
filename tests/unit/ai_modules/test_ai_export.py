"""The export stage: viewer frame, .splat layout, rendered preview/turntable/mesh, .glb files, resume,
progress and stop between formats, non-finite handling."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from ai_modules.base import StageHooks
from ai_modules.errors import FormatError, PipelineStopped
from ai_modules.export import (WORLD_TO_FILE, ExportInputs, ExportStage, contact_sheet, mesh_cameras,
                               splat_records, to_file_frame)
from ai_modules.export.functional import SPLAT_DTYPE, splat_order
from ai_modules.export.gltf import glb_to_gaussians, read_glb
from ai_modules.gaussians import Gaussians, rgb_to_sh_dc
from ai_modules.geometry import fibonacci_sphere, quat_to_matrix, sh_basis
from ai_modules.settings import EXPORT_FORMATS, ExportSettings

RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.2, 0.9)
#: Small sizes that keep every rendered format well under a second on a 2-core CPU.
FAST = {"preview_size": 48, "mesh_views": 4, "mesh_view_size": 64, "mesh_voxels": 32, "mesh_max_faces": 1000,
        "turntable_frames": 4, "turntable_size": 48}


def blob(n: int = 40, degree: int = 0, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.6, quats=torch.randn(n, 4, generator=gen),
                     log_scales=torch.full((n, 3), -4.0) + torch.rand(n, 3, generator=gen),
                     opacity_logits=torch.randn(n, generator=gen) * 2, sh_dc=torch.randn(n, 3, generator=gen),
                     sh_rest=torch.randn(n, k, 3, generator=gen))


def sphere(n: int = 3000, radius: float = 0.3) -> Gaussians:
    """Opaque round Gaussians covering a sphere: red on the front (world +X, the photo's side), blue elsewhere."""
    dirs = fibonacci_sphere(n).float()
    rgb = torch.where(dirs[:, :1] > 0.3, torch.tensor(RED), torch.tensor(BLUE))
    return Gaussians(means=dirs * radius, quats=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                     log_scales=torch.full((n, 3), float(np.log(0.02))), opacity_logits=torch.full((n,), 4.0),
                     sh_dc=rgb_to_sh_dc(rgb), sh_rest=torch.zeros(n, 0, 3))


def test_world_to_file_is_a_proper_rotation_with_the_top_at_minus_y():
    r = WORLD_TO_FILE
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    assert np.allclose(r @ [0, 0, 1], [0, -1, 0])             # world up -> file -Y (shown up after the 180 roll)
    viewer = np.diag([-1, -1, 1]) @ r                          # PlayCanvas viewers roll files 180 deg about Z
    assert np.allclose(viewer @ [0, 0, 1], [0, 1, 0])          # upright in the viewer (Y up)
    assert np.allclose(viewer @ [1, 0, 0], [0, 0, 1])          # the photographed front faces the +Z camera
    assert np.allclose(viewer @ [0, 1, 0], [1, 0, 0])          # the photo's right is the screen's right


def test_file_frame_conversion_rotates_means_covariances_and_colours():
    g = blob(30, degree=2)
    f = to_file_frame(g)
    r = torch.tensor(WORLD_TO_FILE, dtype=torch.float32)
    assert torch.allclose(f.means, g.means @ r.T, atol=1e-6)
    cov = lambda x: quat_to_matrix(x.quats) @ torch.diag_embed(torch.exp(2 * x.log_scales)) @ \
        quat_to_matrix(x.quats).transpose(1, 2)  # noqa: E731
    assert torch.allclose(cov(f), r @ cov(g) @ r.T, atol=1e-6)
    dirs = fibonacci_sphere(50).float()
    world = torch.einsum("mk,nkc->nmc", sh_basis(dirs, 2), g.sh_rest)
    file = torch.einsum("mk,nkc->nmc", sh_basis(dirs @ r.T, 2), f.sh_rest)
    assert torch.allclose(world, file, atol=1e-4)
    top = torch.tensor([[0.0, 0.0, 0.4]])
    moved = to_file_frame(Gaussians(top, torch.tensor([[1.0, 0, 0, 0]]), torch.zeros(1, 3), torch.zeros(1),
                                    torch.zeros(1, 3), torch.zeros(1, 0, 3)))
    assert torch.allclose(moved.means, torch.tensor([[0.0, -0.4, 0.0]]))
    with pytest.raises(ValueError, match="determinant"):
        to_file_frame(g, np.diag([1.0, 1.0, -1.0]))


def test_splat_records_layout_order_and_quantisation():
    g = blob(64)
    g.quats[0] = torch.tensor([2.0, 0.0, 0.0, 0.0])
    g.quats[1] = torch.tensor([0.0, -3.0, 0.0, 0.0])
    g.quats[2] = torch.tensor([0.5, 0.5, 0.5, 0.5])
    rec = splat_records(g)
    assert SPLAT_DTYPE.itemsize == 32 and len(rec.tobytes()) == 64 * 32
    ls, op = g.log_scales.double().numpy(), g.opacity_logits.double().numpy()
    key = np.exp(ls.sum(axis=1)) / (1 + np.exp(-op))
    order = np.argsort(-key, kind="stable")
    assert (np.diff(key[order]) <= 0).all()
    assert np.array_equal(order, splat_order(g.log_scales.numpy(), g.opacity_logits.numpy()))
    assert np.array_equal(rec["position"], g.means.numpy()[order])
    i = 5
    src = order[i]
    assert np.allclose(rec["position"][i], g.means[src].numpy())
    assert np.allclose(rec["scale"][i], np.exp(g.log_scales[src].numpy()), rtol=1e-6)
    rgb = np.clip(0.5 + 0.28209479177387814 * g.sh_dc[src].double().numpy(), 0, 1)
    assert np.array_equal(rec["rgba"][i, :3], np.rint(rgb * 255).astype(np.uint8))
    assert rec["rgba"][i, 3] == np.rint(255 / (1 + np.exp(-g.opacity_logits[src].double().item())))
    where = {int(k): int(np.nonzero(order == k)[0][0]) for k in (0, 1, 2)}
    assert rec["rot"][where[0]].tolist() == [255, 128, 128, 128]           # unit w: 1*128+128 clipped to 255
    assert rec["rot"][where[1]].tolist() == [128, 0, 128, 128]             # normalised first
    assert rec["rot"][where[2]].tolist() == [192, 192, 192, 192]


def test_splat_sort_is_stable_for_ties():
    ls = np.zeros((4, 3))
    op = np.zeros(4)
    assert splat_order(ls, op).tolist() == [0, 1, 2, 3]
    ls[2] = 1.0
    assert splat_order(ls, op).tolist() == [2, 0, 1, 3]


def test_contact_sheet_renders_the_object_in_every_tile_through_the_renderer():
    sheet = contact_sheet(sphere(), (0, 90, 180, 270, 45), 30.0, 32)
    assert sheet.shape == (64, 128, 3) and sheet.dtype == np.uint8
    for r, c in ((0, 0), (0, 1), (0, 2), (0, 3), (1, 0)):
        tile = sheet[r * 32:(r + 1) * 32, c * 32:(c + 1) * 32].astype(int)
        assert (tile[12:20, 12:20] < 230).any(axis=-1).all()                # the object fills the centre
        assert (tile[-3:, :3] == 255).all() and (tile[-3:, -3:] == 255).all()  # white corners (no label there)
    front = sheet[10:22, 10:22].reshape(-1, 3).mean(axis=0)                      # az 0: the red front
    back = sheet[10:22, 64 + 10:64 + 22].reshape(-1, 3).mean(axis=0)              # az 180: the blue back
    assert front[0] > 150 > front[2] and back[2] > 150 > back[0]
    labelled, unlabelled = (contact_sheet(sphere(), (0.0,), 30.0, 64, labels=on) for on in (True, False))
    assert (labelled[:9, :7] < 255).any() and (unlabelled[:9, :7] == 255).all()   # the label, top left


def test_mesh_cameras_are_the_syncdreamer_ring_plus_a_lower_ring():
    viewmats, ks = mesh_cameras(8, 128)
    assert viewmats.shape == (12, 4, 4) and ks.shape == (12, 3, 3)
    assert np.allclose(ks[:, 0, 0], 140.0) and np.allclose(ks[:, :2, 2], 64.0)
    centres = -np.einsum("vji,vj->vi", viewmats[:, :3, :3], viewmats[:, :3, 3])
    assert np.allclose(np.linalg.norm(centres, axis=1), 1.5)
    assert np.allclose(np.degrees(np.arcsin(centres[:, 2] / 1.5)), [30] * 8 + [-30] * 4)
    azimuths = np.degrees(np.arctan2(centres[:, 1], centres[:, 0])) % 360
    assert np.allclose(azimuths, [0, 45, 90, 135, 180, 225, 270, 315, 45, 135, 225, 315])


def test_glb_is_a_coloured_mesh_within_the_face_budget(tmp_path: Path):
    stage = ExportStage(ExportSettings(formats=("glb",), **FAST))
    stage.load("cpu")
    out = stage.run(ExportInputs(sphere()))
    assert stage.save(out, tmp_path) == {"glb": "model.glb"}
    assert out.metrics["mesh_faces"] == len(out.mesh.faces) and out.metrics["render_device"] == "cpu"
    mesh = trimesh.load(tmp_path / "model.glb", force="mesh", skip_materials=True, process=False)
    assert 100 < len(mesh.faces) <= 1000 and mesh.is_watertight
    assert mesh.visual.kind == "vertex" and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
    radius = np.linalg.norm(mesh.vertices, axis=1)
    assert 0.3 < np.median(radius) < 0.36 and radius.max() < 0.4    # a sphere of blobs (sigma 0.02) seen by 6 views
    front = mesh.vertices[:, 2] > 0.2                                          # glTF +Z = world +X: red
    back = mesh.vertices[:, 2] < -0.2
    colours = mesh.visual.vertex_colors[:, :3] / 255.0
    assert np.abs(colours[front].mean(axis=0) - RED).max() < 0.15
    assert np.abs(colours[back].mean(axis=0) - BLUE).max() < 0.15


def test_splat_glb_parses_back_to_the_same_gaussians(tmp_path: Path):
    g = sphere(500)
    stage = ExportStage(ExportSettings(formats=("splat_glb",)))
    assert stage.save(stage.run(ExportInputs(g)), tmp_path) == {"splat_glb": "model.splats.glb"}
    back = glb_to_gaussians(tmp_path / "model.splats.glb")
    assert back.num == g.num
    assert torch.allclose(back.means, g.means, atol=1e-6)                      # world frame again
    gltf, _ = read_glb(tmp_path / "model.splats.glb")
    assert "KHR_gaussian_splatting" in gltf["extensionsUsed"]


def test_turntable_is_an_animated_webp_of_the_requested_frames(tmp_path: Path):
    stage = ExportStage(ExportSettings(formats=("turntable",), turntable_frames=5, turntable_size=40))
    out = stage.run(ExportInputs(sphere()))
    assert out.turntable.shape == (5, 40, 40, 3) and out.turntable.dtype == np.uint8
    assert stage.save(out, tmp_path) == {"turntable": "turntable.webp"}
    with Image.open(tmp_path / "turntable.webp") as image:
        assert image.format == "WEBP" and image.is_animated and image.n_frames == 5 and image.size == (40, 40)
        assert image.info.get("loop") == 0
    first, half = out.turntable[0, 16:24, 16:24].mean(axis=(0, 1)), out.turntable[2, 16:24, 16:24].mean(axis=(0, 1))
    assert first[0] > 150 > first[2]                                            # azimuth 0: the red front
    assert half[2] > 150 > half[0]                                              # azimuth 144: mostly the back
    assert (out.turntable[:, :2, :2] == 255).all()                              # white corners


def test_all_formats_are_written_and_resume_from_disk(tmp_path: Path):
    g = sphere(2000)
    stage = ExportStage(ExportSettings(formats=EXPORT_FORMATS, **FAST))
    out = stage.run(ExportInputs(g))
    files = stage.save(out, tmp_path)
    assert files == {"ply": "model.ply", "splat": "model.splat", "glb": "model.glb",
                     "splat_glb": "model.splats.glb", "preview": "preview.png", "turntable": "turntable.webp"}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files.values())
    assert set(out.metrics["seconds"]) == set(EXPORT_FORMATS)
    back = stage.load_outputs(tmp_path)
    assert back.file_gaussians.num == g.num and back.splat == out.splat and back.splat_glb == out.splat_glb
    assert np.array_equal(back.preview, out.preview)
    assert back.turntable.shape == out.turntable.shape                          # lossy WebP: shape, not values
    assert np.abs(back.turntable.astype(int) - out.turntable).mean() < 8
    assert len(back.mesh.faces) == len(out.mesh.faces)
    assert np.allclose(back.mesh.vertices, out.mesh.vertices, atol=1e-5)          # back in the world frame
    assert np.array_equal(back.mesh.visual.vertex_colors, out.mesh.visual.vertex_colors)
    (tmp_path / "model.glb").write_bytes(b"not a glb")
    with pytest.raises(FormatError, match="model.glb"):
        stage.load_outputs(tmp_path)


def test_progress_and_stop_are_checked_between_formats():
    events = []
    stage = ExportStage(ExportSettings(formats=("preview", "ply", "splat_glb"), preview_size=32))
    stage.run(ExportInputs(sphere(200)), StageHooks(progress=lambda f, m: events.append((f, m))))
    assert events == [(1 / 3, "computing splat_glb"), (2 / 3, "computing preview")]     # 0.0 is the pipeline's
    asked = []

    def stop_at_second_check() -> bool:
        asked.append(1)
        return len(asked) == 2

    with pytest.raises(PipelineStopped) as info:
        stage.run(ExportInputs(sphere(200)), StageHooks(should_stop=stop_at_second_check, stage="export"))
    assert info.value.next_stage == "export" and len(asked) == 2                # checked after ply, then stopped


def test_stage_writes_requested_formats(tmp_path):
    g = blob(100)
    stage = ExportStage(ExportSettings(formats=("ply", "splat", "preview"), preview_size=32))
    out = stage.run(ExportInputs(g))
    files = stage.save(out, tmp_path)
    assert files == {"ply": "model.ply", "splat": "model.splat", "preview": "preview.png"}
    assert (tmp_path / "model.splat").stat().st_size == 100 * 32
    back = stage.load_outputs(tmp_path)
    assert back.file_gaussians.sh_degree == 3 and back.file_gaussians.num == 100
    assert torch.allclose(back.file_gaussians.means, to_file_frame(g).means)
    only = ExportStage(ExportSettings(formats=("splat",)))
    assert only.run(ExportInputs(g)).file_gaussians is None


def test_nonfinite_gaussians_are_dropped_with_a_warning_or_rejected():
    g = blob(20)
    g.means[3, 1] = float("nan")
    g.log_scales[7, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="2 of 20"):
        out = ExportStage(ExportSettings(formats=("splat", "splat_glb"))).run(ExportInputs(g))
    assert out.metrics["dropped_nonfinite"] == 2 and len(out.splat) == 18 * 32
    gltf, _ = read_glb(out.splat_glb)
    assert gltf["accessors"][0]["count"] == 18                                  # the sanitized Gaussians
    strict = ExportStage(ExportSettings(formats=("ply",), on_nonfinite="error"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="non-finite"):
            strict.run(ExportInputs(g))
