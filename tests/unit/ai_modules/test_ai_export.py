"""The export stage: viewer frame, .splat layout, preview renderer, non-finite handling."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from ai_modules.export import (WORLD_TO_FILE, ExportInputs, ExportStage, contact_sheet, render_points,
                               splat_records, to_file_frame)
from ai_modules.export.functional import SPLAT_DTYPE, splat_order
from ai_modules.cameras import intrinsics, orbit_camera
from ai_modules.gaussians import Gaussians
from ai_modules.geometry import fibonacci_sphere, quat_to_matrix, sh_basis
from ai_modules.settings import ExportSettings


def blob(n: int = 40, degree: int = 0, seed: int = 0) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2 - 1
    return Gaussians(means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.6, quats=torch.randn(n, 4, generator=gen),
                     log_scales=torch.full((n, 3), -4.0) + torch.rand(n, 3, generator=gen),
                     opacity_logits=torch.randn(n, generator=gen) * 2, sh_dc=torch.randn(n, 3, generator=gen),
                     sh_rest=torch.randn(n, k, 3, generator=gen))


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


def test_preview_renderer_draws_the_object_where_expected():
    g = Gaussians(means=torch.tensor([[0.0, 0.2, 0.0]]), quats=torch.tensor([[1.0, 0, 0, 0]]),
                  log_scales=torch.full((1, 3), np.log(0.02)), opacity_logits=torch.tensor([5.0]),
                  sh_dc=torch.tensor([[(1 - 0.5) / 0.28209479177387814, -0.5 / 0.28209479177387814,
                                       -0.5 / 0.28209479177387814]]), sh_rest=torch.zeros(1, 0, 3))
    image = render_points(g, orbit_camera(0, 0, 1.5), intrinsics(100.0, 64, 64), 64, 64)
    assert image.shape == (64, 64, 3)
    u = 32 + 100 * 0.2 / 1.5                                                 # world +Y -> image right
    assert image[32, int(u)].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=0.1)
    assert image[32, 64 - int(u)].tolist() == [1.0, 1.0, 1.0]
    assert image[5, 5].tolist() == [1.0, 1.0, 1.0]
    sheet = contact_sheet(blob(200), (0, 90, 180, 270, 45), 30.0, 32)
    assert sheet.shape == (64, 128, 3) and sheet.dtype == np.uint8


def test_stage_writes_requested_formats(tmp_path):
    g = blob(100)
    stage = ExportStage(ExportSettings(preview_size=32))
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
        out = ExportStage(ExportSettings(formats=("splat",))).run(ExportInputs(g))
    assert out.metrics["dropped_nonfinite"] == 2 and len(out.splat) == 18 * 32
    strict = ExportStage(ExportSettings(formats=("ply",), on_nonfinite="error"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="non-finite"):
            strict.run(ExportInputs(g))
