"""Where the photo was taken from, for an object a generator built in its own pose (TRELLIS: a canonical pose,
not the photo's view): the camera on the orbit whose render of the Gaussians best matches the cutout.

Candidates are orbit cameras every `AZIMUTH_STEP` degrees at a few elevations, then the neighbours of the best one
at finer steps (coarse to fine: 50 renders instead of the 324 of a grid that fine); each is rendered small and
compared with the cutout after both are framed by their own bounding boxes (so only shape and colour count, not
scale or offset): silhouette IoU, minus the colour difference inside it, minus a small pull towards azimuth 0
(the generator's front) that settles ties such as front and back silhouettes of a symmetric object.
The photo's camera is then that orbit camera with its intrinsics set so the render's bounding box lands on the
cutout's: what `reconstruct` needs to fit the object to the photo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..cameras import intrinsics, orbit_camera
from ..gaussians import Gaussians
from ..splatting import render_views

AZIMUTH_STEP = 30.0
ELEVATIONS = (0.0, 20.0, 40.0)
AZIMUTH_FINE = (-20.0, -10.0, 0.0, 10.0, 20.0)   # the fine pass around the best coarse candidate, degrees
ELEVATION_FINE = (-10.0, 0.0, 10.0)
SEARCH_SIZE = 64            # pixels of each candidate render
COLOUR_WEIGHT = 0.5         # score = IoU - COLOUR_WEIGHT * mean |rgb diff| - FRONT_PULL * |azimuth| / 180
FRONT_PULL = 0.02
MARGIN = 1.1                # the square frame around a bounding box, times its long side
OBJECT_RADIUS = 3 ** 0.5 / 2  # the world box [-0.5, 0.5]^3 lies inside this sphere


@dataclass(frozen=True)
class PhotoPose:
    """The photo's camera found for an object.

    Attributes:
        azimuth, elevation: degrees on the orbit (world frame of the object as it was searched).
        viewmat: [4,4] world-to-camera (OpenCV axes) at that azimuth and elevation.
        K: [3,3] intrinsics for the full-size cutout that put the object's render on the cutout's bounding box.
        iou: silhouette IoU of the best candidate (framed). score: its score.
    """

    azimuth: float
    elevation: float
    viewmat: np.ndarray
    K: np.ndarray  # noqa: N815 - gsplat's name
    iou: float
    score: float


def bbox(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """(x0, y0, x1, y1) pixel edges of the True pixels of `mask` [H,W], or None when it is empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def framed(image: np.ndarray, alpha: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray] | None:
    """RGB [size,size,3] and alpha [size,size] cut to a square `MARGIN` x the long side of the alpha's bounding box,
    centred on it, over white (None: empty alpha)."""
    box = bbox(alpha >= 0.5)
    if box is None:
        return None
    x0, y0, x1, y1 = box
    side = MARGIN * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = size / side
    warp = np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]], np.float32)
    rgb = cv2.warpAffine(image.astype(np.float32), warp, (size, size), flags=cv2.INTER_AREA,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=(1.0, 1.0, 1.0))
    a = cv2.warpAffine(alpha.astype(np.float32), warp, (size, size), flags=cv2.INTER_AREA,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    return rgb, a


def search_pose(g: Gaussians, image: np.ndarray, alpha: np.ndarray, distance: float,
                elevations: tuple[float, ...] = ELEVATIONS, azimuth_step: float = AZIMUTH_STEP,
                size: int = SEARCH_SIZE) -> PhotoPose:
    """The orbit camera that sees `g` (world frame, on the device to render on) as the cutout shows the object.

    Args:
        image: [S,S,3] float32 0..1 on white; alpha: [S,S] float32 0..1 (the cutout).
        distance: the orbit's radius.

    Raises:
        ValueError: the cutout's alpha is empty, or no candidate sees the object.
    """
    target = framed(image, alpha, size)
    if target is None:
        raise ValueError("the cutout's alpha is empty: nothing to pose")
    t_rgb, t_alpha = target
    t_mask = t_alpha >= 0.5
    coarse = [(float(az), el) for el in elevations for az in np.arange(0.0, 360.0, azimuth_step)]
    best = _best(g, coarse, t_rgb, t_mask, distance, size)
    if best is None:
        raise ValueError("no orbit camera sees the object")
    fine = [((best[3] + da) % 360.0, best[4] + de) for da in AZIMUTH_FINE for de in ELEVATION_FINE if da or de]
    best = max(best, _best(g, fine, t_rgb, t_mask, distance, size) or best, key=lambda b: b[0])
    score, iou, view, az, el = best
    view, k = photo_intrinsics(g, alpha, view, distance)
    return PhotoPose(az, el, view, k, iou, score)


def _best(g: Gaussians, poses: list[tuple[float, float]], t_rgb: np.ndarray, t_mask: np.ndarray, distance: float,
          size: int) -> tuple[float, float, np.ndarray, float, float] | None:
    """(score, IoU, viewmat, azimuth, elevation) of the best of `poses` (None: none sees the object)."""
    viewmats = np.stack([orbit_camera(az, el, distance) for az, el in poses]).astype(np.float32)
    ks = np.repeat(intrinsics(whole_view_focal(size, distance), size, size)[None], len(poses), 0).astype(np.float32)
    rgbs, alphas, _ = render_views(g, viewmats, ks, size)
    best = None
    for i, (az, el) in enumerate(poses):
        cand = framed(rgbs[i], alphas[i], size)
        if cand is None:
            continue
        mask = cand[1] >= 0.5
        union = t_mask | mask
        iou = float((t_mask & mask).sum() / max(union.sum(), 1))
        colour = float(np.abs(cand[0] - t_rgb)[union].mean()) if union.any() else 1.0
        signed = az if az <= 180 else az - 360
        score = iou - COLOUR_WEIGHT * colour - FRONT_PULL * abs(signed) / 180
        if best is None or score > best[0]:
            best = (score, iou, viewmats[i], az, el)
    return best


def whole_view_focal(size: int, distance: float, radius: float = OBJECT_RADIUS) -> float:
    """Focal length (pixels, square image of side `size`) at which a sphere of `radius` about the origin, seen from
    `distance`, fits the frame with a 5 % margin: candidates are compared on whole silhouettes, never cut ones."""
    return 0.95 * (size / 2) / math.tan(math.asin(min(radius / distance, 0.99)))


def photo_intrinsics(g: Gaussians, alpha: np.ndarray, viewmat: np.ndarray, distance: float,
                     size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(viewmat, K) for the full-size cutout: the orbit camera with focal and principal point set so that the
    object's render (its bounding box measured at `size` px with the whole object in view) has the cutout's
    long side and centre."""
    f = whole_view_focal(size, distance)
    k0 = intrinsics(f, size, size).astype(np.float32)
    _, rendered, _ = render_views(g, viewmat[None].astype(np.float32), k0[None], size)
    box_r, box_p = bbox(rendered[0] >= 0.5), bbox(alpha >= 0.5)
    s = alpha.shape[0]
    if box_r is None or box_p is None:
        return viewmat.astype(np.float32), intrinsics(whole_view_focal(s, distance), s, s).astype(np.float32)
    # In normalised image coordinates (x / z) the render's box is (box_r - size / 2) / f; the cutout's camera maps
    # them onto the cutout's box: focal = its long side / the render's, principal point = its centre - focal * x.
    focal = max(box_p[2] - box_p[0], box_p[3] - box_p[1]) / (max(box_r[2] - box_r[0], box_r[3] - box_r[1]) / f)
    k = intrinsics(focal, s, s)
    for axis, (lo, hi) in enumerate(((0, 2), (1, 3))):
        centre = ((box_r[lo] + box_r[hi]) / 2 - size / 2) / f
        k[axis, 2] = (box_p[lo] + box_p[hi]) / 2 - focal * centre
    return viewmat.astype(np.float32), k.astype(np.float32)
