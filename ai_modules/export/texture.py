"""A texture atlas for the mesh .glb, baked from rendered views (the option to vertex colours).

`bake_texture` unwraps the mesh with xatlas, rasterizes every chart triangle into
the atlas (each texel knows its triangle and barycentric weights, hence its 3D
point and normal), and colours each texel from the views that see its point:
the point projects inside the view's silhouette, at the view's depth (so an
occluded point takes nothing from that view), weighted by how squarely the view
faces the surface. Texels no view sees keep the mesh's vertex colours; texels
outside every chart take the colour of the nearest chart texel, so bilinear
filtering and mipmaps do not bleed black into the seams.

The UV rasterizer is written here (numpy, vectorised) because neither xatlas nor
trimesh fills an atlas from a mesh attribute.
"""

from __future__ import annotations

import numpy as np
import trimesh
import xatlas
from PIL import Image
from scipy import ndimage

from .tsdf import as_array

__all__ = ["bake_texture"]


def bake_texture(mesh: trimesh.Trimesh, rgbs: np.ndarray, depths: np.ndarray, alphas: np.ndarray,
                 viewmats: np.ndarray, Ks: np.ndarray, *, size: int = 1024,  # noqa: N803
                 depth_tolerance: float = 0.01, alpha_min: float = 0.5) -> trimesh.Trimesh:
    """A copy of `mesh` with xatlas UVs and a base-colour texture baked from the views.

    Args:
        mesh: triangle mesh in the world frame; its vertex colours (if any) fill what no view sees.
        rgbs: [V,H,W,3] float 0..1 colours, not blended with a background (divided by alpha).
        depths: [V,H,W] camera z of the surface (OpenCV axes); 0 or NaN where empty.
        alphas: [V,H,W] float 0..1 coverage.
        viewmats: [V,4,4] world-to-camera; Ks: [V,3,3] intrinsics in pixels.
        size: side of the square texture, pixels (xatlas packs the charts into it).
        depth_tolerance: how far (world units) a point may lie from a view's depth and still count as seen.
        alpha_min: pixels below this coverage see nothing.

    Returns:
        Mesh with the same surface, vertices split along the UV seams, and `TextureVisuals`
        (a `PBRMaterial` whose `baseColorTexture` is an RGB image of `size` x `size`).

    Raises:
        ValueError: bad shapes or arguments, or a mesh without faces.

    Example:
        >>> views = render_views(g, viewmats, ks, 256, background=(0.0, 0.0, 0.0))   # doctest: +SKIP
        >>> textured = bake_texture(mesh, rgb / alpha, depth, alpha, viewmats, ks)   # doctest: +SKIP
    """
    rgbs, depths, alphas = as_array(rgbs), as_array(depths), as_array(alphas)
    viewmats, ks = as_array(viewmats, np.float64), as_array(Ks, np.float64)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError("`mesh` must be a trimesh.Trimesh with at least one face")
    if rgbs.ndim != 4 or rgbs.shape[-1] != 3 or depths.shape != rgbs.shape[:3] or alphas.shape != rgbs.shape[:3]:
        raise ValueError(f"`rgbs`, `depths`, `alphas` must be [V,H,W,3], [V,H,W], [V,H,W], got "
                         f"{list(rgbs.shape)}, {list(depths.shape)}, {list(alphas.shape)}")
    v = rgbs.shape[0]
    if viewmats.shape != (v, 4, 4) or ks.shape != (v, 3, 3):
        raise ValueError(f"`viewmats` and `Ks` must be [{v},4,4] and [{v},3,3], got "
                         f"{list(viewmats.shape)} and {list(ks.shape)}")
    if not isinstance(size, int) or not 64 <= size <= 8192:
        raise ValueError(f"`size` must be an integer in [64, 8192], got {size!r}")

    vmapping, faces, uvs = _unwrap(mesh, size)
    positions = np.asarray(mesh.vertices, np.float64)[vmapping]
    texel, face, bary = _rasterize_uv(uvs, faces, size)
    corners = positions[faces[face]]                                     # [M,3,3]
    points = (corners * bary[..., None]).sum(axis=1)
    normals = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)

    total = np.zeros((len(points), 3))
    weight = np.zeros(len(points))
    for i in range(v):
        colour, w = _view_colours(points, normals, rgbs[i], depths[i], alphas[i], viewmats[i], ks[i],
                                  depth_tolerance, alpha_min)
        total += colour * w[:, None]
        weight += w
    seen = weight > 0
    colours = np.where(seen[:, None], total / np.maximum(weight, 1e-12)[:, None], 0.0)
    if not seen.all():
        colours[~seen] = _vertex_colours(mesh, vmapping, faces[face[~seen]], bary[~seen])

    image = np.zeros((size * size, 3))
    covered = np.zeros(size * size, bool)
    image[texel] = colours
    covered[texel] = True
    image, covered = image.reshape(size, size, 3), covered.reshape(size, size)
    if not covered.all():                   # every empty texel takes its nearest chart texel's colour
        _, (rows, cols) = ndimage.distance_transform_edt(~covered, return_indices=True)
        image = image[rows, cols]
    texture = Image.fromarray(np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8))
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255],
                                                   metallicFactor=0.0, roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return trimesh.Trimesh(positions, faces, visual=visual, process=False)


