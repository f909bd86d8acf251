"""The baked-texture mesh .glb: checked against the analytic scene's true colours, read back from the file.

The views are ray-cast analytically (tests/scenes.py: a striped sphere on a checkered box, with a
fixed light), so the colour that belongs to a surface point is known without any renderer of
ours. The .glb is parsed here with our GLB reader and Pillow, not with trimesh, so the UV
convention (glTF: v = 0 at the top of the image) is checked, not assumed.
"""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from ai_modules.cameras import ring_cameras
from ai_modules.export import ExportInputs, ExportStage
from ai_modules.export.gltf import WORLD_TO_GLTF, read_glb
from ai_modules.export.mesh import extract_mesh, mesh_to_glb
from ai_modules.export.texture import bake_texture
from ai_modules.export.tsdf import fuse_tsdf
from ai_modules.settings import parse_settings
from tests.scenes import SPHERE_CENTRE, SPHERE_RADIUS, _sphere_colour, raycast

from test_ai_export import sphere
from test_ai_mesh import HALF, face_colour, fused, fused_mesh, ring_views

_COMPONENTS = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


@functools.cache
def scene_views(size: int = 192) -> tuple[np.ndarray, ...]:
    """(rgbs, depths, alphas, viewmats, Ks) of the sphere-on-box scene: 16 views at 30 deg and 8 at -20 deg."""
    v1, k1 = ring_cameras([22.5 * i for i in range(16)], 30.0, size)
    v2, k2 = ring_cameras([45.0 * i + 22.5 for i in range(8)], -20.0, size)
    viewmats, ks = np.concatenate([v1, v2]), np.concatenate([k1, k2])
    rgb, alpha, depth = zip(*(raycast(v, k, size, size, background=0.0) for v, k in zip(viewmats, ks)))
    return np.stack(rgb), np.stack(depth), np.stack(alpha), viewmats, ks


@functools.cache
def scene_meshes(max_faces: int = 3000) -> tuple[trimesh.Trimesh, trimesh.Trimesh]:
    """(vertex-coloured mesh, the same baked into a 512^2 texture) of the scene."""
    views = scene_views()
    mesh = extract_mesh(*fuse_tsdf(*views, voxels=96), max_faces=max_faces)
    return mesh, bake_texture(mesh, *views, size=512, depth_tolerance=2.0 / 96)


def read_primitive(path: Path) -> dict[str, np.ndarray]:
    """The first primitive's attributes and indices, and its base-colour image, straight from the file."""
    gltf, binary = read_glb(path.read_bytes())

    def view_bytes(index: int) -> bytes:
        view = gltf["bufferViews"][index]
        start = view.get("byteOffset", 0)
        return binary[start:start + view["byteLength"]]

    def accessor(index: int) -> np.ndarray:
        acc = gltf["accessors"][index]
        data = np.frombuffer(view_bytes(acc["bufferView"]), _COMPONENTS[acc["componentType"]],
                             count=acc["count"] * _WIDTH[acc["type"]], offset=acc.get("byteOffset", 0))
        return data.reshape(acc["count"], _WIDTH[acc["type"]])

    prim = gltf["meshes"][0]["primitives"][0]
    out = {name: accessor(i) for name, i in prim["attributes"].items()}
    out["indices"] = accessor(prim["indices"]).reshape(-1, 3).astype(np.int64)
    material = gltf["materials"][prim["material"]]
    texture = material["pbrMetallicRoughness"].get("baseColorTexture")
    if texture is not None:
        image = gltf["images"][gltf["textures"][texture["index"]]["source"]]
        out["image"] = np.asarray(Image.open(io.BytesIO(view_bytes(image["bufferView"]))).convert("RGB")) / 255.0
    return out


