"""Pinhole cameras in the shared convention (ARCHITECTURE.md).

World: right-handed, Z up. Azimuth 0 puts the camera on the +X axis; azimuth 90
on +Y (counter-clockwise seen from above). Cameras are world-to-camera 4x4
matrices in OpenCV axes (x right, y down, z forward) plus intrinsics K in
pixels, as gsplat takes them (`viewmats`, `Ks`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def orbit_position(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """Camera centre [3] on a sphere around the origin."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    return distance * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


def look_at(eye: np.ndarray, target: np.ndarray | None = None, up: np.ndarray | None = None) -> np.ndarray:
    """World-to-camera 4x4 (OpenCV axes) of a camera at `eye` looking at `target` with world `up`.

    Raises:
        ValueError: `up` is parallel to the viewing direction.
    """
    target = np.zeros(3) if target is None else np.asarray(target, dtype=np.float64)
    up = np.array([0.0, 0.0, 1.0]) if up is None else np.asarray(up, dtype=np.float64)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        raise ValueError("`up` must not be parallel to the viewing direction")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    rot = np.stack([right, down, forward])                     # rows: camera axes in world
    view = np.eye(4)
    view[:3, :3] = rot
    view[:3, 3] = -rot @ eye
    return view


def orbit_camera(azimuth_deg: float, elevation_deg: float, distance: float) -> np.ndarray:
    """World-to-camera 4x4 of a camera on the orbit looking at the origin, Z up."""
    return look_at(orbit_position(azimuth_deg, elevation_deg, distance))


def intrinsics(focal_px: float, width: int, height: int) -> np.ndarray:
    """3x3 K with the principal point at the image centre (pixel centres at +0.5)."""
    return np.array([[focal_px, 0.0, width / 2.0], [0.0, focal_px, height / 2.0], [0.0, 0.0, 1.0]])


def ring_cameras(azimuths_deg: list[float] | tuple[float, ...], elevation_deg: float, size: int,
                 distance: float = 1.5, focal: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Square cameras on a ring around the origin, looking at it (default: SyncDreamer's ring geometry).

    Args:
        azimuths_deg: one camera per azimuth, degrees (0 = +X).
        elevation_deg: elevation of the ring, degrees.
        size: side of the square images, pixels.
        distance: distance from the origin.
        focal: focal length in pixels; default SyncDreamer's field of view, 280 px at 256 px.

    Returns:
        viewmats: [V,4,4] world-to-camera, OpenCV axes; Ks: [V,3,3].
    """
    f = 280.0 * size / 256.0 if focal is None else focal
    views = np.stack([orbit_camera(a, elevation_deg, distance) for a in azimuths_deg])
    return views, np.repeat(intrinsics(f, size, size)[None], len(views), axis=0)


def project(points: np.ndarray, view: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project world points [N,3] to pixels.

    Returns:
        uv: [N,2] pixel coordinates (u right, v down; pixel centres at i + 0.5).
        depth: [N] camera-space z (positive in front of the camera).
    """
    cam = points @ view[:3, :3].T + view[:3, 3]
    depth = cam[:, 2]
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    uv = cam[:, :2] / safe[:, None] * np.array([k[0, 0], k[1, 1]]) + np.array([k[0, 2], k[1, 2]])
    return uv, depth


@dataclass(frozen=True)
class Ring:
    """Cameras on one ring around the origin, all looking at it.

    Attributes:
        azimuths: degrees, one camera each (0 = +X, counter-clockwise seen from above).
        elevation: degrees. distance: from the origin. size: square image side, pixels. focal: pixels at `size`.
    """

    azimuths: tuple[float, ...]
    elevation: float
    distance: float
    size: int
    focal: float

    def cameras(self, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """viewmats [V,4,4] (float32) and Ks [V,3,3] (float32) for images of side `size` (the focal scales)."""
        size = self.size if size is None else size
        views, ks = ring_cameras(self.azimuths, self.elevation, size, self.distance, self.focal * size / self.size)
        return views.astype(np.float32), ks.astype(np.float32)


#: SyncDreamer's 16 target views (the one definition in the code): elevation 30, azimuth 22.5 * i,
#: distance 1.5, fx = fy = 280 at 256 px. The relief renders its views on the same ring.
SYNCDREAMER_RING = Ring(tuple(22.5 * i for i in range(16)), 30.0, 1.5, 256, 280.0)
