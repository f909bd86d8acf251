"""A coloured triangle mesh from the TSDF volumes (`tsdf.fuse_tsdf`), and its .glb.

`extract_mesh` runs marching cubes on the TSDF, keeps the main component(s),
decimates with quadric error (trimesh + fast-simplification) and samples vertex
colours trilinearly from the colour volume. `mesh_to_glb` rotates into the glTF
frame (`gltf.WORLD_TO_GLTF`: Y up, the front toward +Z) and writes vertex colours
as COLOR_0.

`texture.bake_texture` gives the option to vertex colours: xatlas UVs and a
texture baked from rendered views; `mesh_to_glb` writes either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh
from scipy import ndimage
from skimage.measure import marching_cubes

from ..fileio import write_bytes
from .gltf import WORLD_TO_GLTF, glb_bytes, read_glb
from .tsdf import BOX_MIN, BOX_SIZE, as_array, fuse_tsdf, sample_volume

__all__ = ["extract_mesh", "fuse_tsdf", "mesh_to_glb"]

_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def extract_mesh(tsdf: np.ndarray, colour: np.ndarray, *, max_faces: int = 50_000,
                 keep_fraction: float = 0.1) -> trimesh.Trimesh:
    """Marching cubes on the zero level, main component(s), quadric decimation, vertex colours.

    Should quadric decimation stall above `max_faces` (it refuses some collapses on large flat
    areas), the surface is extracted again from a 2x coarser grid and decimated from there.

    Args:
        tsdf: [D,D,D] signed distances over the object box, positive outside (from `fuse_tsdf`).
        colour: [D,D,D,3] float 0..1.
        max_faces: face budget after decimation (>= 4).
        keep_fraction: keep every component whose area is at least this fraction of the largest one.

    Returns:
        Mesh in the world frame (outward faces) with RGBA uint8 vertex colours.

    Raises:
        ValueError: bad shapes or arguments, or no surface in `tsdf`.
    """
    tsdf, colour = as_array(tsdf), as_array(colour)
    d = tsdf.shape[0] if tsdf.ndim == 3 else -1
    if tsdf.shape != (d, d, d) or d < 2:
        raise ValueError(f"`tsdf` must be [D,D,D] with D >= 2, got {list(tsdf.shape)}")
    if colour.shape != (d, d, d, 3):
        raise ValueError(f"`colour` must be [{d},{d},{d},3], got {list(colour.shape)}")
    if not isinstance(max_faces, int) or max_faces < 4:
        raise ValueError(f"`max_faces` must be an integer >= 4, got {max_faces!r}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"`keep_fraction` must be in [0, 1], got {keep_fraction!r}")
    if not (tsdf < 0).any() or not (tsdf > 0).any():
        raise ValueError("`tsdf` must change sign somewhere (no surface found)")
    size = BOX_SIZE / d
    mesh = _surface(tsdf, size, keep_fraction)
    while len(mesh.faces) > max_faces:
        mesh = _decimate(mesh, max_faces)
        if len(mesh.faces) <= max_faces:
            break
        if tsdf.shape[0] < 16:
            raise ValueError(f"`max_faces` must be larger for this surface: decimation stops at {len(mesh.faces)} "
                             f"faces, got {max_faces}")
        n = tsdf.shape[0] // 2                    # the decimator stalled (large flat areas): start over from
        tsdf = tsdf[:2 * n, :2 * n, :2 * n].reshape(n, 2, n, 2, n, 2).mean(axis=(1, 3, 5))  # a 2x coarser grid
        size *= 2.0
        mesh = _surface(tsdf, size, keep_fraction)
    rgb = np.clip(sample_volume(colour, mesh.vertices), 0.0, 1.0)
    rgba = np.concatenate([np.rint(rgb * 255), np.full((len(rgb), 1), 255)], axis=1).astype(np.uint8)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=rgba)
    return mesh


def _surface(tsdf: np.ndarray, size: float, keep_fraction: float) -> trimesh.Trimesh:
    """Marching cubes at level 0 (voxel i centred at BOX_MIN + (i + 0.5) * size), main component(s)."""
    inside = tsdf < 0                  # cracks 1 voxel wide are below the grid's resolution, and decimation
    box = tuple(slice(max(b.start - 2, 0), b.stop + 2) for b in ndimage.find_objects(inside.astype(np.int8))[0])
    crack = ndimage.binary_closing(inside[box], ndimage.generate_binary_structure(3, 1)) & ~inside[box]
    tsdf = tsdf.copy()                                                     # would fold their two sides together
    tsdf[box][crack] = -1e-3
    padded = np.pad(tsdf, 1, constant_values=1.0)                    # closes surfaces that touch the box
    verts, faces, _, _ = marching_cubes(padded, level=0.0, gradient_direction="descent")
    mesh = trimesh.Trimesh(BOX_MIN + (verts - 0.5) * size, faces, process=True)
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        areas = np.array([p.area for p in parts])
        mesh = trimesh.util.concatenate([p for p, a in zip(parts, areas) if a >= keep_fraction * areas.max()])
    return mesh


def _decimate(mesh: trimesh.Trimesh, max_faces: int, passes: int = 4) -> trimesh.Trimesh:
    """Quadric decimation toward `max_faces`, repeated while it still makes progress."""
    for _ in range(passes):
        simple = _drop_folded_faces(mesh.simplify_quadric_decimation(face_count=max_faces))
        if len(simple.faces) >= len(mesh.faces):
            break
        mesh = simple
        if len(mesh.faces) <= max_faces:
            break
    return mesh


def _drop_folded_faces(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """Remove what quadric decimation leaves behind: collapsed faces (a repeated vertex) and coincident
    face pairs (zero-volume folds on flat areas); both make edges non-manifold."""
    f = mesh.faces
    collapsed = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    _, inverse, counts = np.unique(np.sort(f, axis=1), axis=0, return_inverse=True, return_counts=True)
    keep = ~collapsed & (counts[inverse.reshape(-1)] == 1)
    if keep.all():
        return mesh
    mesh.update_faces(keep)
    mesh.remove_unreferenced_vertices()
    return mesh


def mesh_to_glb(mesh: trimesh.Trimesh, path: Path, *, unlit: bool = True) -> None:
    """Write a world-frame mesh as .glb in the glTF frame (Y up, front to +Z), atomically.

    trimesh writes the geometry (COLOR_0, or TEXCOORD_0 and the texture as PNG); we then set one
    material (white base colour, the texture if any, not metallic) and, by default,
    KHR_materials_unlit: the colours were seen in rendered views, so they already hold the
    lighting. Without a material glTF viewers would use the spec default (fully metallic, dark).

    Args:
        mesh: triangle mesh in the world frame (Z up), with vertex colours or `bake_texture`'s texture.
        path: destination .glb.
        unlit: mark the material KHR_materials_unlit (else it is lit, roughness 1).

    Raises:
        ValueError: `mesh` is not a Trimesh with faces.

    Example:
        >>> tsdf, colour = fuse_tsdf(rgbs, depths, alphas, viewmats, Ks)   # doctest: +SKIP
        >>> mesh_to_glb(extract_mesh(tsdf, colour), Path("model.glb"))    # doctest: +SKIP
    """
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError("`mesh` must be a trimesh.Trimesh with at least one face")
    out = mesh.copy()
    transform = np.eye(4)
    transform[:3, :3] = WORLD_TO_GLTF
    out.apply_transform(transform)
    gltf, binary = read_glb(out.export(file_type="glb"))
    material: dict = {"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                                               "roughnessFactor": 1.0}, "doubleSided": False}
    texture = next((m["pbrMetallicRoughness"].get("baseColorTexture") for m in gltf.get("materials", [])
                    if "pbrMetallicRoughness" in m), None)
    if texture is not None:
        material["pbrMetallicRoughness"]["baseColorTexture"] = texture
    if unlit:
        material["extensions"] = {"KHR_materials_unlit": {}}
        gltf["extensionsUsed"] = sorted(set(gltf.get("extensionsUsed", [])) | {"KHR_materials_unlit"})
    gltf["materials"] = [material]
    for prim in (p for m in gltf["meshes"] for p in m["primitives"]):
        prim["material"] = 0
        for acc in prim["attributes"].values():
            gltf["bufferViews"][gltf["accessors"][acc]["bufferView"]]["target"] = _ARRAY_BUFFER
        if "indices" in prim:
            gltf["bufferViews"][gltf["accessors"][prim["indices"]]["bufferView"]]["target"] = _ELEMENT_ARRAY_BUFFER
    write_bytes(Path(path), glb_bytes(gltf, binary))