def sample_surface(prim: dict[str, np.ndarray], n: int = 20000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random points on the primitive's triangles: (world positions [n,3], nearest-texel colours [n,3])."""
    rng = np.random.default_rng(seed)
    faces = rng.integers(0, len(prim["indices"]), n)
    r1, r2 = np.sqrt(rng.random(n)), rng.random(n)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    corners = prim["indices"][faces]
    world = (prim["POSITION"][corners] * bary[..., None]).sum(1) @ WORLD_TO_GLTF     # glTF frame -> world
    uv = (prim["TEXCOORD_0"][corners] * bary[..., None]).sum(1)
    h, w, _ = prim["image"].shape
    rows = np.clip(np.floor(uv[:, 1] * h), 0, h - 1).astype(int)
    cols = np.clip(np.floor(uv[:, 0] * w), 0, w - 1).astype(int)
    return world, prim["image"][rows, cols]


def true_sphere_colour(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scene's colour at the sphere point radially nearest each point, and a mask of points that are
    clear of the stripes' edges and the box (where a voxel-sized offset changes the colour)."""
    q = points - SPHERE_CENTRE
    on_sphere = SPHERE_CENTRE + q / np.linalg.norm(q, axis=1, keepdims=True) * SPHERE_RADIUS
    normal = (on_sphere - SPHERE_CENTRE) / SPHERE_RADIUS
    light = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
    colour = _sphere_colour(on_sphere) * (0.55 + 0.45 * np.clip(normal @ light, 0, 1))[:, None]
    lon = np.arctan2(q[:, 1], q[:, 0])
    near_sphere = np.abs(np.linalg.norm(q, axis=1) - SPHERE_RADIUS) < 0.02
    clear = near_sphere & (np.abs(np.sin(lon * 6)) > 0.3) & (normal[:, 2] > 0.1)
    return colour, clear


def test_the_texture_holds_detail_that_vertex_colours_of_the_same_mesh_cannot(tmp_path: Path):
    plain, textured = scene_meshes()
    assert len(textured.faces) == len(plain.faces)
    assert np.allclose(textured.vertices[textured.faces].mean(1), plain.vertices[plain.faces].mean(1), atol=1e-5)
    path = tmp_path / "textured.glb"
    mesh_to_glb(textured, path)
    prim = read_primitive(path)
    assert set(prim) == {"POSITION", "TEXCOORD_0", "indices", "image"} and prim["image"].shape == (512, 512, 3)
    points, got = sample_surface(prim)
    want, clear = true_sphere_colour(points)
    assert clear.sum() > 2000
    texture_error = np.abs(got[clear] - want[clear]).max(axis=1)
    # the vertex colours of the same mesh, at the same points
    vertex_error = np.abs(_vertex_colour_at(plain, points[clear]) - want[clear]).max(axis=1)
    print(f"\nsphere points within 0.1: texture {np.mean(texture_error < 0.1):.3f}, "
          f"vertex colours {np.mean(vertex_error < 0.1):.3f}; median error {np.median(texture_error):.3f} vs "
          f"{np.median(vertex_error):.3f}")
    assert np.mean(texture_error < 0.1) > 0.9
    assert np.mean(texture_error < 0.1) > np.mean(vertex_error < 0.1) + 0.1


def _vertex_colour_at(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    """Vertex colours [M,3] interpolated at the points' nearest face (by centroid; the mesh is fine enough)."""
    centroids = mesh.triangles_center
    nearest = np.argmin(((points[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    tri = mesh.triangles[nearest]
    bary = trimesh.triangles.points_to_barycentric(tri, points)
    rgb = mesh.visual.vertex_colors[:, :3][mesh.faces[nearest]] / 255.0
    return (rgb * np.clip(bary, 0, 1)[..., None]).sum(1) / np.clip(bary, 0, 1).sum(1, keepdims=True)


def test_occluded_views_do_not_colour_a_face():
    """Box faces take their own colour, not that of the faces in front of them in other views."""
    views = ring_views("box", 128)
    mesh = extract_mesh(*fused("box"), max_faces=3000)
    textured = bake_texture(mesh, *views, size=256, depth_tolerance=2.0 / 128)
    uv, image = textured.visual.uv, np.asarray(textured.visual.material.baseColorTexture) / 255.0
    centres = textured.vertices[textured.faces].mean(1)
    q = np.abs(centres) / HALF
    normals = np.where(q == q.max(axis=1, keepdims=True), np.sign(centres), 0.0)
    margin = HALF - np.abs(centres)                                  # distance to the two other face pairs
    clear = (np.sort(margin, axis=1)[:, 1] > 0.03) & (centres[:, 2] > -HALF[2] + 0.03)
    clear &= textured.area_faces > 0.1 * np.median(textured.area_faces)    # not the slivers decimation leaves
    face_uv = uv[textured.faces].mean(1)
    rows = np.clip(np.floor((1 - face_uv[:, 1]) * 256), 0, 255).astype(int)       # trimesh's v is up
    cols = np.clip(np.floor(face_uv[:, 0] * 256), 0, 255).astype(int)
    close = np.abs(image[rows, cols] - face_colour(normals)).max(axis=1) < 0.1
    assert clear.sum() > 300 and close[clear].mean() > 0.97


def test_bake_rejects_bad_arguments():
    views = list(ring_views("sphere", size=16))
    mesh = fused_mesh("sphere")
    with pytest.raises(ValueError, match="`rgbs`"):
        bake_texture(mesh, views[0][..., :2], *views[1:])
    with pytest.raises(ValueError, match="`viewmats`"):
        bake_texture(mesh, *views[:3], views[3][:2], views[4])
    with pytest.raises(ValueError, match="`size`"):
        bake_texture(mesh, *views, size=10)
    with pytest.raises(ValueError, match="`mesh`"):
        bake_texture(trimesh.Trimesh(), *views)


def test_export_stage_writes_and_reads_back_a_textured_glb(tmp_path: Path):
    settings = parse_settings({"device": "cpu", "export": {
        "formats": ["glb"], "mesh_colours": "texture", "texture_size": 256, "texture_view_size": 64,
        "mesh_view_size": 64, "mesh_voxels": 48, "texture_max_faces": 1000}}).export
    stage = ExportStage(settings)
    stage.load("cpu")
    out = stage.run(ExportInputs(sphere(n=2000)))
    assert isinstance(out.mesh.visual, trimesh.visual.TextureVisuals) and len(out.mesh.faces) <= 1000
    stage.save(out, tmp_path)
    gltf, _ = read_glb((tmp_path / "model.glb").read_bytes())
    assert gltf["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"] == {"index": 0}
    assert gltf["extensionsUsed"] == ["KHR_materials_unlit"]
    back = stage.load_outputs(tmp_path).mesh
    assert isinstance(back.visual, trimesh.visual.TextureVisuals)
    assert back.visual.material.baseColorTexture.size == (256, 256)
    assert np.allclose(np.sort(back.vertices, axis=0), np.sort(out.mesh.vertices, axis=0), atol=1e-5)
    json.dumps(out.metrics)
