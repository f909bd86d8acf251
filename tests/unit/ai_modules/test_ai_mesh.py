"""Mesh export: TSDF fusion of analytic views, marching cubes, decimation, colours, .glb orientation.

The views are ray-cast analytically (no renderer): a sphere (r = 0.3) and a box,
coloured by the dominant axis of the surface normal, seen by SyncDreamer's ring
(16 cameras, elevation 30, distance 1.5, f = 280 px at 256 px).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from ai_modules.cameras import ring_cameras
from ai_modules.export.gltf import WORLD_TO_GLTF, read_glb
from ai_modules.export.mesh import extract_mesh, mesh_to_glb
from ai_modules.export.tsdf import fuse_tsdf, voxel_centres

VOXEL = 1.0 / 128
RADIUS = 0.3
HALF = np.array([0.25, 0.2, 0.3])                       # box half-extents
FACE_COLOURS = np.array([[0.9, 0.2, 0.2], [0.2, 0.8, 0.3], [0.2, 0.3, 0.9],      # +X +Y +Z
                         [0.9, 0.8, 0.2], [0.7, 0.3, 0.8], [0.3, 0.8, 0.8]])     # -X -Y -Z


def face_colour(normals: np.ndarray) -> np.ndarray:
    """Colour [...,3] of the dominant signed axis of `normals` [...,3]."""
    axis = np.abs(normals).argmax(-1)
    negative = np.take_along_axis(normals, axis[..., None], -1)[..., 0] < 0
    return FACE_COLOURS[axis + 3 * negative]


def raycast(kind: str, view: np.ndarray, k: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Analytic rgb [H,W,3] (white background), depth [H,W] (camera z, 0 if empty), alpha [H,W] of one view."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    dirs = np.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], np.ones_like(xs)], -1) @ view[:3, :3]
    origin = -view[:3, :3].T @ view[:3, 3]          # camera z of dirs is 1, so the ray parameter t is the depth
    if kind == "sphere":
        a, b, c = (dirs * dirs).sum(-1), dirs @ origin, origin @ origin - RADIUS ** 2
        disc = b * b - a * c
        t = (-b - np.sqrt(np.maximum(disc, 0.0))) / a
        hit = disc > 0
        normals = (origin + t[..., None] * dirs) / RADIUS
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            t1, t2 = (-HALF - origin) / dirs, (HALF - origin) / dirs
        near = np.minimum(t1, t2)
        t = near.max(-1)
        hit = (t <= np.maximum(t1, t2).min(-1)) & (t > 0)
        axis = near.argmax(-1)[..., None]
        normals = np.zeros_like(dirs)
        np.put_along_axis(normals, axis, -np.sign(np.take_along_axis(dirs, axis, -1)), -1)
    rgb = np.where(hit[..., None], face_colour(normals), 1.0)
    return rgb, np.where(hit, t, 0.0), hit.astype(np.float32)


def ring_views(kind: str, size: int = 256) -> tuple[np.ndarray, ...]:
    """(rgbs [16,S,S,3], depths [16,S,S], alphas [16,S,S], viewmats [16,4,4], Ks [16,3,3]) of `kind`."""
    viewmats, ks = ring_cameras([22.5 * i for i in range(16)], 30.0, size)
    rgb, depth, alpha = zip(*(raycast(kind, v, k, size) for v, k in zip(viewmats, ks)))
    return (np.stack(rgb).astype(np.float32), np.stack(depth).astype(np.float32), np.stack(alpha), viewmats, ks)


def surface_distance(kind: str, points: np.ndarray) -> np.ndarray:
    """Unsigned distance [M] from points [M,3] to the true surface."""
    if kind == "sphere":
        return np.abs(np.linalg.norm(points, axis=1) - RADIUS)
    q = np.abs(points) - HALF
    return np.abs(np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0))


@functools.cache
def fused(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """TSDF and colour volumes (128^3) of `kind`, fused once per session (about 1.3 s each)."""
    return fuse_tsdf(*ring_views(kind))


@functools.cache
def fused_mesh(kind: str) -> trimesh.Trimesh:
    """The mesh of `fused(kind)` at the default face budget (callers must not modify it)."""
    return extract_mesh(*fused(kind))


def test_sphere_mesh_is_closed_accurate_and_bounded():
    m = fused_mesh("sphere")
    assert m.is_watertight and m.is_winding_consistent and m.body_count == 1
    assert m.volume > 0                                              # faces point outward
    err = surface_distance("sphere", m.vertices)
    seen = m.vertices[:, 2] > -0.2                                   # the ring sees down to z = -0.22
    assert err.mean() < 1.5 * VOXEL                                  # measured: 0.43 voxel
    assert err[seen].mean() < 0.3 * VOXEL                            # measured: 0.07 voxel
    assert m.volume == pytest.approx(4 / 3 * np.pi * RADIUS ** 3, rel=0.05)      # measured: +2 %
    lo, hi = m.bounds
    assert np.allclose(hi, [RADIUS] * 3, atol=1.5 * VOXEL) and np.allclose(lo[:2], -RADIUS, atol=1.5 * VOXEL)
    assert -0.42 < lo[2] < -RADIUS + VOXEL                           # underside: the silhouette hull (unseen)


def test_box_mesh_is_closed_and_accurate_where_seen():
    m = fused_mesh("box")
    assert m.is_watertight and m.is_winding_consistent and m.volume > 0
    err = surface_distance("box", m.vertices)
    seen = m.vertices[:, 2] > -HALF[2] + VOXEL
    assert err[seen].mean() < 0.3 * VOXEL                            # measured: 0.09 voxel
    assert err.mean() < 3.0 * VOXEL                                  # measured: 2.0 voxels (hull wedge below)
    lo, hi = m.vertices[seen].min(axis=0), m.vertices[seen].max(axis=0)
    assert np.allclose(hi, HALF, atol=1.5 * VOXEL) and np.allclose(lo[:2], -HALF[:2], atol=1.5 * VOXEL)
    assert 8 * HALF.prod() < m.volume < 1.15 * 8 * HALF.prod()       # the unseen underside bulges (+12 %)


@pytest.mark.parametrize("kind", ["sphere", "box"])
def test_vertex_colours_match_the_faces(kind: str):
    m = fused_mesh(kind)
    v = m.vertices
    if kind == "sphere":
        normals = v / np.linalg.norm(v, axis=1, keepdims=True)
        top2 = np.sort(np.abs(normals), axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0] > 0.15) & (v[:, 2] > -0.2)
    else:
        q = np.abs(v) / HALF
        normals = np.where(q == q.max(axis=1, keepdims=True), np.sign(v), 0.0)
        margin = HALF - np.abs(v)                                    # distance to the two other face pairs
        clear = (np.sort(margin, axis=1)[:, 1] > 4 * VOXEL) & (v[:, 2] > -HALF[2] + 4 * VOXEL)
    got = m.visual.vertex_colors[clear, :3] / 255.0
    want = face_colour(normals[clear])
    close = np.abs(got - want).max(axis=1) < 0.06
    assert clear.sum() > 1000 and close.mean() > 0.97


def test_decimation_keeps_the_budget_and_the_shape():
    for kind in ("sphere", "box"):
        m = extract_mesh(*fused(kind), max_faces=2000)
        assert len(m.faces) <= 2000 and m.is_watertight
        assert surface_distance(kind, m.vertices[m.vertices[:, 2] > -0.2]).mean() < 1.5 * VOXEL


def test_a_budget_below_the_decimators_stall_point_is_still_met():
    m = extract_mesh(*fused("box"), max_faces=300)         # decimation alone stalls near 1100 faces here
    assert len(m.faces) <= 300 and m.is_watertight
    assert surface_distance("box", m.vertices[m.vertices[:, 2] > -0.2]).mean() < 3 * VOXEL


def test_silhouettes_alone_give_a_closed_hull_around_the_object():
    rgbs, depths, alphas, viewmats, ks = ring_views("sphere", size=96)
    tsdf, colour = fuse_tsdf(rgbs, np.full_like(depths, np.nan), alphas, viewmats, ks, voxels=48)
    m = extract_mesh(tsdf, colour)
    assert m.is_watertight
    assert np.linalg.norm(m.vertices, axis=1).min() > RADIUS - 2.0 / 48      # the hull contains the sphere
    assert m.bounds[0, 2] < -RADIUS - 0.05                                    # ... and bulges below it (unseen)


def test_small_components_are_dropped_unless_asked():
    c = voxel_centres(48)
    x, y, z = np.meshgrid(c, c, c, indexing="ij")
    big = np.sqrt(x ** 2 + y ** 2 + z ** 2) - 0.3
    small = np.sqrt((x - 0.42) ** 2 + (y - 0.42) ** 2 + (z - 0.42) ** 2) - 0.05
    tsdf = np.clip(np.minimum(big, small) / 0.05, -1, 1).astype(np.float32)
    colour = np.full((48, 48, 48, 3), 0.5, np.float32)
    assert extract_mesh(tsdf, colour, keep_fraction=0.1).body_count == 1
    assert extract_mesh(tsdf, colour, keep_fraction=0.0).body_count == 2


def test_torch_and_numpy_inputs_fuse_the_same():
    views = ring_views("box", size=48)
    a = fuse_tsdf(*views, voxels=24)
    b = fuse_tsdf(*(torch.from_numpy(np.ascontiguousarray(v)) for v in views), voxels=24)
    assert np.allclose(a[0], b[0], atol=1e-6) and np.allclose(a[1], b[1], atol=1e-6)


def test_glb_round_trip_is_upright_and_faces_the_default_camera(tmp_path: Path):
    r = WORLD_TO_GLTF
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    assert np.allclose(r @ [0, 0, 1], [0, 1, 0])                     # world up -> glTF +Y (up)
    assert np.allclose(r @ [1, 0, 0], [0, 0, 1])                     # world front -> glTF +Z (toward the camera)
    assert np.allclose(r @ [0, 1, 0], [1, 0, 0])                     # the photo's right -> screen right
    m = fused_mesh("box")
    path = tmp_path / "box.glb"
    mesh_to_glb(m, path)
    back = trimesh.load(path, force="mesh", skip_materials=True, process=False)   # keeps COLOR_0
    assert len(back.faces) == len(m.faces) and back.is_watertight
    assert np.allclose(back.vertices, m.vertices @ r.T, atol=1e-6)
    assert back.bounds[1, 1] == pytest.approx(HALF[2], abs=1.5 * VOXEL)        # top of the box at +Y
    front = back.vertices[:, 2] > HALF[0] - 0.5 * VOXEL                        # glTF +Z face: the world +X face
    assert front.sum() > 20
    assert np.abs(np.median(back.visual.vertex_colors[front, :3], axis=0) / 255 - FACE_COLOURS[0]).max() < 0.06
    gltf, _ = read_glb(path)
    assert gltf["extensionsUsed"] == ["KHR_materials_unlit"]
    assert gltf["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0
    assert set(gltf["meshes"][0]["primitives"][0]["attributes"]) == {"POSITION", "COLOR_0"}


def test_bad_arguments_raise_value_errors():
    views = list(ring_views("sphere", size=16))
    with pytest.raises(ValueError, match="`depths`"):
        fuse_tsdf(views[0], views[1][:, :8], *views[2:], voxels=8)
    with pytest.raises(ValueError, match="`voxels`"):
        fuse_tsdf(*views, voxels=4)
    with pytest.raises(ValueError, match="`alpha_min`"):
        fuse_tsdf(*views, voxels=8, alpha_min=1.0)
    empty = np.ones((8, 8, 8), np.float32)
    with pytest.raises(ValueError, match="no surface"):
        extract_mesh(empty, np.zeros((8, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="`colour`"):
        extract_mesh(-empty, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="`mesh`"):
        mesh_to_glb(trimesh.Trimesh(), Path("unused.glb"))
