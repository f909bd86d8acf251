"""TRELLIS's Gaussians in our world frame, and every export of them shown from the photo's side.

An L is placed by hand in TRELLIS's 16^3 voxel grid (the tiny model's; the published one is 64^3): a foot along
TRELLIS +X, an upright at its +X end, and a nub toward TRELLIS's canonical front (-Y) at the other end. The tiny
random-weight model samples its structured latent and decodes 32 Gaussians per voxel; `to_world` turns TRELLIS's
front onto world +X, the photo's side (ARCHITECTURE.md). So in the world the foot runs along +Y, the upright stands
at +Y and the nub points at +X; and each file the export stage writes, seen from its viewer's default camera, shows
what the photo's camera sees.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import trimesh
from viewer_conventions import BLUE, GREY, RED, agree, input_view, viewer_view

from ai_modules.export.functional import SPLAT_DTYPE
from ai_modules.export.gltf import accessor_array, read_glb
from ai_modules.export.stage import ExportInputs, ExportStage
from ai_modules.gaussians import Gaussians, rgb_to_sh_dc
from ai_modules.settings import ExportSettings
from ai_modules.trellis.gs_decoder import to_world
from ai_modules.trellis.pipeline import gaussians_at
from ai_modules.trellis.sampler import NoiseStream
from tests.tiny_models import tiny_trellis_models

RES = 16                                   # the tiny Gaussian decoder's grid
HALF_SPREAD = 0.75 / RES                   # tanh offsets stay within voxel_size / 2 = 0.75 voxel of the centre


def _l_voxels() -> tuple[torch.Tensor, np.ndarray]:
    """[N, 4] int32 (batch, x, y, z) of the L in TRELLIS's grid, and each voxel's part (0 foot, 1 upright, 2 nub)."""
    parts = []
    for part, (xs, ys, zs) in enumerate(((range(3, 13), range(7, 9), range(3, 5)),      # foot along +X
                                         (range(11, 13), range(7, 9), range(5, 13)),    # upright at the +X end
                                         (range(3, 5), range(3, 7), range(3, 5)))):     # nub toward -Y (front)
        parts += [(x, y, z, part) for x in xs for y in ys for z in zs]
    parts.sort()                                       # the lexicographic order occupancy_coords gives
    arr = np.array(parts)
    coords = torch.tensor(np.c_[np.zeros(len(arr)), arr[:, :3]], dtype=torch.int32)
    return coords, arr[:, 3]


@pytest.fixture(scope="module")
def l_shape() -> tuple[Gaussians, torch.Tensor, np.ndarray]:
    """The L's Gaussians in the world frame, its voxels and the part of each Gaussian."""
    models, settings = tiny_trellis_models()
    pixels = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        cond = models.conditioner.features(pixels)
    coords, part = _l_voxels()
    trellis, _ = gaussians_at(models, cond, coords, settings, NoiseStream(0))
    return to_world(trellis), coords, np.repeat(part, 32)


def test_each_gaussian_lies_in_its_voxel_turned_into_the_world(l_shape):
    g, coords, part = l_shape
    centres = (coords[:, 1:].double() + 0.5) / RES - 0.5                # TRELLIS frame, one per voxel
    world_centres = torch.stack([-centres[:, 1], centres[:, 0], centres[:, 2]], 1)   # yaw 90: (x, y, z) -> (-y, x, z)
    offsets = g.means.double() - world_centres.repeat_interleave(32, 0)
    assert g.num == 32 * len(coords) and float(offsets.abs().max()) <= HALF_SPREAD + 1e-6
    means = g.means.numpy()
    assert means[part == 0, 1].min() < -0.2 and means[part == 0, 1].max() > 0.2       # the foot runs along world Y
    assert means[part == 1, 1].mean() > 0.15 and means[part == 1, 2].max() > 0.25     # upright at +Y, standing up
    assert means[part == 2, 0].mean() > 0.1                                           # the nub faces the photo (+X)
    assert means[:, 2].min() > -0.35                                                  # nothing below the foot


def test_every_export_shows_the_l_from_the_photos_side(l_shape, tmp_path):
    g, _, part = l_shape
    colours = np.array([GREY, RED, BLUE])[part]
    g = dataclasses.replace(g, sh_dc=rgb_to_sh_dc(torch.tensor(colours).float()),
                            opacity_logits=torch.full((g.num,), 6.0))
    photo = input_view(g.means.numpy(), colours)
    assert agree(photo, viewer_view(g.means.numpy(), colours)) < 0.6    # the raw world frame would look wrong
    stage = ExportStage(ExportSettings(formats=("ply", "splat", "splat_glb", "glb"), mesh_views=8,
                                       mesh_view_size=96, mesh_voxels=64))
    out = stage.run(ExportInputs(g))
    files = stage.save(out, tmp_path)
    roll = np.array([-1.0, -1.0, 1.0])                                  # SuperSplat's 180-degree roll about Z

    ply = Gaussians.load_ply(tmp_path / files["ply"])
    assert agree(photo, viewer_view(ply.means.numpy() * roll, colours)) > 0.95

    splat = np.frombuffer((tmp_path / files["splat"]).read_bytes(), SPLAT_DTYPE)
    splat_colours = splat["rgba"][:, :3] / 255.0
    assert agree(photo, viewer_view(splat["position"] * roll, splat_colours)) > 0.95

    gltf, binary = read_glb(tmp_path / files["splat_glb"])
    positions = accessor_array(gltf, binary, gltf["meshes"][0]["primitives"][0]["attributes"]["POSITION"])
    assert agree(photo, viewer_view(positions, colours)) > 0.95

    # The mesh is fused from renders, so it is fatter than the points: its file is compared with its own surface as
    # the photo's camera sees it in the world frame (and that surface with the L's parts).
    world_samples, world_faces = trimesh.sample.sample_surface(out.mesh, 6000, seed=0)
    world_colours = np.asarray(out.mesh.visual.vertex_colors)[:, :3] / 255.0
    seen = input_view(world_samples, world_colours[out.mesh.faces[world_faces, 0]])
    mesh = trimesh.load(tmp_path / files["glb"], force="mesh", skip_materials=True)       # the glTF frame as written
    samples, faces = trimesh.sample.sample_surface(mesh, 6000, seed=0)
    vertex_colours = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0
    assert agree(seen, viewer_view(samples, vertex_colours[mesh.faces[faces, 0]])) > 0.9
    red = world_colours[:, 0] - world_colours[:, 2] > 0.3
    blue = world_colours[:, 2] - world_colours[:, 0] > 0.3
    assert out.mesh.vertices[red, 1].mean() > 0.1 and out.mesh.vertices[red, 2].mean() > 0.0   # upright: +Y, high
    assert out.mesh.vertices[blue, 0].mean() > 0.05 and out.mesh.vertices[blue, 1].mean() < -0.1   # nub: +X, -Y
