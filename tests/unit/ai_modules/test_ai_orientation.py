"""Each export, seen from its viewer's default camera, shows what the input photo showed.

The input photo's camera sits on world +X looking at the origin: screen right = world +Y,
screen up = world +Z. Viewers look from +Z toward -Z with Y up and X right: three.js and
model-viewer for .glb (the file as written), SuperSplat / splat-transform for .ply/.splat
(they also roll the file 180 degrees about Z on load). For each export we splat the file's
points orthographically into that default view and compare the picture with the input view.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from ai_modules.export.functional import to_file_frame
from ai_modules.export.gltf import glb_to_gaussians, gaussians_to_glb, read_glb, accessor_array
from ai_modules.export.mesh import mesh_to_glb
from ai_modules.gaussians import Gaussians, rgb_to_sh_dc, sh_dc_to_rgb
from viewer_conventions import BLUE, GREEN, GREY, RED, agree, input_view, viewer_view


def _box_surface(n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """Points on an asymmetric box: top (+Z) red, photo's right side (+Y) green, front (+X) blue."""
    rng = np.random.default_rng(0)
    half = np.array([0.3, 0.2, 0.35])
    axis = rng.integers(0, 3, n)
    sign = rng.choice([-1.0, 1.0], n)
    pts = (rng.random((n, 3)) * 2 - 1) * half
    pts[np.arange(n), axis] = sign * half[axis]
    colours = np.tile(GREY, (n, 1))
    colours[(axis == 2) & (sign > 0)] = RED
    colours[(axis == 1) & (sign > 0)] = GREEN
    colours[(axis == 0) & (sign > 0)] = BLUE
    return pts, colours


def _gaussians(pts: np.ndarray, colours: np.ndarray) -> Gaussians:
    n = len(pts)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return Gaussians(means=torch.tensor(pts, dtype=torch.float32), quats=quats, log_scales=torch.full((n, 3), -5.0),
                     opacity_logits=torch.full((n,), 4.0), sh_dc=rgb_to_sh_dc(torch.tensor(colours).float()),
                     sh_rest=torch.zeros(n, 0, 3))


def test_the_reference_views_differ_when_the_frame_is_wrong():
    pts, colours = _box_surface()
    seen = input_view(pts, colours)
    assert agree(seen, viewer_view(pts, colours)) < 0.6   # the raw world frame would show the wrong side


def test_ply_and_splat_frame_in_supersplat():
    pts, colours = _box_surface()
    file_g = to_file_frame(_gaussians(pts, colours))
    file_pts = file_g.means.numpy()
    viewer_pts = file_pts * np.array([-1.0, -1.0, 1.0])             # the viewer's 180-degree roll about Z
    shown = viewer_view(viewer_pts, sh_dc_to_rgb(file_g.sh_dc).numpy())
    assert agree(input_view(pts, colours), shown) > 0.95


def test_mesh_glb_in_three_js(tmp_path):
    box = trimesh.creation.box(extents=(0.6, 0.4, 0.7))
    box.unmerge_vertices()  # one colour per face, not blended at shared corners
    normals = box.face_normals
    face_colours = np.tile(GREY, (len(box.faces), 1))
    face_colours[normals[:, 2] > 0.9] = RED
    face_colours[normals[:, 1] > 0.9] = GREEN
    face_colours[normals[:, 0] > 0.9] = BLUE
    box.visual.face_colors = np.c_[face_colours * 255, np.full(len(box.faces), 255)].astype(np.uint8)
    mesh_to_glb(box, tmp_path / "box.glb")
    loaded = trimesh.load(tmp_path / "box.glb", force="mesh", skip_materials=True)   # as written: glTF frame
    samples, face_idx = trimesh.sample.sample_surface(loaded, 6000, seed=0)
    vertex_colours = np.asarray(loaded.visual.vertex_colors)[:, :3] / 255.0
    shown = viewer_view(samples, vertex_colours[loaded.faces[face_idx, 0]])
    world_samples, world_faces = trimesh.sample.sample_surface(box, 6000, seed=0)
    assert agree(input_view(world_samples, face_colours[world_faces]), shown) > 0.9


def test_splat_glb_in_three_js(tmp_path):
    pts, colours = _box_surface()
    gaussians_to_glb(_gaussians(pts, colours), tmp_path / "box.splats.glb")
    gltf, binary = read_glb(tmp_path / "box.splats.glb")
    positions = accessor_array(gltf, binary, gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    assert agree(input_view(pts, colours), viewer_view(positions, colours)) > 0.95
    assert torch.allclose(glb_to_gaussians(tmp_path / "box.splats.glb").means, torch.tensor(pts).float(), atol=1e-5)
