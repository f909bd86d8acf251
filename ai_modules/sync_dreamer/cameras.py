"""The 16 target cameras of SyncDreamer and the projection helpers its volumes use.

The original reads them from `meta_info/camera-16.pkl`; here they are rebuilt in code from
`ai_modules.cameras.SYNCDREAMER_RING` (elevation 30 deg, azimuth 22.5 deg * i, distance 1.5, fx = fy = 280 at 256 px)
so that a model can be built without any file. They only seed the model's buffers: loading a
checkpoint overwrites `poses`, `Ks` and `azimuth` with the pickle's exact values (which differ
from these by ~1e-7).

Conventions (SYNCDREAMER_SPEC.md section 3): `poses` are world-to-camera [R|t], OpenCV axes, world z-up.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..cameras import SYNCDREAMER_RING


def camera16() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's camera buffers, built in code.

    Returns:
        poses: [16,3,4] float32 world-to-camera.
        Ks: [16,3,3] float32 intrinsics for 256x256 images.
        azimuth: [16] float32 radians, wrapped into [-pi, pi) as the original's buffer.
    """
    ring = SYNCDREAMER_RING
    azimuths_deg = list(ring.azimuths)
    viewmats, ks = ring.cameras()
    poses = torch.tensor(viewmats[:, :3, :4], dtype=torch.float32)
    az = np.asarray([math.radians(a) for a in azimuths_deg], np.float32)
    az = (az + np.pi) % (2 * np.pi) - np.pi
    return poses, torch.tensor(ks, dtype=torch.float32), torch.tensor(az, dtype=torch.float32)


def projection_matrices(ks: torch.Tensor, poses: torch.Tensor, ratio: float) -> torch.Tensor:
    """`diag(ratio, ratio, 1) @ K @ [R|t]` padded with a last row (0,0,0,1), as the original builds it.

    Args:
        ks: [B,3,3]; poses: [B,3,4]; ratio: feature size / 256.

    Returns:
        [B,4,4] float32.
    """
    scale = torch.diag(torch.tensor([ratio, ratio, 1.0], dtype=torch.float32, device=ks.device))
    prj = scale[None] @ ks @ poses
    pad = torch.zeros(prj.shape[0], 1, 4, dtype=torch.float32, device=ks.device)
    pad[:, :, 3] = 1.0
    return torch.cat([prj, pad], 1)


def world_to_camera_4x4(poses: torch.Tensor) -> torch.Tensor:
    """[N,3,4] world-to-camera -> [N,4,4] (the `viewmats` layout the rest of the pipeline takes)."""
    bottom = torch.zeros(poses.shape[0], 1, 4, dtype=poses.dtype, device=poses.device)
    bottom[:, 0, 3] = 1.0
    return torch.cat([poses, bottom], 1)
