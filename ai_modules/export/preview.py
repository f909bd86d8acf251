"""Views of the Gaussians for the exports: the contact sheet, the turntable and the mesh views.

Everything here renders through `ai_modules.splatting.render` (gsplat on CUDA,
the pure-torch tile rasterizer elsewhere) on the device the Gaussians are on,
under `torch.no_grad()`, a few cameras at a time (`render_views`).

* `contact_sheet`: a few orbit views side by side, labelled, 4 tiles a row.
* `turntable_frames`: one turn around the object at a fixed elevation;
  `animated_webp` encodes the frames.
* `mesh_cameras`: SyncDreamer's ring (elevation 30, distance 1.5, its field of
  view) plus a ring at -30 deg with half as many views, for TSDF fusion.

The contact sheet and the turntable frame the object alike: the focal length
makes the Gaussians' bounding sphere about the origin fill `fill` of the frame.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image

from ..cameras import ring_cameras
from ..gaussians import Gaussians
from ..splatting import render_views

#: Length of one turn of the turntable animation, seconds.
TURNTABLE_SECONDS = 4.0


def framing_focal(g: Gaussians, size: int, distance: float, fill: float) -> float:
    """Focal length (pixels) at which the Gaussians' bounding sphere about the origin has radius `fill` * `size`."""
    reach = float(g.means.norm(dim=1).max()) if g.num else 0.5
    reach = min(max(reach, 1e-3), 0.95 * distance)
    return fill * size * math.sqrt(distance ** 2 - reach ** 2) / reach


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8))


def contact_sheet(g: Gaussians, azimuths: tuple[float, ...], elevation: float, size: int,
                  distance: float = 1.5, fill: float = 0.42, labels: bool = True) -> np.ndarray:
    """Render the object from several orbit views into one image, 4 tiles a row.

    The focal length is chosen so that the Gaussians' bounding sphere (about
    the origin) projects to a radius of `fill` * `size`.

    Args:
        g: Gaussians in the world frame (object inside [-0.5, 0.5]^3), on the device to render on.
        azimuths: degrees; 0 is the input photo's viewpoint (+X).
        elevation: degrees.
        size: side of one tile, pixels.
        distance: camera distance from the origin.
        fill: projected radius of the bounding sphere / tile side.
        labels: write "az 90 el 30" in each tile.

    Returns:
        [rows*size, cols*size, 3] uint8 RGB on white.

    Example:
        >>> sheet = contact_sheet(Gaussians.load_ply(Path("model.ply")), (0, 90, 180, 270), 30.0, 256)  # doctest: +SKIP
    """
    views, ks = ring_cameras(azimuths, elevation, size, distance, framing_focal(g, size, distance, fill))
    rgb, _, _ = render_views(g, views, ks, size)
    tiles = []
    for az, tile in zip(azimuths, _to_uint8(rgb)):
        tile = np.ascontiguousarray(tile)
        if labels:
            cv2.putText(tile, f"az {az:g} el {elevation:g}", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        (115, 115, 115), 1, cv2.LINE_AA)
        tiles.append(tile)
    cols = min(4, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * size, cols * size, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * size:(r + 1) * size, c * size:(c + 1) * size] = tile
    return sheet


def turntable_frames(g: Gaussians, frames: int, elevation: float, size: int, distance: float = 1.5,
                     fill: float = 0.42) -> np.ndarray:
    """Render one turn around the object: azimuth 360 * i / `frames`, i = 0..frames-1, framed as `contact_sheet`.

    Args:
        g: Gaussians in the world frame, on the device to render on.
        frames: number of frames (>= 1).
        elevation: camera elevation, degrees.
        size: side of a frame, pixels.
        distance: camera distance from the origin.
        fill: projected radius of the bounding sphere / frame side.

    Returns:
        [F,S,S,3] uint8 RGB on white.

    Raises:
        ValueError: `frames` < 1.
    """
    if frames < 1:
        raise ValueError(f"`frames` must be >= 1, got {frames}")
    views, ks = ring_cameras([360.0 * i / frames for i in range(frames)], elevation, size, distance,
                             framing_focal(g, size, distance, fill))
    rgb, _, _ = render_views(g, views, ks, size)
    return _to_uint8(rgb)


def animated_webp(frames: np.ndarray, seconds: float = TURNTABLE_SECONDS, quality: int = 80) -> bytes:
    """Encode [F,H,W,3] uint8 frames as a looping, lossy animated WebP lasting `seconds` per loop."""
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="WEBP", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000.0 * seconds / len(images))), loop=0, lossless=False, quality=quality)
    return buf.getvalue()


def mesh_cameras(views: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cameras for mesh fusion: SyncDreamer's field of view (f = 280 px at 256 px) at distance 1.5.

    A ring of `views` cameras at elevation 30 deg, azimuth 360 / views * i, and a ring of
    views // 2 at -30 deg, shifted by half its step so that the two rings interleave.

    Returns:
        viewmats: [V,4,4] world-to-camera, OpenCV axes; V = views + views // 2.
        Ks: [V,3,3] intrinsics for `size` x `size` views.
    """
    below = views // 2
    upper, k_upper = ring_cameras([360.0 / views * i for i in range(views)], 30.0, size)
    lower, k_lower = ring_cameras([360.0 / below * (i + 0.5) for i in range(below)], -30.0, size)
    return np.concatenate([upper, lower]), np.concatenate([k_upper, k_lower])
