"""Finding the photo's camera for an object built in its own pose (`multiview.photo_pose`): a box with coloured
sides, photographed from a known orbit camera with another lens and off centre, is posed back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_modules.cameras import intrinsics, orbit_camera
from ai_modules.gaussians import Gaussians, rgb_to_sh_dc
from ai_modules.multiview.photo_pose import bbox, search_pose
from ai_modules.splatting import render_views

SIZE = 96


def coloured_box(n: int = 3000) -> Gaussians:
    """Gaussians on the surface of a 0.5 x 0.3 x 0.4 box, each side its own colour (none looks like another)."""
    rng = np.random.default_rng(0)
    half = np.array([0.25, 0.15, 0.2])
    axis, sign = rng.integers(0, 3, n), rng.choice([-1.0, 1.0], n)
    pts = (rng.random((n, 3)) * 2 - 1) * half
    pts[np.arange(n), axis] = sign * half[axis]
    palette = np.array([[0.9, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.1], [0.1, 0.8, 0.8],
                        [0.8, 0.1, 0.8]])
    colours = palette[axis * 2 + (sign > 0)]
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    return Gaussians(means=torch.tensor(pts).float(), quats=quats, log_scales=torch.full((n, 3), -4.0),
                     opacity_logits=torch.full((n,), 5.0), sh_dc=rgb_to_sh_dc(torch.tensor(colours).float()),
                     sh_rest=torch.zeros(n, 0, 3))


@pytest.mark.parametrize("azimuth, elevation", [(60.0, 20.0), (200.0, 10.0)])
def test_the_photos_orbit_camera_and_framing_are_found(azimuth, elevation):
    g = coloured_box()
    k = intrinsics(150.0, SIZE, SIZE)
    k[:2, 2] += (9.0, -6.0)                                              # the object off centre in the photo
    rgb, alpha, _ = render_views(g, orbit_camera(azimuth, elevation, 1.5)[None].astype(np.float32),
                                 k[None].astype(np.float32), SIZE)
    pose = search_pose(g, rgb[0], alpha[0], distance=1.5)
    assert abs((pose.azimuth - azimuth + 180) % 360 - 180) <= 10 and abs(pose.elevation - elevation) <= 10
    assert pose.iou > 0.8
    _, seen, _ = render_views(g, pose.viewmat[None], pose.K[None], SIZE)
    truth, found = alpha[0] >= 0.5, seen[0] >= 0.5
    assert (truth & found).sum() / (truth | found).sum() > 0.75           # the object lands on the cutout
    assert np.allclose(bbox(found), bbox(truth), atol=4)


def test_an_empty_cutout_is_refused():
    with pytest.raises(ValueError, match="alpha is empty"):
        search_pose(coloured_box(100), np.ones((32, 32, 3), np.float32), np.zeros((32, 32), np.float32), 1.5)