def _unwrap(mesh: trimesh.Trimesh, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """xatlas charts packed into one `size`^2 atlas: (vertex mapping [N'], faces [F,3], uvs [N',2] in 0..1)."""
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = size
    pack.padding = 2                          # texels between charts, so bilinear lookups stay inside one
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, faces, uvs = atlas[0]
    return vmapping.astype(np.int64), faces.astype(np.int64), uvs.astype(np.float64)


def _rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Texels whose centres lie in a UV triangle: (flat index row * size + col [M], face [M], barycentrics [M,3]).

    Row 0 is the top of the image (glTF: v = 0 at the top); trimesh's UVs have v up, hence 1 - v.
    """
    tri = np.stack([uvs[faces][..., 0] * size, (1.0 - uvs[faces][..., 1]) * size], axis=-1)     # [F,3,2]
    x0 = np.ceil(tri[..., 0].min(axis=1) - 0.5).astype(np.int64).clip(0, size - 1)
    x1 = np.floor(tri[..., 0].max(axis=1) - 0.5).astype(np.int64).clip(0, size - 1)
    y0 = np.ceil(tri[..., 1].min(axis=1) - 0.5).astype(np.int64).clip(0, size - 1)
    y1 = np.floor(tri[..., 1].max(axis=1) - 0.5).astype(np.int64).clip(0, size - 1)
    w, h = np.maximum(x1 - x0 + 1, 0), np.maximum(y1 - y0 + 1, 0)
    counts = w * h
    face = np.repeat(np.arange(len(faces)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    col = x0[face] + local % w[face]
    row = y0[face] + local // w[face]
    a, b, c = tri[face, 0], tri[face, 1], tri[face, 2]
    p = np.stack([col + 0.5, row + 0.5], axis=1)
    area = _edge(a, b, c)
    with np.errstate(divide="ignore", invalid="ignore"):
        bary = np.stack([_edge(b, c, p), _edge(c, a, p), _edge(a, b, p)], axis=1) / area[:, None]
    inside = (np.abs(area) > 1e-12) & (bary >= -1e-9).all(axis=1)
    return (row * size + col)[inside], face[inside], bary[inside]


def _edge(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Twice the signed area of the triangle (a, b, p), row-wise."""
    return (b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (p[:, 0] - a[:, 0])


def _view_colours(points: np.ndarray, normals: np.ndarray, rgb: np.ndarray, depth: np.ndarray, alpha: np.ndarray,
                  view: np.ndarray, k: np.ndarray, tolerance: float, alpha_min: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Colour [M,3] and weight [M] (0 where unseen) of world points in one view (nearest pixel, depth-tested)."""
    h, w = depth.shape
    cam = points @ view[:3, :3].T + view[:3, 3]
    z = cam[:, 2]
    safe = np.where(z > 1e-6, z, 1.0)
    col = np.floor(cam[:, 0] / safe * k[0, 0] + k[0, 2]).astype(np.int64)
    row = np.floor(cam[:, 1] / safe * k[1, 1] + k[1, 2]).astype(np.int64)
    inside = (z > 1e-6) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    pix = np.where(inside, row * w + col, 0)
    d = np.nan_to_num(depth.reshape(-1)[pix], nan=0.0)
    a = alpha.reshape(-1)[pix]
    centre = -view[:3, :3].T @ view[:3, 3]
    to_camera = centre - points
    facing = (normals * to_camera).sum(axis=1) / np.maximum(np.linalg.norm(to_camera, axis=1), 1e-12)
    seen = inside & (a >= alpha_min) & (d > 0) & (np.abs(d - z) < tolerance) & (facing > 0.05)
    return rgb.reshape(-1, 3)[pix], np.where(seen, facing ** 4 * a, 0.0)


def _vertex_colours(mesh: trimesh.Trimesh, vmapping: np.ndarray, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Colours [M,3] interpolated from the mesh's vertex colours (mid grey when it has none)."""
    if not isinstance(mesh.visual, trimesh.visual.ColorVisuals) or mesh.visual.kind != "vertex":
        return np.full((len(bary), 3), 0.5)
    rgb = np.asarray(mesh.visual.vertex_colors, np.float64)[vmapping, :3] / 255.0
    return (rgb[faces] * bary[..., None]).sum(axis=1)
