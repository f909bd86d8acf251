"""The `enhance` stage: renders of the fitted Gaussians from the ring cameras -> enhanced views for `refine`.

The cameras are those the multiview stage returned with its views. Backends (`backends.py`):
* `classical` (embedded): colour matching to the photo and an unsharp mask (`classical.py`).
* `sdxl_lightning` (learned): depth-guided SDXL-Lightning + ControlNet (`ai_modules.diffusion`).
* `none`: no views.

Only `refine` reads enhanced views, so with `refine.backend: none` the choice `auto` is `none`
(the reason says so) rather than spend time on views nobody uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import Stage
from ..errors import FormatError
from ..fileio import atomic_path
from ..gaussians import Gaussians
from ..imageio import load_rgba, save_png
from ..multiview.stage import MultiviewOutputs, Views


@dataclass
class EnhanceInputs:
    """The fitted Gaussians and the views (for the photo and its colours)."""

    gaussians: Gaussians
    views: MultiviewOutputs


@dataclass
class EnhanceOutputs:
    """Enhanced renders on the ring cameras (None with `none`) and their rendered depth (camera z).

    Attributes:
        views: enhanced images on white, the rendered alphas, the cameras; or None.
        depths: [V,H,W] float32 camera z of the renders (0 where empty); or None.
    """

    views: Views | None = None
    depths: np.ndarray | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


class EnhanceStage(Stage):
    """Enhance renders of the fitted Gaussians (module docstring)."""

    name: ClassVar[str] = "enhance"

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> EnhanceInputs:
        """The reconstruct stage's Gaussians and the multiview stage's views (their cameras and the photo)."""
        return EnhanceInputs(outputs["reconstruct"].gaussians, outputs["multiview"])

    def check_inputs(self, inputs: EnhanceInputs) -> None:
        """Raise ValueError unless Gaussians and the multiview outputs are given."""
        if not isinstance(inputs.gaussians, Gaussians) or not isinstance(inputs.views, MultiviewOutputs):
            raise ValueError("`inputs` must hold the fitted Gaussians and the multiview stage's outputs")

    def skip(self, inputs: EnhanceInputs) -> EnhanceOutputs:
        """`none`: no views."""
        return EnhanceOutputs(metrics={"views": 0})

    def save(self, outputs: EnhanceOutputs, directory: Path) -> dict[str, str]:
        """Write ``view_00.png`` ... (RGBA) and ``views.npz`` (cameras and depths); nothing for `none`."""
        if outputs.views is None:
            return {}
        d = Path(directory)
        written = {}
        for i, (image, alpha) in enumerate(zip(outputs.views.images, outputs.views.alphas)):
            written[f"view_{i:02d}"] = f"view_{i:02d}.png"
            save_png(d / written[f"view_{i:02d}"], np.concatenate([image, alpha[..., None]], axis=-1))
        with atomic_path(d / "views.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, viewmats=outputs.views.viewmats, Ks=outputs.views.Ks, depths=outputs.depths)
        written["cameras"] = "views.npz"
        return written

    def load_outputs(self, directory: Path) -> EnhanceOutputs:
        """Read the enhanced views back (empty outputs when none were written).

        Raises:
            FormatError: a missing or malformed file.
        """
        d = Path(directory)
        if not (d / "views.npz").is_file():
            return EnhanceOutputs()
        try:
            with np.load(d / "views.npz") as data:
                viewmats, ks, depths = data["viewmats"], data["Ks"], data["depths"]
        except (OSError, ValueError, KeyError) as exc:
            raise FormatError(f"{d / 'views.npz'}: unreadable ({exc})") from exc
        images, alphas = zip(*(load_rgba(d / f"view_{i:02d}.png") for i in range(len(viewmats))))
        return EnhanceOutputs(Views(np.stack(images), np.stack(alphas), viewmats, ks), depths)
