"""The learned segment backend `rembg` with a real IS-Net: the one `@imgly/background-removal-data` ships
(npm, installed into tools/ by `make test`; nobody here trained it), assembled from its chunks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from ai_modules.errors import ModelNotAvailable
from ai_modules.pipeline import run
from ai_modules.segment import SegmentInputs, SegmentStage
from ai_modules.segment import functional as F
from ai_modules.settings import SegmentSettings
from nodetools import tools_required

DIST = Path(__file__).resolve().parents[3] / "tools" / "node_modules" / "@imgly" / "background-removal-data" / "dist"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding the IS-Net (its 8-bit `small` export) where `glimpsed models` puts rembg's."""
    index = DIST / "resources.json"
    if not index.is_file():
        message = f"{index} is missing: `make tools` installs @imgly/background-removal-data"
        pytest.fail(message) if tools_required() else pytest.skip(message)
    entry = json.loads(index.read_text())["/models/small"]
    root = tmp_path_factory.mktemp("models")
    target = root / "u2net" / "isnet-general-use.onnx"
    target.parent.mkdir()
    with open(target, "wb") as f:
        for chunk in entry["chunks"]:
            f.write((DIST / chunk["hash"]).read_bytes())
    assert target.stat().st_size == entry["size"]
    return root


@pytest.fixture(scope="module")
def stage(models_dir: Path) -> SegmentStage:
    s = SegmentStage(SegmentSettings(), models_dir)
    s.load("cpu")                                    # the first `import rembg` compiles numba code (~1 min)
    return s


def test_auto_takes_rembg_and_cuts_out_the_whole_cat(stage: SegmentStage):
    assert stage.backend == "rembg" and stage.model_files()[0]["name"] == "isnet-general-use"
    cat = data.chelsea()                             # a close-up: the cat touches the frame
    out = stage.run(SegmentInputs(rgb=cat))
    colour, _ = F.colour_segment(cat, SegmentSettings())
    assert out.metrics["mask_source"] == "rembg"
    assert out.metrics["mask_area_fraction"] > 0.6 > 2 * float((colour >= 0.5).mean())   # border colours: a part


def test_rembg_agrees_with_grabcut_on_a_plain_background_and_keeps_one_object(stage: SegmentStage):
    cup = data.coffee()
    matte = stage.impl.model.matte(cup)             # the backend's cached IS-Net session
    colour, _ = F.colour_segment(cup, SegmentSettings())
    a, b = F.largest_component(matte) >= 0.5, colour >= 0.5
    assert float((a & b).sum() / (a | b).sum()) > 0.85
    specks = matte.copy()
    specks[:5, :5] = 1.0                                                   # a stray blob in a corner
    assert not F.largest_component(specks)[:5, :5].any()


def test_a_photos_own_alpha_still_wins(stage: SegmentStage):
    rgb = np.full((120, 120, 3), 200, np.uint8)
    alpha = np.zeros((120, 120), np.uint8)
    alpha[30:90, 40:80] = 255
    assert stage.run(SegmentInputs(rgb=rgb, alpha=alpha)).metrics["mask_source"] == "alpha"


def test_the_pipeline_records_rembg_and_its_file(models_dir: Path, tmp_path: Path, small_settings: dict):
    from PIL import Image

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    result = run(tmp_path / "cat.png", small_settings, tmp_path / "work", models_dir=models_dir)
    record = next(r for r in result.stages if r.name == "segment")
    assert record.backend == "rembg" and record.metrics["mask_source"] == "rembg"
    assert record.model_files[0]["path"].endswith("isnet-general-use.onnx")


def test_asking_for_rembg_without_its_model_names_the_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))              # rembg's own folder: empty too
    stage = SegmentStage(SegmentSettings(backend="rembg"), tmp_path)
    with pytest.raises(ModelNotAvailable, match="isnet-general-use.onnx"):
        stage.load("cpu")


def test_pulled_from_a_server_verified_and_loaded(models_dir: Path, tmp_path: Path, monkeypatch):
    """`glimpsed models pull rembg` end to end: the IS-Net served over HTTP with its publisher's md5 (the table's
    line with this file's URL and md5), verified, then cut out by rembg from where the pull put it."""
    import dataclasses
    import functools
    import hashlib
    import http.server
    import threading

    from ai_modules import models
    from ai_modules.models import MODEL_BY_NAME, Source
    from glimpsed.model_pull import pull, verify

    onnx = models_dir / "u2net" / "isnet-general-use.onnx"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(onnx.parent))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{onnx.name}"
        md5 = hashlib.md5(onnx.read_bytes()).hexdigest()
        spec = dataclasses.replace(MODEL_BY_NAME["isnet-general-use"],
                                   sources=(Source("url", url, checksum=f"md5:{md5}"),))
        monkeypatch.setitem(models.MODEL_BY_NAME, spec.name, spec)
        monkeypatch.setenv("U2NET_HOME", str(tmp_path / "elsewhere"))     # only the pulled copy can be found
        (path,) = pull("rembg", tmp_path / "models")
    finally:
        httpd.shutdown()
    assert path == tmp_path / "models" / "u2net" / "isnet-general-use.onnx"
    assert [c.status for c in verify(tmp_path / "models", ["isnet-general-use"])] == ["ok"]
    stage = SegmentStage(SegmentSettings(backend="rembg"), tmp_path / "models")
    stage.load("cpu")
    assert stage.model_files()[0]["path"] == str(path)
    assert stage.run(SegmentInputs(rgb=data.chelsea())).metrics["mask_source"] == "rembg"
