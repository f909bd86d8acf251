"""The `segment` stage: photo -> centred square RGBA cutout on white."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import Stage, check_array
from ..errors import InputError
from ..fileio import map_files
from ..imageio import load_rgba, save_png


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
    colours + GrabCut (`alpha_grabcut`) (`backends.py`).

    Example:
        >>> stage = SegmentStage(SegmentSettings())
        >>> out = stage.run(SegmentInputs(path=Path("mug.jpg")))   # doctest: +SKIP
        >>> out.image.shape, out.alpha.shape                       # doctest: +SKIP
        ((256, 256, 3), (256, 256))
    """

    name: ClassVar[str] = "segment"
    artifact: ClassVar[str] = "cutout.png"

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

    @classmethod
    def make_inputs(cls, input_path: Path, outputs: dict[str, Any]) -> SegmentInputs:
        """The photo's path."""
        return SegmentInputs(path=input_path)

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
