"""The `multiview` stage: cutout -> 16 views on SyncDreamer's ring, with their cameras, and the input view.

Backends (`backends.py`):
* `relief` (embedded): a closed relief of Gaussians built from the cutout (`relief.relief_object`),
  rendered from the 16 ring cameras; the relief itself is passed on, so `reconstruct` can start from it.
* `syncdreamer` (learned): SyncDreamer's 16 views (`ai_modules.sync_dreamer`) on the checkpoint's cameras.
* `trellis` (learned, `trellis.py`): TRELLIS-image-large's 3D Gaussians, turned so the photo is at azimuth 0,
  rendered from the 16 ring cameras; the object is passed on like the relief.

Every way the photo is passed on as the input view, with the camera it was taken from (azimuth 0,
`input_elevation`; for `trellis` the elevation and framing found for it): it is the best view there is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from ..base import Stage, check_array
from ..errors import FormatError
from ..fileio import write_json
from ..gaussians import Gaussians
from ..imageio import load_rgba, save_png

@dataclass
class MultiviewInputs:
    """The cutout.

    Attributes:
        image: [S,S,3] float32 0..1 on white.
        alpha: [S,S] float32 0..1.
    """

    image: np.ndarray
    alpha: np.ndarray


@dataclass
class Views:
    """Posed views of the object on white.

    Attributes:
        images: [V,H,W,3] float32 0..1, composited on white.
        alphas: [V,H,W] float32 0..1.
        viewmats: [V,4,4] world-to-camera (OpenCV axes); Ks: [V,3,3] pixels.
    """

    images: np.ndarray
    alphas: np.ndarray
    viewmats: np.ndarray
    Ks: np.ndarray  # noqa: N815 - gsplat's name

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class MultiviewOutputs:
    """The ring views, the input view and, from `relief` and `trellis`, the object they were rendered from.

    Attributes:
        ring: the 16 views on SyncDreamer's ring (`cameras.SYNCDREAMER_RING`), with the cameras they were made with.
        input: the photo's cutout as one view with its own camera.
        gaussians: the object (world frame) from `relief` or `trellis`, or None for a generator of views only.
        metrics: numbers for the stage record.
    """

    ring: Views
    input: Views
    gaussians: Gaussians | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class MultiviewStage(Stage):
    """Produce the views the reconstruction fits (module docstring)."""

    name: ClassVar[str] = "multiview"
    cameras_file: ClassVar[str] = "cameras.json"
    object_file: ClassVar[str] = "object.ply"

    def check_inputs(self, inputs: MultiviewInputs) -> None:
        """Raise ValueError unless image [S,S,3] and alpha [S,S] float32 agree."""
        check_array("image", inputs.image, 3, np.float32, channels=3)
        check_array("alpha", inputs.alpha, 2, np.float32)
        if inputs.alpha.shape != inputs.image.shape[:2] or inputs.image.shape[0] != inputs.image.shape[1]:
            raise ValueError(f"`image` and `alpha` must be square and agree, got {list(inputs.image.shape)} and "
                             f"{list(inputs.alpha.shape)}")

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> MultiviewInputs:
        """The segment stage's cutout."""
        return MultiviewInputs(outputs["segment"].image, outputs["segment"].alpha)

    def save(self, outputs: MultiviewOutputs, directory: Path) -> dict[str, str]:
        """Write ``view_00.png`` ... (RGBA), ``input.png``, ``cameras.json`` and, from `relief` and `trellis`, the
        object as ``object.ply``."""
        d = Path(directory)
        written = {}
        for i, (image, alpha) in enumerate(zip(outputs.ring.images, outputs.ring.alphas)):
            written[f"view_{i:02d}"] = f"view_{i:02d}.png"
            save_png(d / written[f"view_{i:02d}"], np.concatenate([image, alpha[..., None]], axis=-1))
        save_png(d / "input.png", np.concatenate([outputs.input.images[0], outputs.input.alphas[0][..., None]], -1))
        written["input"] = "input.png"
        cameras = {"ring": _cameras(outputs.ring), "input": _cameras(outputs.input)}
        write_json(d / self.cameras_file, cameras)
        written["cameras"] = self.cameras_file
        if outputs.gaussians is not None:
            outputs.gaussians.save_ply(d / self.object_file)
            written["object"] = self.object_file
        return written

    def load_outputs(self, directory: Path) -> MultiviewOutputs:
        """Read the views, cameras and object back.

        Raises:
            FormatError: a missing or malformed file.
        """
        d = Path(directory)
        try:
            cameras = json.loads((d / self.cameras_file).read_text())
        except (OSError, ValueError) as exc:
            raise FormatError(f"{d / self.cameras_file}: unreadable ({exc})") from exc
        ring = _load_views(d, [f"view_{i:02d}.png" for i in range(len(cameras["ring"]["viewmats"]))], cameras["ring"])
        photo = _load_views(d, ["input.png"], cameras["input"])
        obj = Gaussians.load_ply(d / self.object_file) if (d / self.object_file).is_file() else None
        return MultiviewOutputs(ring, photo, obj)


def foreground_from_white(images: np.ndarray, threshold: float = 0.04) -> np.ndarray:
    """Alpha [V,H,W] of objects generated on white: 1 where any channel is darker than white by `threshold`,
    softened over one pixel (generators give no alpha)."""

    hard = ((1.0 - images).max(axis=-1) > threshold).astype(np.float32)
    return np.stack([cv2.GaussianBlur(a, (3, 3), 0.5) for a in hard]).clip(0, 1)


def _cameras(views: Views) -> dict[str, Any]:
    return {"viewmats": views.viewmats.tolist(),
            "Ks": views.Ks.tolist(), "width": int(views.images.shape[2]), "height": int(views.images.shape[1])}


def _load_views(d: Path, names: list[str], cameras: dict[str, Any]) -> Views:
    images, alphas = zip(*(load_rgba(d / name) for name in names))
    try:
        viewmats = np.asarray(cameras["viewmats"], np.float32).reshape(len(names), 4, 4)
        ks = np.asarray(cameras["Ks"], np.float32).reshape(len(names), 3, 3)
    except (KeyError, ValueError) as exc:
        raise FormatError(f"{d}: cameras.json does not match the views ({exc})") from exc
    return Views(np.stack(images), np.stack(alphas), viewmats, ks)
