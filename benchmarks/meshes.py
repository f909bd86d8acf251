"""Ground truth for `bench_multiview_fit.py`: textured meshes and an independent renderer for them.

Five objects inside [-0.4, 0.4]^3 (world Z up), each built from closed (watertight) parts that may
overlap, each with something a fit from SyncDreamer's ring finds hard:

* `mug`: a lathed cup with a deep cavity and a thin torus handle (a through-hole);
* `table`: a slab on four thin legs (5-6 px wide at 256 px), turned 15 deg off the ring's axes;
* `knot`: a (2,3) torus knot, a tube that occludes itself;
* `crate`: a box in fine brick texture with a ball in cat fur on it;
* `figure`: a capsule body, a head, thin arms (8 px wide) and legs.

Textures are scikit-image's photos (shipped in its wheel, no download) mapped by per-corner UVs
(repeat wrap), toned into [0.05, 0.85] so that no texel is the white of the background.

Renderer: Embree ray casting through trimesh (`embreex`). Chosen because it is exact (the very
triangles, no rasterization rules of our own to get wrong), independent of the Gaussian renderer
it judges, needs no GL context on a headless CPU machine, and casts about 5 M rays/s on one core
(25 views of 256 px at 3x3 supersampling take a few seconds). Shading: the texture times a fixed
world-space Lambert light (view-independent, like a diffuse object photographed in a room).

Cameras are the project's (`ai_modules.cameras`): world-to-camera 4x4 in OpenCV axes, K in
pixels, pixel centres at i + 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import trimesh

#: Half side of the box every mesh fits in (the world box is [-0.5, 0.5]^3).
EXTENT = 0.4
#: Texels are toned into [TONE_LOW, TONE_HIGH]: never the background's white, never pure black.
TONE_LOW, TONE_HIGH = 0.05, 0.85
#: World-space light of the Lambert shading: colour = texture * (AMBIENT + DIFFUSE * max(n . LIGHT, 0)).
LIGHT = np.array([0.35, 0.25, 0.9]) / np.linalg.norm([0.35, 0.25, 0.9])
AMBIENT, DIFFUSE = 0.6, 0.4


@dataclass(frozen=True)
class Part:
    """One closed surface of a mesh with its texture.

    Attributes:
        mesh: watertight triangle mesh, world frame, outward faces.
        uvs: [F,3,2] float64 texture coordinates per face corner (wrap: repeat; v runs down the image).
        texture: [H,W,3] float32 in [TONE_LOW, TONE_HIGH].
    """

    mesh: trimesh.Trimesh
    uvs: np.ndarray
    texture: np.ndarray


@dataclass(frozen=True)
class TexturedMesh:
    """A named object made of parts (they may overlap; each part is closed)."""

    name: str
    parts: tuple[Part, ...]

    def combined(self) -> trimesh.Trimesh:
        """All parts as one mesh (faces in part order), for ray casting and bounds."""
        return trimesh.util.concatenate([p.mesh for p in self.parts])

    @property
    def bounds(self) -> np.ndarray:
        """[2,3] min and max corner."""
        return np.stack([np.min([p.mesh.bounds[0] for p in self.parts], axis=0),
                         np.max([p.mesh.bounds[1] for p in self.parts], axis=0)])

    def sample_surface(self, count: int, seed: int = 0) -> np.ndarray:
        """[N,3] points on the outer surface: area-uniform samples of every part, less those inside another
        part (the buried ends of a handle or of legs), so N is a little under `count`."""
        rng = np.random.default_rng(seed)
        areas = np.array([p.mesh.area for p in self.parts])
        counts = np.maximum(1, np.round(count * areas / areas.sum()).astype(int))
        points = []
        for i, (part, n) in enumerate(zip(self.parts, counts)):
            pts, _ = trimesh.sample.sample_surface(part.mesh, int(n), seed=rng)
            buried = np.zeros(len(pts), dtype=bool)
            for j, other in enumerate(self.parts):
                if j != i:
                    buried |= other.mesh.contains(pts)
            points.append(pts[~buried])
        return np.concatenate(points)


# ----------------------------------------------------------------------------------------------- textures

def photo(name: str, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """scikit-image's photo `name` as a texture [H,W,3] float32 toned into [TONE_LOW, TONE_HIGH]; grey photos
    (brick, gravel, grass, camera) take `tint`."""
    from skimage import data

    image = getattr(data, name)().astype(np.float32) / 255.0
    if image.ndim == 2:
        image = image[..., None] * np.asarray(tint, np.float32)
    else:
        image = image[..., :3] * np.asarray(tint, np.float32)
    return (TONE_LOW + (TONE_HIGH - TONE_LOW) * image).astype(np.float32)


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup with repeat wrap: uv [N,2] (u right, v down, 1 = one image) -> [N,3]."""
    h, w, _ = texture.shape
    x = np.mod(uv[:, 0], 1.0) * w - 0.5
    y = np.mod(uv[:, 1], 1.0) * h - 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, x1, y0, y1 = x0 % w, (x0 + 1) % w, y0 % h, (y0 + 1) % h
    return ((texture[y0, x0] * (1 - fx) + texture[y0, x1] * fx) * (1 - fy)
            + (texture[y1, x0] * (1 - fx) + texture[y1, x1] * fx) * fy)


