"""The embedded multiview backend `relief`: cutout + relief height -> a closed object of Gaussians.

Frame (ARCHITECTURE.md): the photo is what the camera at azimuth 0 sees; that
camera sits on +X looking at the origin, so image column u -> world +Y, image
row v (down) -> world -Z, and the front surface (toward the camera) has larger
X. Pixel (u, v) maps orthographically to

    Y = (u + 0.5 - S/2) * p,   Z = -(v + 0.5 - S/2) * p,   X = +-height(u, v) * p

with p = extent / (long side of the silhouette in pixels), so the silhouette's
long side is `extent` world units and its bounding box is centred (the segment
stage centres it).

Three layers of Gaussians make a closed object:

* front: one per silhouette pixel at X = +h p, flat along the surface normal
  and stretched across it to the pixel's footprint on the (possibly steep)
  surface (`surface_frames`); on flat parts the rotation is the identity;
* back: the mirror image at X = -h p, coloured like the front times `back_shade`
  (the photo does not show the back; darker makes the guess visible);
* side walls (optional): Gaussians stacked in X along the silhouette rim,
  about one pixel apart, closing the gap between the front and back rims; their
  colour blends from the front colour to the back colour.

The rasterizer blurs every splat by about half a pixel (gsplat's `eps2d`), so
Gaussians stacked right at the edge would render a silhouette a pixel wider
than the cutout's, and its views would disagree with the photo along every
edge (which costs thin objects most). So the edge is kept where the cutout has
it: the front and back Gaussians of rim pixels sit `rim_inset` pixels inward,
take the cutout's (soft) alpha as their opacity, and the walls stand
`wall_inset` pixels inside the rim, hidden behind the front from the photo's
camera.

Gradients are clipped at `MAX_SLOPE` (the rounded rim is nearly vertical); the
walls cover what the clipped surfaces leave open.

`relief_object` then stands this relief upright under the input photo's own
camera: a perspective camera at azimuth 0 and the photo's elevation
(ARCHITECTURE.md's orbit). Each Gaussian moves along its pixel's ray to where
the ray reaches its height in front of the vertical mid-plane, so the object,
seen from that camera, covers exactly the cutout's pixels and still stands
upright when seen from the side.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from ..cameras import intrinsics, orbit_camera
from ..gaussians import Gaussians, rgb_to_sh_dc
from ..geometry import covariance_to_scale_rotation, quat_multiply, quat_to_matrix

MAX_SLOPE = 4.0
FLAT_SLOPE = 0.05
BOX_LIMIT = 0.49  # means are scaled down uniformly if any coordinate would leave [-0.49, 0.49]


def uncomposite(image: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Undo compositing on white: [H,W,3] on white + [H,W] alpha -> [H,W,3] object colour (alpha > 0)."""
    a = np.maximum(alpha, 1e-3)[..., None]
    return np.clip((image - (1.0 - a)) / a, 0.0, 1.0)


