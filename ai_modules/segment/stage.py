"""The `segment` stage: photo -> centred square RGBA cutout on white."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import NO_HOOKS, Stage, StageHooks, check_array
from ..errors import InputError
from ..fileio import map_files
from ..imageio import load_image, load_rgba, save_png
from ..settings import SegmentSettings
from . import functional as F


@dataclass
class SegmentInputs:
    """Either a file or arrays.

    Attributes:
        path: a PNG/JPEG on local disk, or None when `rgb` is given.
        rgb: [H,W,3] uint8, used when `path` is None.
        alpha: [H,W] uint8 or None, used when `path` is None.
    """

    path: Path | None = None
    rgb: np.ndarray | None = None
    alpha: np.ndarray | None = None


@dataclass
class SegmentOutputs:
    """The cutout.

    Attributes:
        image: [S,S,3] float32 0..1, the object composited on white (8-bit grid).
        alpha: [S,S] float32 0..1 (8-bit grid).
        metrics: numbers for the stage record.
    """

    image: np.ndarray
    alpha: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)


class SegmentStage(Stage):
    """Cut the object out: the input's alpha if meaningful, else an IS-Net matte (`rembg`) or border
    colours + GrabCut (`alpha_grabcut`).

    Example:
        >>> stage = SegmentStage(SegmentSettings())
        >>> out = stage.run(SegmentInputs(path=Path("mug.jpg")))   # doctest: +SKIP
        >>> out.image.shape, out.alpha.shape                       # doctest: +SKIP
        ((256, 256, 3), (256, 256))
    """

    name: ClassVar[str] = "segment"
    artifact: ClassVar[str] = "cutout.png"

    def __init__(self, settings: SegmentSettings, models_dir: Path | None = None) -> None:
        super().__init__(settings, models_dir)
        self._matter: Any = None

    def load(self, device: str) -> None:
        """Open the IS-Net session for the `rembg` backend (raises ModelNotAvailable when its file is missing)."""
        super().load(device)
        if self.backend == "rembg":
            (model,) = self.require_models()
            from .rembg_matte import RembgMatter

            self._matter = RembgMatter(model.path)

    def unload(self) -> None:
        """Close the IS-Net session."""
        self._matter = None

    def check_inputs(self, inputs: SegmentInputs) -> None:
        """Raise ValueError/InputError unless exactly one of a readable path or arrays is given."""
        if (inputs.path is None) == (inputs.rgb is None):
            raise ValueError("give exactly one of `path` and `rgb`")
        if inputs.path is not None and not Path(inputs.path).is_file():
            raise InputError(f"`path` must be an existing image file, got {str(inputs.path)!r}")
        if inputs.rgb is not None:
            check_array("rgb", inputs.rgb, 3, np.uint8, channels=3)
            if inputs.alpha is not None:
                check_array("alpha", inputs.alpha, 2, np.uint8)
                if inputs.alpha.shape != inputs.rgb.shape[:2]:
                    raise ValueError(f"`alpha` must be {list(inputs.rgb.shape[:2])}, got {list(inputs.alpha.shape)}")

    def run(self, inputs: SegmentInputs, hooks: StageHooks = NO_HOOKS) -> SegmentOutputs:
        """Segment, then centre and scale into a `size` square.

        Raises:
            NoObjectFound: no object, or one that fills the frame.
            InputError: the file is not a readable image.
        """
        self.check_inputs(inputs)
        s = self.settings
        rgb, alpha = load_image(inputs.path) if inputs.path is not None else (inputs.rgb, inputs.alpha)
        h, w = rgb.shape[:2]
        hooks.report(0.1, f"loaded {w}x{h} image")
        if F.meaningful_alpha(alpha, s.min_area_fraction):
            soft, source, metrics = alpha.astype(np.float32) / 255.0, "alpha", {}
        elif self.backend == "rembg":
            if self._matter is None:
                self.load(self.device)
            hooks.report(0.2, "IS-Net matte (rembg)")
            soft, source, metrics = F.largest_component(self._matter.matte(rgb)), "rembg", {}
        else:
            hooks.report(0.2, "estimating the background from the border")
            soft, metrics = F.colour_segment(rgb, s)
            source = "border_colour_grabcut"
        fraction = F.check_object(soft, s)
        image, cut_alpha = F.centre_and_scale(rgb, soft, s.size, s.object_size)
        metrics.update({"mask_source": source, "mask_area_fraction": round(fraction, 5), "input_width": w,
                        "input_height": h})
        return SegmentOutputs(F.quantize8(image), F.quantize8(cut_alpha), metrics)

    def save(self, outputs: SegmentOutputs, directory: Path) -> dict[str, str]:
        """Write ``cutout.png`` (RGBA, 8 bit)."""
        rgba = np.concatenate([outputs.image, outputs.alpha[..., None]], axis=2)
        save_png(Path(directory) / self.artifact, rgba)
        return {"cutout": self.artifact}

    def load_outputs(self, directory: Path) -> SegmentOutputs:
        """Read ``cutout.png`` back.

        Raises:
            FormatError: missing or not an RGBA image.
        """
        path = map_files(Path(directory), {"cutout": self.artifact})["cutout"]
        return SegmentOutputs(*load_rgba(path))
