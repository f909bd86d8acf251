"""Ground truth from an independent renderer: analytic ray casting of a textured sphere on a box.

Nothing here uses our Gaussian renderer, so fitting benchmarks and tests measure against views
that no Gaussian produced. World: Z up, object inside [-0.5, 0.5]^3.
"""

from __future__ import annotations

import numpy as np

SPHERE_CENTRE = np.array([0.0, 0.0, 0.08])
SPHERE_RADIUS = 0.24
BOX_MIN = np.array([-0.3, -0.22, -0.36])
BOX_MAX = np.array([0.3, 0.22, -0.12])


def _rays(viewmat: np.ndarray, K: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    dirs_cam = np.stack([(xs + 0.5 - K[0, 2]) / K[0, 0], (ys + 0.5 - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    rot, t = viewmat[:3, :3], viewmat[:3, 3]
    origin = -rot.T @ t
    dirs = dirs_cam @ rot                                     # camera -> world (rot is orthonormal)
    return origin, dirs / np.linalg.norm(dirs, axis=-1, keepdims=True)


def _sphere_hit(origin: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    oc = origin - SPHERE_CENTRE
    b = dirs @ oc
    c = oc @ oc - SPHERE_RADIUS ** 2
    disc = b * b - c
    t = -b - np.sqrt(np.maximum(disc, 0))
    return np.where((disc > 0) & (t > 0), t, np.inf)


def _box_hit(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (BOX_MIN - origin) / dirs
        t2 = (BOX_MAX - origin) / dirs
    tmin = np.nanmax(np.minimum(t1, t2), axis=-1)
    tmax = np.nanmin(np.maximum(t1, t2), axis=-1)
    hit = (tmax >= tmin) & (tmin > 0)
    axis = np.argmax(np.minimum(t1, t2), axis=-1)             # the slab entered last is the face hit
    return np.where(hit, tmin, np.inf), axis


def _sphere_colour(p: np.ndarray) -> np.ndarray:
    q = p - SPHERE_CENTRE
    lon = np.arctan2(q[..., 1], q[..., 0])
    lat = np.arcsin(np.clip(q[..., 2] / SPHERE_RADIUS, -1, 1))
    stripes = 0.5 + 0.5 * np.sign(np.sin(lon * 6))           # 12 longitude segments
    band = 0.5 + 0.5 * np.cos(lat * 4)
    return np.stack([0.85 * stripes + 0.1, 0.25 + 0.5 * band, 0.9 - 0.6 * stripes], -1)


def _box_colour(p: np.ndarray, axis: np.ndarray) -> np.ndarray:
    face = np.array([[0.9, 0.55, 0.1], [0.15, 0.6, 0.3], [0.3, 0.3, 0.85]])[axis]
    checker = ((np.floor(p[..., 0] * 12) + np.floor(p[..., 1] * 12) + np.floor(p[..., 2] * 12)) % 2)[..., None]
    return face * (0.65 + 0.35 * checker)


def raycast(viewmat: np.ndarray, K: np.ndarray, width: int, height: int,  # noqa: N803
            background: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render the scene from one camera.

    Returns:
        rgb [H,W,3] float32 0..1 on `background`, alpha [H,W] float32 (0 or 1), depth [H,W] camera z (0 = empty).
    """
    origin, dirs = _rays(viewmat, K, width, height)
    ts = _sphere_hit(origin, dirs)
    tb, axis = _box_hit(origin, dirs)
    t = np.minimum(ts, tb)
    hit = np.isfinite(t)
    p = origin + dirs * np.where(hit, t, 0)[..., None]
    rgb = np.where((ts <= tb)[..., None], _sphere_colour(p), _box_colour(p, axis))
    # Lambert shading from a fixed light, so geometry shows in the colours too
    normal = np.where((ts <= tb)[..., None], (p - SPHERE_CENTRE) / SPHERE_RADIUS, np.eye(3)[axis] * np.sign(
        np.take_along_axis(p - (BOX_MIN + BOX_MAX) / 2, axis[..., None], -1)))
    light = np.array([0.4, 0.3, 0.85]) / np.linalg.norm([0.4, 0.3, 0.85])
    rgb = rgb * (0.55 + 0.45 * np.clip(normal @ light, 0, 1))[..., None]
    rgb = np.where(hit[..., None], rgb, background)
    depth = np.where(hit, p @ viewmat[2, :3] + viewmat[2, 3], 0)   # camera z of the hit point
    return rgb.astype(np.float32), hit.astype(np.float32), depth.astype(np.float32)


def dataset(size: int = 256, train: int = 12) -> dict[str, np.ndarray]:
    """Training views on the 30-degree ring and held-out views between them and at other elevations."""
    from ai_modules.cameras import ring_cameras

    step = 360 / train
    tv, tk = ring_cameras([i * step for i in range(train)], 30, size)
    hv1, hk1 = ring_cameras([i * step + step / 2 for i in range(0, train, 3)], 30, size)
    hv2, hk2 = ring_cameras([i * 90 + 45 for i in range(4)], 5, size)
    hv, hk = np.concatenate([hv1, hv2]), np.concatenate([hk1, hk2])
    render = [raycast(v, k, size, size) for v, k in zip(tv, tk)]
    held = [raycast(v, k, size, size) for v, k in zip(hv, hk)]
    return {"images": np.stack([r[0] for r in render]), "masks": np.stack([r[1] for r in render]),
            "depths": np.stack([r[2] for r in render]), "viewmats": tv, "Ks": tk,
            "heldout_images": np.stack([r[0] for r in held]), "heldout_viewmats": hv, "heldout_Ks": hk}


__all__ = ["dataset", "raycast"]