def masked_gradient(height: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """d height / du and d height / dv using only neighbours inside `mask`.

    Central differences where both neighbours are inside, one-sided where one is, 0 where none.

    Args:
        height: [H,W] float32.
        mask: [H,W] bool.

    Returns:
        (du, dv): [H,W] float32 each.
    """
    out = []
    for axis in (1, 0):
        hp, mp = np.pad(height, 1), np.pad(mask, 1)
        sl = [slice(1, -1), slice(1, -1)]
        fwd, bwd = list(sl), list(sl)
        fwd[axis], bwd[axis] = slice(2, None), slice(None, -2)
        hf, hb = hp[tuple(fwd)], hp[tuple(bwd)]
        mf, mb = mp[tuple(fwd)], mp[tuple(bwd)]
        g = np.where(mf & mb, (hf - hb) / 2.0, np.where(mf, hf - height, np.where(mb, height - hb, 0.0)))
        out.append(np.where(mask, g, 0.0).astype(np.float32))
    return out[0], out[1]


def surface_frames(slope_y: torch.Tensor, slope_z: torch.Tensor, sigma: float, flatness: float
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales and rotations of flat Gaussians on the surface X = f(Y, Z), in closed form.

    The local x axis is the surface normal n = (1, -f_Y, -f_Z)/|.|; the rotation
    is the minimal one taking world X to n, followed by a twist about n (folded
    into +-45 degrees) that aligns one local axis with the slope direction, the
    axis stretched by sqrt(1 + |grad f|^2) to cover the pixel's footprint on
    the slope. A flat surface (slope < `FLAT_SLOPE`) gives the identity rotation.

    Args:
        slope_y: [N] dX/dY.
        slope_z: [N] dX/dZ.
        sigma: standard deviation across the surface per unit (Y, Z), world units.
        flatness: standard deviation along the normal / `sigma`.

    Returns:
        log_scales: [N,3].
        quats: [N,4] unit (w,x,y,z).
    """
    g2 = slope_y ** 2 + slope_z ** 2
    inv = torch.rsqrt(1.0 + g2)
    nx, ny, nz = inv, -slope_y * inv, -slope_z * inv
    q0 = torch.stack([1.0 + nx, torch.zeros_like(nx), -nz, ny], -1)      # half-way quaternion X -> n
    q0 = q0 / q0.norm(dim=-1, keepdim=True)
    # Below FLAT_SLOPE the twist direction is noise and the stretch under 0.13%: no twist, identity-ish.
    phi = torch.where(g2 < FLAT_SLOPE ** 2, torch.zeros_like(g2), torch.atan2(slope_z, slope_y))
    quarter = torch.round(phi / (math.pi / 2))
    twist = phi - quarter * (math.pi / 2)
    qt = torch.stack([torch.cos(twist / 2), torch.sin(twist / 2), torch.zeros_like(twist), torch.zeros_like(twist)], -1)
    stretched = sigma * torch.sqrt(1.0 + g2)
    plain = torch.full_like(stretched, sigma)
    odd = (quarter.abs() % 2) == 1
    scales = torch.stack([torch.full_like(plain, flatness * sigma), torch.where(odd, plain, stretched),
                          torch.where(odd, stretched, plain)], -1)
    return torch.log(scales), quat_multiply(q0, qt)


def mirror_x(quats: torch.Tensor) -> torch.Tensor:
    """Quaternions [N,4] of the Gaussians mirrored through the plane X = 0: (w,x,y,z) -> (w,x,-y,-z)."""
    return quats * quats.new_tensor([1.0, 1.0, -1.0, -1.0])


def rim_pixels(mask: np.ndarray) -> np.ndarray:
    """[H,W] bool: the silhouette's pixels with a 4-neighbour outside it."""
    eroded = cv2.erode(mask.astype(np.uint8), np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8))
    return mask & ~eroded.astype(bool)


def outward_normals(mask: np.ndarray, vs: np.ndarray, us: np.ndarray) -> np.ndarray:
    """[M,2] unit outward directions (u, v) of the silhouette at pixels (vs, us), from the smoothed mask."""
    smooth = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.5)
    gv, gu = np.gradient(smooth)
    out = -np.stack([gu[vs, us], gv[vs, us]], -1).astype(np.float64)
    return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-9)


