"""The `enhance` stage: renders of the fitted Gaussians from the ring cameras -> enhanced views for `refine`.

Backends:
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

from ..base import NO_HOOKS, Stage, StageHooks
from ..cameras import ring_cameras
from ..errors import FormatError
from ..fileio import atomic_path
from ..gaussians import Gaussians
from ..imageio import load_rgba, save_png
from ..multiview.stage import RING_AZIMUTHS, RING_DISTANCE, RING_ELEVATION, MultiviewOutputs, Views
from ..settings import EnhanceSettings
from ..splatting import render_views
from .classical import enhance_classical


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

    def __init__(self, settings: EnhanceSettings, models_dir: Path | None = None, unused: str | None = None) -> None:
        super().__init__(settings, models_dir, unused)
        self._service: Any = None

    def load(self, device: str) -> None:
        """Load SDXL-Lightning for `sdxl_lightning` (raises ModelNotAvailable when its files are missing)."""
        super().load(device)
        if self.backend == "sdxl_lightning":
            self.require_models()
            from ..diffusion import EnhanceService

            self._service = EnhanceService(device=device, models_dir=self.models_dir,
                                           resolution=self.settings.resolution)

    def unload(self) -> None:
        """Free the diffusion pipeline's memory now (not whenever it is garbage-collected)."""
        if self._service is not None:
            self._service.unload()
        self._service = None

    def check_inputs(self, inputs: EnhanceInputs) -> None:
        """Raise ValueError unless Gaussians and the multiview outputs are given."""
        if not isinstance(inputs.gaussians, Gaussians) or not isinstance(inputs.views, MultiviewOutputs):
            raise ValueError("`inputs` must hold the fitted Gaussians and the multiview stage's outputs")

    def run(self, inputs: EnhanceInputs, hooks: StageHooks = NO_HOOKS) -> EnhanceOutputs:
        """Render the ring views, then enhance them one by one (progress and stop checks between views)."""
        self.check_inputs(inputs)
        if self.backend == "none":
            return EnhanceOutputs(metrics={"views": 0})
        size = self.settings.size
        viewmats, ks = ring_cameras(RING_AZIMUTHS, RING_ELEVATION, size, RING_DISTANCE)
        rgbs, alphas, depths = render_views(inputs.gaussians.to(self.device), viewmats, ks, size)
        rgbs, alphas = rgbs.clip(0, 1), alphas.clip(0, 1)
        depths = np.where(alphas > 0.05, depths, 0.0).astype(np.float32)
        photo = inputs.views.input
        enhanced = []
        for i, (rgb, alpha, depth) in enumerate(zip(rgbs, alphas, depths)):
            hooks.check_stop()
            hooks.report(0.1 + 0.9 * i / len(rgbs), f"view {i + 1}/{len(rgbs)}")
            if self.backend == "classical":
                enhanced.append(enhance_classical(rgb, alpha, photo.images[0], photo.alphas[0], self.settings.detail))
            else:
                enhanced.append(self._diffuse(rgb, alpha, depth))
        views = Views(np.stack(enhanced), alphas.astype(np.float32), viewmats.astype(np.float32),
                      ks.astype(np.float32))
        change = float(np.abs(views.images - rgbs).mean())
        return EnhanceOutputs(views, depths, {"views": len(enhanced), "mean_abs_change": round(change, 5)})

    def _diffuse(self, rgb: np.ndarray, alpha: np.ndarray, depth: np.ndarray) -> np.ndarray:
        from PIL import Image

        s = self.settings
        nearness = np.where(alpha > 0.05, 1.0 / np.maximum(depth, 1e-3), 0.0)   # near = bright, as ControlNet wants
        result = self._service.enhance(image=Image.fromarray(np.rint(rgb * 255).astype(np.uint8)),
                                       depth_map=nearness, prompt=s.prompt, strength=s.strength, seed=s.seed)
        out = np.asarray(result.convert("RGB"), dtype=np.float32) / 255.0
        return np.where(alpha[..., None] >= 0.5, out, rgb).astype(np.float32)

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
