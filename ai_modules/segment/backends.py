"""The `segment` stage's backends: a soft matte of the photo's object.

Both share `SegmentBackend.run` (read the photo, use its own alpha when meaningful, else the backend's
`matte`, then check, centre and scale); they differ only in `matte`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..base import NO_HOOKS, Backend, StageHooks
from . import functional as F
from .stage import SegmentInputs, SegmentOutputs


class SegmentBackend(Backend):
    """Photo -> centred square cutout; subclasses give the matte."""

    source = ""

    def matte(self, rgb: np.ndarray, hooks: StageHooks) -> tuple[np.ndarray, dict[str, Any]]:  # pragma: no cover
        """[H,W] float32 0..1 matte of an [H,W,3] uint8 photo, and numbers for the record."""
        raise NotImplementedError

    def run(self, inputs: SegmentInputs, hooks: StageHooks = NO_HOOKS) -> SegmentOutputs:
        """Segment, then centre and scale into a `size` square.

        Raises:
            NoObjectFound: no object, or one that fills the frame.
            InputError: the file is not a readable image.
        """
        from ..imageio import load_image

        s = self.settings
        rgb, alpha = load_image(inputs.path) if inputs.path is not None else (inputs.rgb, inputs.alpha)
        h, w = rgb.shape[:2]
        hooks.report(0.1, f"loaded {w}x{h} image")
        if F.meaningful_alpha(alpha, s.min_area_fraction):
            soft, source, metrics = alpha.astype(np.float32) / 255.0, "alpha", {}
        else:
            (soft, metrics), source = self.matte(rgb, hooks), self.source
        fraction = F.check_object(soft, s)
        image, cut_alpha = F.centre_and_scale(rgb, soft, s.size, s.object_size)
        metrics.update({"mask_source": source, "mask_area_fraction": round(fraction, 5), "input_width": w,
                        "input_height": h})
        return SegmentOutputs(F.quantize8(image), F.quantize8(cut_alpha), metrics)


class AlphaGrabcut(SegmentBackend):
    """Embedded: background colours sampled along the border, refined by GrabCut."""

    source = "border_colour_grabcut"

    def matte(self, rgb: np.ndarray, hooks: StageHooks) -> tuple[np.ndarray, dict[str, Any]]:
        """The colour model's matte (`functional.colour_segment`)."""
        hooks.report(0.2, "estimating the background from the border")
        return F.colour_segment(rgb, self.settings)


class Rembg(SegmentBackend):
    """Learned: an IS-Net matte through rembg (the session is the cached model)."""

    source = "rembg"

    def load_model(self) -> Any:
        """Open the IS-Net session on the .onnx file."""
        from .rembg_matte import RembgMatter

        (model,) = self.require_models()
        return RembgMatter(model.path)

    def precision(self) -> str:
        """onnxruntime runs the file as it is."""
        return "onnx"

    def matte(self, rgb: np.ndarray, hooks: StageHooks) -> tuple[np.ndarray, dict[str, Any]]:
        """The largest part of the IS-Net matte."""
        hooks.report(0.2, "IS-Net matte (rembg)")
        return F.largest_component(self.model.matte(rgb)), {}