# ----------------------------------------------------------------------------------------------- shapes

def _part(vertices: np.ndarray, faces: np.ndarray, uvs: np.ndarray, texture: np.ndarray,
          transform: np.ndarray | None = None) -> Part:
    """A Part with outward faces (flipped, corner UVs with them, if the volume came out negative)."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    if transform is not None:
        mesh.apply_transform(transform)
    if mesh.volume < 0:
        mesh = trimesh.Trimesh(mesh.vertices, mesh.faces[:, ::-1], process=False)
        uvs = uvs[:, ::-1]
    return Part(mesh, np.ascontiguousarray(uvs, dtype=np.float64), texture)


def lathe(profile: list[tuple[float, float]], texture: np.ndarray, sections: int = 96,
          repeat: tuple[float, float] = (1.0, 1.0), transform: np.ndarray | None = None) -> Part:
    """Surface of revolution about Z of `profile` [(r, z), ...], which starts and ends on the axis (r = 0).

    UVs: u around (from +X, counter-clockwise: left to right seen from outside), v along the profile's arc
    length (its start at the image's bottom); `repeat` tiles them.
    """
    prof = np.asarray(profile, dtype=np.float64)
    prof = prof[np.concatenate([[True], np.linalg.norm(np.diff(prof, axis=0), axis=1) > 1e-9])]  # no repeats
    if prof[0, 0] != 0 or prof[-1, 0] != 0 or (prof[1:-1, 0] <= 0).any():
        raise ValueError("`profile` must start and end on the axis (r = 0) and stay off it in between")
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(prof, axis=0), axis=1))])
    v_of = (1.0 - arc / arc[-1]) * repeat[1]
    rings = prof[1:-1]
    s, theta = sections, np.linspace(0, 2 * np.pi, sections, endpoint=False)
    ring_vertices = np.stack([rings[:, :1] * np.cos(theta), rings[:, :1] * np.sin(theta),
                              np.repeat(rings[:, 1:], s, axis=1)], axis=-1).reshape(-1, 3)
    vertices = np.concatenate([[[0.0, 0.0, prof[0, 1]]], ring_vertices, [[0.0, 0.0, prof[-1, 1]]]])
    top = len(vertices) - 1
    j = np.arange(s)
    u0, u1 = j / s * repeat[0], (j + 1) / s * repeat[0]
    faces, uvs = [], []

    def ring(k: int, jj: np.ndarray) -> np.ndarray:             # vertex index of ring k (0-based), column jj
        return 1 + k * s + jj % s

    faces.append(np.stack([np.zeros(s, int), ring(0, j + 1), ring(0, j)], axis=1))
    uvs.append(np.stack([np.stack([(u0 + u1) / 2, np.full(s, v_of[0])], -1), np.stack([u1, np.full(s, v_of[1])], -1),
                         np.stack([u0, np.full(s, v_of[1])], -1)], axis=1))
    for k in range(len(rings) - 1):
        va, vb = v_of[k + 1], v_of[k + 2]
        a, b, c, d = ring(k, j), ring(k, j + 1), ring(k + 1, j + 1), ring(k + 1, j)
        ua, ub = np.stack([u0, np.full(s, va)], -1), np.stack([u1, np.full(s, va)], -1)
        uc, ud = np.stack([u1, np.full(s, vb)], -1), np.stack([u0, np.full(s, vb)], -1)
        faces += [np.stack([a, b, c], 1), np.stack([a, c, d], 1)]
        uvs += [np.stack([ua, ub, uc], 1), np.stack([ua, uc, ud], 1)]
    k = len(rings) - 1
    faces.append(np.stack([ring(k, j), ring(k, j + 1), np.full(s, top)], axis=1))
    uvs.append(np.stack([np.stack([u0, np.full(s, v_of[-2])], -1), np.stack([u1, np.full(s, v_of[-2])], -1),
                         np.stack([(u0 + u1) / 2, np.full(s, v_of[-1])], -1)], axis=1))
    return _part(vertices, np.concatenate(faces), np.concatenate(uvs), texture, transform)


def tube(curve: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], radius: float, texture: np.ndarray,
         samples: int = 256, sides: int = 24, repeat: tuple[float, float] = (1.0, 1.0)) -> Part:
    """A closed tube of `radius` around a closed curve.

    Args:
        curve: t [M] in [0, 2 pi) -> (points [M,3], reference [M,3]): the centre line and, per point, a
            direction off it (not along the tangent) that fixes the tube's frame without twist at the seam.
        radius: the tube's radius.
        samples, sides: segments along the curve and around the tube.
        repeat: UV tiles along (u) and around (v).
    """
    t = np.linspace(0, 2 * np.pi, samples, endpoint=False)
    centre, reference = curve(t)
    tangent = np.roll(centre, -1, axis=0) - np.roll(centre, 1, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    normal = reference - (reference * tangent).sum(1, keepdims=True) * tangent
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    binormal = np.cross(tangent, normal)
    phi = np.linspace(0, 2 * np.pi, sides, endpoint=False)
    vertices = (centre[:, None] + radius * (np.cos(phi)[None, :, None] * normal[:, None]
                                            + np.sin(phi)[None, :, None] * binormal[:, None])).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(samples), np.arange(sides), indexing="ij")
    i, j = i.ravel(), j.ravel()

    def vid(ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        return (ii % samples) * sides + jj % sides

    def uv(ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
        return np.stack([ii / samples * repeat[0], jj / sides * repeat[1]], axis=-1)

    a, b, c, d = vid(i, j), vid(i + 1, j), vid(i + 1, j + 1), vid(i, j + 1)
    ua, ub, uc, ud = uv(i, j), uv(i + 1, j), uv(i + 1, j + 1), uv(i, j + 1)
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    uvs = np.concatenate([np.stack([ua, ub, uc], 1), np.stack([ua, uc, ud], 1)])
    return _part(vertices, faces, uvs, texture)


def box(extents: tuple[float, float, float], texture: np.ndarray, tile: float = 0.25,
        transform: np.ndarray | None = None) -> Part:
    """A box (centred at the origin before `transform`) textured by planar projection on each face, one
    texture image per `tile` world units."""
    mesh = trimesh.creation.box(extents=extents)
    corners = mesh.vertices[mesh.faces]                                       # [F,3,3] local frame
    axis = np.abs(mesh.face_normals).argmax(axis=1)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]                           # the two in-plane axes
    uvs = np.take_along_axis(corners, keep[:, None, :].repeat(3, axis=1), axis=2) / tile
    uvs[..., 1] *= -1                                                         # image v runs down, world up
    return _part(mesh.vertices, mesh.faces, uvs, texture, transform)


def _circle(centre: np.ndarray, radius: float, e1: np.ndarray, e2: np.ndarray
            ) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    def curve(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        offset = np.cos(t)[:, None] * e1 + np.sin(t)[:, None] * e2
        return centre + radius * offset, offset
    return curve


def _capsule(z0: float, z1: float, radius: float, rings: int = 12) -> list[tuple[float, float]]:
    """Lathe profile of a capsule along Z from z0 to z1 (ends included)."""
    a = np.linspace(-np.pi / 2, 0, rings + 1)
    bottom = [(radius * math.cos(x), z0 + radius + radius * math.sin(x)) for x in a]
    top = [(radius * math.cos(x), z1 - radius + radius * math.sin(x)) for x in -a[::-1]]
    return [(0.0, z0)] + bottom[1:] + top[:-1] + [(0.0, z1)]


def _rz(deg: float, translate: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    m = trimesh.transformations.rotation_matrix(math.radians(deg), [0, 0, 1])
    m[:3, 3] = translate
    return m


def _along(axis: str, translate: tuple[float, float, float]) -> np.ndarray:
    """Transform that lays a Z-axis part along world `axis` ("x" or "y"), then moves it."""
    m = trimesh.transformations.rotation_matrix(math.pi / 2, [0, 1, 0] if axis == "x" else [1, 0, 0])
    m[:3, 3] = translate
    return m


# ----------------------------------------------------------------------------------------------- the meshes

def mug() -> TexturedMesh:
    """A cup (outer r 0.22, wall 0.03, cavity 0.42 deep) with a thin torus handle on +Y."""
    body = lathe([(0.0, -0.25), (0.22, -0.25), (0.22, 0.25), (0.19, 0.25), (0.19, -0.17), (0.0, -0.17)],
                 photo("coffee"), sections=128, repeat=(2.0, 1.0))
    handle = tube(_circle(np.array([0.0, 0.24, 0.0]), 0.11, np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, 1.0])),
                  0.024, photo("brick", (0.75, 0.3, 0.25)), samples=128, sides=16, repeat=(3.0, 0.5))
    return TexturedMesh("mug", (body, handle))


def table() -> TexturedMesh:
    """A slab 0.66 x 0.46 x 0.04 on four legs 0.03 thick, turned 15 deg about Z."""
    turn = _rz(15)
    top = box((0.66, 0.46, 0.04), photo("rocket"), tile=0.66, transform=turn @ _rz(0, (0.0, 0.0, 0.12)))
    legs = tuple(box((0.03, 0.03, 0.47), photo("brick", (0.55, 0.35, 0.2)), tile=0.2,
                     transform=turn @ _rz(0, (x, y, -0.125)))
                 for x in (-0.29, 0.29) for y in (-0.19, 0.19))
    return TexturedMesh("table", (top, *legs))


def knot() -> TexturedMesh:
    """A (2,3) torus knot around a core circle of radius 0.2 (amplitude 0.1), tube radius 0.05."""
    p, q, big, small = 2, 3, 0.2, 0.1

    def curve(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = big + small * np.cos(q * t)
        points = np.stack([r * np.cos(p * t), r * np.sin(p * t), small * np.sin(q * t)], axis=1)
        core = np.stack([big * np.cos(p * t), big * np.sin(p * t), np.zeros_like(t)], axis=1)
        return points, points - core

    return TexturedMesh("knot", (tube(curve, 0.05, photo("astronaut"), samples=480, sides=24, repeat=(6.0, 1.0)),))


def crate() -> TexturedMesh:
    """A box 0.5 x 0.38 x 0.32 in fine brick, turned 25 deg, with a ball (r 0.17) in cat fur on it."""
    crate_box = box((0.5, 0.38, 0.32), photo("brick", (0.85, 0.55, 0.35)), tile=0.18,
                    transform=_rz(25, (0.0, 0.0, -0.2)))
    ball = lathe(_capsule(-0.17, 0.17, 0.17, rings=32), photo("chelsea"), sections=96,
                 transform=_rz(0, (0.04, 0.02, 0.125)))
    return TexturedMesh("crate", (crate_box, ball))


def figure() -> TexturedMesh:
    """A capsule body, a head, thin arms (r 0.022, straight out along Y) and two legs."""
    body = lathe(_capsule(-0.13, 0.21, 0.11), photo("chelsea"), repeat=(2.0, 1.0))
    head = lathe(_capsule(-0.085, 0.085, 0.085, rings=24), photo("astronaut"), transform=_rz(0, (0.0, 0.0, 0.28)))
    arms = lathe(_capsule(-0.37, 0.37, 0.022, rings=6), photo("rocket"), sections=24, repeat=(1.0, 4.0),
                 transform=_along("y", (0.0, 0.0, 0.12)))
    legs = tuple(lathe(_capsule(-0.38, -0.06, 0.04, rings=8), photo("brick", (0.3, 0.35, 0.7)), sections=32,
                       transform=_rz(0, (0.0, y, 0.0))) for y in (-0.055, 0.055))
    return TexturedMesh("figure", (body, head, arms, *legs))


MESHES: dict[str, Callable[[], TexturedMesh]] = {"mug": mug, "table": table, "knot": knot, "crate": crate,
                                                  "figure": figure}


# ----------------------------------------------------------------------------------------------- renderer

@dataclass
class Rendered:
    """Views of a mesh.

    Attributes:
        rgb: [V,S,S,3] float32 0..1, composited on white.
        alpha: [V,S,S] float32 0..1 (the covered share of each pixel).
        depth: [V,S,S] float32 camera z, mean over the covered samples (0 where nothing is hit).
    """

    rgb: np.ndarray
    alpha: np.ndarray
    depth: np.ndarray


class MeshRenderer:
    """Ray casts a `TexturedMesh` (module docstring); build once, render any cameras.

    Raises:
        ImportError: `embreex` is missing (trimesh would fall back to a far slower intersector).
    """

    def __init__(self, scene: TexturedMesh) -> None:
        if not trimesh.ray.has_embree:
            raise ImportError("benchmarks.meshes needs `embreex` (pip install embreex): trimesh's Embree ray "
                              "caster")
        self.scene = scene
        self.mesh = scene.combined()
        self.triangles = self.mesh.triangles                                     # [F,3,3]
        self.normals = self.mesh.face_normals                                    # [F,3]
        self.uvs = np.concatenate([p.uvs for p in scene.parts])                  # [F,3,2]
        self.part = np.repeat(np.arange(len(scene.parts)), [len(p.mesh.faces) for p in scene.parts])
        self.intersector = trimesh.ray.ray_pyembree.RayMeshIntersector(self.mesh)

    def render(self, viewmats: np.ndarray, ks: np.ndarray, size: int, supersample: int = 3) -> Rendered:
        """Render square views.

        Args:
            viewmats: [V,4,4] world-to-camera, OpenCV axes.
            ks: [V,3,3] intrinsics, pixels (pixel centres at i + 0.5).
            size: side of the views, pixels.
            supersample: rays per pixel side (the pixel is the mean of supersample^2 rays).
        """
        out = [self._one(np.asarray(v, np.float64), np.asarray(k, np.float64), size, supersample)
               for v, k in zip(viewmats, ks)]
        return Rendered(*(np.stack(x).astype(np.float32) for x in zip(*out)))

    def _one(self, view: np.ndarray, k: np.ndarray, size: int, ss: int) -> tuple[np.ndarray, ...]:
        sub = (np.arange(size * ss) + 0.5) / ss                                   # sample positions, pixels
        us, vs = np.meshgrid(sub, sub)
        cam = np.stack([(us - k[0, 2]) / k[0, 0], (vs - k[1, 2]) / k[1, 1], np.ones_like(us)], -1).reshape(-1, 3)
        rot = view[:3, :3]
        origin = -rot.T @ view[:3, 3]
        dirs = cam @ rot                                                          # camera -> world
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        tri = self.intersector.intersects_first(np.broadcast_to(origin, dirs.shape), dirs)
        hit = tri >= 0
        rgb = np.ones((len(dirs), 3))
        depth = np.zeros(len(dirs))
        if hit.any():
            f, d = tri[hit], dirs[hit]
            n = self.normals[f]
            t = ((self.triangles[f, 0] - origin) * n).sum(1) / (d * n).sum(1)    # exact ray-plane distance
            p = origin + d * t[:, None]
            bary = trimesh.triangles.points_to_barycentric(self.triangles[f], p)
            uv = (bary[:, :, None] * self.uvs[f]).sum(1)
            colour = np.empty((len(f), 3))
            for i, part in enumerate(self.scene.parts):
                sel = self.part[f] == i
                colour[sel] = sample_texture(part.texture, uv[sel])
            facing = np.where(((n * d).sum(1) > 0)[:, None], -n, n)              # the side the ray sees
            rgb[hit] = colour * (AMBIENT + DIFFUSE * np.clip(facing @ LIGHT, 0, 1))[:, None]
            depth[hit] = p @ rot[2] + view[2, 3]
        shape = (size, ss, size, ss)
        alpha = hit.reshape(shape).mean(axis=(1, 3))
        count = hit.reshape(shape).sum(axis=(1, 3))
        z = depth.reshape(shape).sum(axis=(1, 3)) / np.maximum(count, 1)
        return rgb.reshape(*shape, 3).mean(axis=(1, 3)), alpha, z


__all__ = ["EXTENT", "MESHES", "MeshRenderer", "Part", "Rendered", "TexturedMesh", "box", "lathe", "photo",
           "sample_texture", "tube"]