def rim_walls(mask: np.ndarray, height: np.ndarray, colour: np.ndarray, back_colour: np.ndarray,
              inset: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample wall points along the silhouette rim, about one pixel apart in X.

    Args:
        mask: [H,W] bool.
        height: [H,W] float32 pixels.
        colour, back_colour: [H,W,3] float32 0..1.
        inset: how far inside the rim pixels' centres the wall stands, pixels.

    Returns:
        uv: [M,2] float64 pixel coordinates (u, v), `inset` pixels inward of the rim pixels' centres.
        x_px: [M] height of each wall point, pixels (from -h to +h of its rim pixel).
        outward: [M,2] unit outward direction in (u, v).
        step_px: [M] spacing of the wall points in X, pixels.
        rgb: [M,3] colour.
    """
    vs, us = np.nonzero(rim_pixels(mask))
    out = outward_normals(mask, vs, us)
    h = height[vs, us].astype(np.float64)
    count = np.maximum(1, np.ceil(2.0 * h)).astype(np.int64)
    rep = np.repeat(np.arange(len(vs)), count)
    j = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
    step = 2.0 * h[rep] / count[rep]
    x_px = -h[rep] + (j + 0.5) * step
    uv = np.stack([us[rep], vs[rep]], -1) + 0.5 - inset * out[rep]
    t = ((x_px / np.maximum(h[rep], 1e-9)) + 1.0) / 2.0
    rgb = t[:, None] * colour[vs, us][rep] + (1 - t[:, None]) * back_colour[vs, us][rep]
    return uv, x_px, out[rep], step, rgb


def relief_pixel_size(mask: np.ndarray, extent: float) -> float:
    """World size of one cutout pixel: the silhouette's long side spans `extent`."""
    vs, us = np.nonzero(mask)
    return extent / float(max(np.ptp(us), np.ptp(vs)) + 1)


def lift_relief(image: np.ndarray, alpha: np.ndarray, height: np.ndarray, *, extent: float = 0.8,
                back_shade: float = 0.9, side_walls: bool = True, opacity: float = 0.95,
                footprint: float = 0.35, flatness: float = 0.1, rim_inset: float = 0.25,
                wall_inset: float = 1.0, fit_box: bool = True) -> Gaussians:
    """Turn a cutout and its relief height into a closed set of Gaussians (see the module docstring).

    Args:
        image: [S,S,3] float32 0..1 on white.
        alpha: [S,S] float32 0..1; the silhouette is ``alpha >= 0.5``.
        height: [S,S] float32 >= 0, front height above the mid-plane, pixels.
        extent: world length of the silhouette's long side.
        back_shade: colour factor of the back side.
        side_walls: add rim walls.
        opacity: opacity of the Gaussians (times the cutout's alpha on the front and back).
        footprint: standard deviation across the surface, in pixel footprints.
        flatness: standard deviation along the normal / across it.
        rim_inset: how far the front and back Gaussians of rim pixels move inward, pixels.
        wall_inset: how far inside the rim pixels' centres the walls stand, pixels.
        fit_box: scale down uniformly if any mean would leave [-BOX_LIMIT, BOX_LIMIT]^3.

    Returns:
        Gaussians on the CPU, SH degree 0.

    Raises:
        ValueError: an empty silhouette.
    """
    mask = alpha >= 0.5
    if not mask.any():
        raise ValueError("`alpha` must contain a silhouette (alpha >= 0.5), got none")
    size = mask.shape[1]
    vs, us = np.nonzero(mask)
    p = relief_pixel_size(mask, extent)
    colour = uncomposite(image, alpha)
    back = colour * back_shade
    du, dv = masked_gradient(height, mask)
    slope = np.stack([du[vs, us], -dv[vs, us]], -1)                          # dX/dY, dX/dZ
    norm = np.linalg.norm(slope, axis=-1, keepdims=True)
    slope = torch.from_numpy(slope * np.minimum(1.0, MAX_SLOPE / np.maximum(norm, 1e-9))).double()
    uv = np.stack([us, vs], -1) + 0.5
    on_rim = rim_pixels(mask)[vs, us]
    uv[on_rim] -= rim_inset * outward_normals(mask, vs[on_rim], us[on_rim])
    y = (uv[:, 0] - size / 2.0) * p
    z = -(uv[:, 1] - size / 2.0) * p
    x = height[vs, us].astype(np.float64) * p
    sigma = footprint * p
    log_scales, quats = surface_frames(slope[:, 0], slope[:, 1], sigma, flatness)
    means = [np.stack([x, y, z], -1), np.stack([-x, y, z], -1)]
    scales_l, quats_l = [log_scales, log_scales], [quats, mirror_x(quats)]
    rgbs = [colour[vs, us], back[vs, us]]
    opacities = [opacity * alpha[vs, us], opacity * alpha[vs, us]]
    if side_walls:
        uv, x_px, out, step, rgb = rim_walls(mask, height, colour, back, wall_inset)
        means.append(np.stack([x_px * p, (uv[:, 0] - size / 2.0) * p, -(uv[:, 1] - size / 2.0) * p], -1))
        # Local x along world X (up the wall), local z = outward normal (0, out_u, -out_v): a rotation about X.
        beta = torch.from_numpy(np.arctan2(-out[:, 1], out[:, 0]) - np.pi / 2)
        quats_l.append(torch.stack([torch.cos(beta / 2), torch.sin(beta / 2), torch.zeros_like(beta),
                                    torch.zeros_like(beta)], -1))
        s_x = np.maximum(step, 1.0) * footprint * p
        scales_l.append(torch.from_numpy(np.log(np.stack([s_x, np.full_like(s_x, sigma),
                                                          np.full_like(s_x, flatness * sigma)], -1))))
        rgbs.append(rgb)
        opacities.append(np.full(len(rgb), opacity))
    return _assemble(np.concatenate(means), torch.cat(scales_l), torch.cat(quats_l), np.concatenate(rgbs),
                     np.concatenate(opacities), fit_box)


def relief_object(image: np.ndarray, alpha: np.ndarray, height: np.ndarray, *, elevation: float = 30.0,
                  distance: float = 1.5, extent: float = 0.8, **relief: Any
                  ) -> tuple[Gaussians, np.ndarray, np.ndarray]:
    """The relief standing upright under the photo's camera: (Gaussians in the world, that camera's
    viewmat [4,4] and K [3,3]).

    The camera sits at azimuth 0, `elevation` degrees, `distance` from the origin, with a focal
    length at which the cutout's long side spans `extent` on the mid-plane. The mid-plane is the
    vertical plane X = 0 (not the image plane), so the object stands upright whatever the
    elevation; each Gaussian sits on its pixel's ray where the ray reaches X = its relief height,
    so from the photo's camera the object covers exactly the cutout's pixels. Covariances follow
    the map's local Jacobian. The whole scene (object and camera together, which leaves the view
    unchanged) is scaled down if the object would leave the box [-BOX_LIMIT, BOX_LIMIT]^3.

    Args:
        image, alpha, height: as for `lift_relief` ([S,S,3], [S,S], [S,S] in pixels).
        elevation: the photo's elevation, degrees (-60..60).
        distance: the camera's distance from the origin before any scaling.
        extent: world length of the silhouette's long side on the mid-plane (before the vertical
            stretch that an elevated camera's foreshortening calls for).
        relief: the other keyword arguments of `lift_relief`.

    Raises:
        ValueError: an empty silhouette, an elevation outside -60..60, or `distance` too small.
    """
    mask = alpha >= 0.5
    if not mask.any():
        raise ValueError("`alpha` must contain a silhouette (alpha >= 0.5), got none")
    if not -60.0 <= elevation <= 60.0:
        raise ValueError(f"`elevation` must be within -60..60 degrees, got {elevation!r}")
    p = relief_pixel_size(mask, extent)
    g = lift_relief(image, alpha, height, extent=extent, fit_box=False, **relief)
    if float(g.means[:, 0].abs().max()) >= 0.5 * distance:
        raise ValueError(f"`distance` must exceed twice the relief's depth {float(g.means[:, 0].abs().max()):.3f}, "
                         f"got {distance}")
    e = math.radians(elevation)
    centre = distance * torch.tensor([math.cos(e), 0.0, math.sin(e)], dtype=torch.float64)
    forward, right = -centre / distance, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    up = torch.tensor([-math.sin(e), 0.0, math.cos(e)], dtype=torch.float64)

    def place(q: torch.Tensor) -> torch.Tensor:
        """Relief coordinates (height toward the camera, image right, image up) -> world points on the rays."""
        rays = forward + (q[:, 1:2] * right + q[:, 2:3] * up) / distance
        t = (q[:, :1] - centre[0]) / rays[:, :1]
        return centre + t * rays

    q = g.means.double()
    means = place(q)
    step = 1e-4
    jacobian = torch.stack([(place(q + step * torch.eye(3, dtype=torch.float64)[i]) - means) / step
                            for i in range(3)], dim=-1)                                     # [N,3,3]
    rot = quat_to_matrix(g.quats.double())
    cov = rot @ torch.diag_embed(torch.exp(2 * g.log_scales.double())) @ rot.transpose(1, 2)
    log_scales, quats = covariance_to_scale_rotation(jacobian @ cov @ jacobian.transpose(1, 2))
    reach = float(means.abs().max())
    scale = min(1.0, BOX_LIMIT / reach)
    g = Gaussians(means=(means * scale).float(), quats=quats.float(), log_scales=(log_scales + math.log(scale)).float(),
                  opacity_logits=g.opacity_logits, sh_dc=g.sh_dc, sh_rest=g.sh_rest)
    size = alpha.shape[1]
    return g, orbit_camera(0.0, elevation, distance * scale), intrinsics(distance / p, size, alpha.shape[0])


def _assemble(means: np.ndarray, log_scales: torch.Tensor, quats: torch.Tensor, rgb: np.ndarray,
              opacity: np.ndarray, fit_box: bool = True) -> Gaussians:
    reach = np.abs(means).max()
    shrink = min(1.0, BOX_LIMIT / reach) if reach > 0 and fit_box else 1.0
    n = len(means)
    return Gaussians(
        means=torch.from_numpy(means * shrink).float(),
        quats=quats.float(),
        log_scales=(log_scales + math.log(shrink)).float(),
        opacity_logits=torch.from_numpy(np.log(opacity / (1.0 - opacity))).float(),
        sh_dc=rgb_to_sh_dc(torch.from_numpy(np.ascontiguousarray(rgb)).float()),
        sh_rest=torch.zeros(n, 0, 3),
    )
