"""The learned segmentation backend `rembg`: an IS-Net (DIS) matte from a local .onnx file.

rembg runs the model (onnxruntime; CUDA when onnxruntime-gpu is installed) through its
`dis_custom` session, so any IS-Net export works: rembg's `isnet-general-use.onnx`, or the
IS-Net that `@imgly/background-removal-data` ships. rembg is imported here, lazily: its first
import compiles numba code for about a minute.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image


@contextmanager
def _rembg_home(folder: Path) -> Iterator[None]:
    """Point U2NET_HOME at `folder` while a session opens: rembg refuses a model outside its home folder."""
    old = os.environ.get("U2NET_HOME")
    os.environ["U2NET_HOME"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("U2NET_HOME", None)
        else:
            os.environ["U2NET_HOME"] = old


class RembgMatter:
    """Foreground mattes from an IS-Net .onnx file.

    Example:
        >>> matter = RembgMatter(Path("~/.u2net/isnet-general-use.onnx").expanduser())   # doctest: +SKIP
        >>> alpha = matter.matte(rgb)                   # [H,W] float32 0..1               # doctest: +SKIP
    """

    def __init__(self, model_path: Path) -> None:
        from rembg import new_session

        path = Path(model_path).expanduser().resolve()
        with _rembg_home(path.parent):
            self._session = new_session("dis_custom", model_path=str(path))
        self.model_path = path

    def matte(self, rgb8: np.ndarray) -> np.ndarray:
        """[H,W] float32 0..1 foreground matte of an [H,W,3] uint8 photo."""
        from rembg import remove

        mask = remove(Image.fromarray(rgb8), session=self._session, only_mask=True)
        return np.asarray(mask, np.float32) / 255.0
