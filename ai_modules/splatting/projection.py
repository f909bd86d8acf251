"""EWA projection of 3D Gaussians to image-space ellipses, in plain torch (gsplat's conventions).

Mirrors gsplat 1.5.3's pinhole `fully_fused_projection` kernel step by step, so
that the torch rasterizer and gsplat see the same 2D Gaussians:

- covariance R diag(s)^2 R^T from (w,x,y,z) quaternions and scales;
- camera-space mean and covariance, culled outside (`near`, `far`);
- the Jacobian of the perspective projection at the mean, with x/z and y/z clamped
  to the image's extent plus 0.3 tan(fov/2) on each side (1.3 tan(fov/2) for a
  centred principal point);
- `eps2d` added to the diagonal of the 2D covariance; in antialiased mode the
  opacity is scaled by sqrt(det before / det after);
- opacity-aware tight bounding box: radius_x = ceil(e sqrt(cov_xx)), radius_y
  likewise, with e = min(3.33, sqrt(2 ln(opacity / (1/255)))) (e = 3.33 when no
  opacities are given, as in gsplat's torch reference); a pixel outside that box
  cannot reach alpha 1/255;
- culled Gaussians (behind `near`, beyond `far`, singular, too faint, or whose box
  misses the image) get radii 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry import quat_to_matrix

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: fainter contributions are skipped
BOX_EXTEND = 3.33              # gsplat's bounding-box extent in standard deviations


@dataclass(frozen=True)
class Projection:
    """Gaussians seen by C cameras; entries with radii 0 are culled (their values are placeholders).

    Attributes:
        means2d: [C,N,2] pixel coordinates of the means (pixel centres at i + 0.5).
        conics: [C,N,3] upper triangle (a, b, c) of the inverse 2D covariance.
        depths: [C,N] camera-space z of the means.
        radii: [C,N,2] int32 half-extents of the bounding box in pixels (x, y); 0 = culled.
        opacities: [C,N] opacities, times the compensation in antialiased mode ([C,N] of ones
            broadcast when none were given).
        compensations: [C,N] sqrt(det before / det after eps2d), or None in classic mode.
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    opacities: torch.Tensor
    compensations: torch.Tensor | None

    @property
    def visible(self) -> torch.Tensor:
        """[C,N] bool: not culled."""
        return (self.radii > 0).all(dim=-1)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances R diag(scales)^2 R^T.

    Args:
        quats: [N,4] (w,x,y,z), normalised here.
        scales: [N,3] standard deviations (not logs).

    Returns:
        [N,3,3] symmetric positive semi-definite.
    """
    m = quat_to_matrix(quats) * scales[:, None, :]                   # R S   [N,3,3]
    return m @ m.transpose(-1, -2)


def project(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, viewmats: torch.Tensor,
            Ks: torch.Tensor, width: int, height: int, *, opacities: torch.Tensor | None = None,
            eps2d: float = 0.3, near: float = 0.01, far: float = 1e10, antialiased: bool = False) -> Projection:
    """Project N 3D Gaussians into C pinhole cameras (differentiable w.r.t. all float inputs).

    Args:
        means: [N,3] world positions.
        quats: [N,4] rotations (w,x,y,z), not necessarily unit.
        scales: [N,3] standard deviations (not logs).
        viewmats: [C,4,4] world-to-camera, OpenCV axes.
        Ks: [C,3,3] intrinsics in pixels.
        width: image width in pixels.
        height: image height in pixels.
        opacities: [N] in 0..1, or None; used for the tight box and the faint-Gaussian cull.
        eps2d: added to the diagonal of each 2D covariance (pixels^2).
        near: Gaussians with camera z below this are culled.
        far: Gaussians with camera z above this are culled.
        antialiased: compute compensations and scale the opacities by them.

    Returns:
        The `Projection`.
    """
    rot, trans = viewmats[:, :3, :3], viewmats[:, :3, 3]             # [C,3,3], [C,3]
    means_c = torch.einsum("cij,nj->cni", rot, means) + trans[:, None, :]          # [C,N,3]
    covars_c = rot[:, None] @ covariances(quats, scales)[None] @ rot[:, None].transpose(-1, -2)  # [C,N,3,3]
    x, y, z = means_c.unbind(-1)                                      # [C,N] each
    in_depth = (z >= near) & (z <= far)
    z = torch.where(in_depth, z, torch.ones_like(z))                  # keep culled entries finite (and their grads)

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]                     # [C,1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = z * torch.clamp(x / z, min=-(cx / fx + 0.3 * tan_x), max=(width - cx) / fx + 0.3 * tan_x)
    ty = z * torch.clamp(y / z, min=-(cy / fy + 0.3 * tan_y), max=(height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    jac = torch.stack([fx / z, zero, -fx * tx / (z * z),
                       zero, fy / z, -fy * ty / (z * z)], dim=-1).reshape(*z.shape, 2, 3)  # [C,N,2,3]
    cov2d = jac @ covars_c @ jac.transpose(-1, -2)                    # [C,N,2,2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)  # [C,N,2]

    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    ok = in_depth & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)        # [C,N,3]

    compensations = torch.sqrt(torch.clamp(det_orig / det, min=0.0)) if antialiased else None
    opac = torch.ones_like(z) if opacities is None else opacities[None, :].expand_as(z)   # [C,N]
    if compensations is not None:
        opac = opac * compensations
    if opacities is None:
        extend = torch.full_like(z, BOX_EXTEND)
    else:
        ok = ok & (opac >= ALPHA_THRESHOLD)
        faint = opac.detach().clamp_min(ALPHA_THRESHOLD)
        extend = torch.clamp(torch.sqrt(2.0 * torch.log(faint / ALPHA_THRESHOLD)), max=BOX_EXTEND)

    with torch.no_grad():
        radii = torch.stack([torch.ceil(extend * torch.sqrt(a.clamp_min(0))),
                             torch.ceil(extend * torch.sqrt(c.clamp_min(0)))], dim=-1)  # [C,N,2]
        mx, my = means2d[..., 0], means2d[..., 1]
        rx, ry = radii[..., 0], radii[..., 1]
        inside = (mx + rx > 0) & (mx - rx < width) & (my + ry > 0) & (my - ry < height)
        keep = ok & inside & torch.isfinite(means2d).all(-1) & (rx > 0) & (ry > 0)
        radii = torch.where(keep[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projection(means2d=means2d, conics=conics, depths=means_c[..., 2], radii=radii, opacities=opac,
                      compensations=compensations)


def camera_centres(viewmats: torch.Tensor) -> torch.Tensor:
    """Camera centres in the world [C,3] of world-to-camera matrices [C,4,4] (as gsplat: inverse's translation)."""
    return torch.linalg.inv(viewmats)[:, :3, 3]

