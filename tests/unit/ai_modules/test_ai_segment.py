"""The segment stage: colour model + GrabCut, the alpha path, centring, and NoObjectFound."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from ai_modules.errors import InputError, NoObjectFound
from ai_modules.segment import SegmentInputs, SegmentStage
from ai_modules.segment import functional as F
from ai_modules.settings import SegmentSettings


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return ys.min(), ys.max() + 1, xs.min(), xs.max() + 1


def test_colour_model_finds_the_disc(make_disc):
    rgb, truth = make_disc(size=240, centre=(100, 130), radius=60)
    alpha, metrics = F.colour_segment(rgb, SegmentSettings())
    assert alpha.shape == truth.shape and alpha.dtype == np.float32
    assert iou(alpha >= 0.5, truth) >= 0.95
    assert metrics["background_spread"] < 1.0


def test_background_coloured_hole_stays_open_and_a_small_hole_is_filled(make_disc):
    rgb, outer = make_disc(size=200, centre=(100, 100), radius=70)
    yy, xx = np.mgrid[:200, :200]
    ring_hole = (xx - 100) ** 2 + (yy - 100) ** 2 < 30 ** 2          # see-through: background colour
    speck = (np.abs(xx - 55) < 3) & (np.abs(yy - 100) < 3)           # a tiny highlight inside the object
    rgb[ring_hole] = 128
    rgb[speck] = 250
    alpha, _ = F.colour_segment(rgb, SegmentSettings())
    assert alpha[100, 100] < 0.5
    assert alpha[100, 55] >= 0.5
    assert iou(alpha >= 0.5, outer & ~ring_hole) >= 0.95


def test_stage_output_is_centred_and_scaled(disc_png):
    out = SegmentStage(SegmentSettings()).run(SegmentInputs(path=disc_png))
    assert out.image.shape == (256, 256, 3) and out.alpha.shape == (256, 256)
    assert out.image.dtype == np.float32 and out.alpha.dtype == np.float32
    y0, y1, x0, x1 = bbox(out.alpha >= 0.5)
    assert abs(max(y1 - y0, x1 - x0) - 200) <= 2
    assert abs((y0 + y1) / 2 - 128) <= 1.5 and abs((x0 + x1) / 2 - 128) <= 1.5
    assert np.allclose(out.image[0, 0], 1.0) and out.alpha[0, 0] == 0.0        # white, transparent corners
    assert np.allclose(out.image[128, 128], np.array([220, 30, 30]) / 255, atol=0.02)
    assert out.metrics["mask_source"] == "border_colour_grabcut"
    assert 0.15 < out.metrics["mask_area_fraction"] < 0.25


def test_alpha_channel_is_used_when_meaningful(tmp_path):
    rgba = np.zeros((120, 160, 4), np.uint8)
    rgba[..., :3] = (10, 200, 10)                                       # same colour everywhere: only alpha tells
    rgba[30:90, 40:80, 3] = 255
    path = tmp_path / "cut.png"
    Image.fromarray(rgba).save(path)
    out = SegmentStage(SegmentSettings(size=128, object_size=100)).run(SegmentInputs(path=path))
    assert out.metrics["mask_source"] == "alpha"
    y0, y1, x0, x1 = bbox(out.alpha >= 0.5)
    assert abs((y1 - y0) - 100) <= 1 and abs((x1 - x0) - 67) <= 1            # 60x40 scaled by 100/60
    assert np.allclose(out.image[64, 64], np.array([10, 200, 10]) / 255, atol=0.01)


@pytest.mark.parametrize("mode", ["L", "LA", "P"])
def test_other_image_modes_load(tmp_path, mode, make_disc):
    rgb, _ = make_disc(size=120, centre=(60, 60), radius=30)
    im = Image.fromarray(rgb)
    im = im.convert("LA") if mode == "LA" else im.convert(mode)
    path = tmp_path / f"img_{mode}.png"
    im.save(path)
    out = SegmentStage(SegmentSettings(size=64, object_size=48)).run(SegmentInputs(path=path))
    assert out.alpha.max() == 1.0


def test_single_colour_image_raises_no_object(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.full((80, 100, 3), 77, np.uint8)).save(path)
    with pytest.raises(NoObjectFound, match="one colour") as info:
        SegmentStage(SegmentSettings()).run(SegmentInputs(path=path))
    assert isinstance(info.value, InputError) and "background" in info.value.hint


def test_tiny_object_and_full_frame_alpha_raise(make_disc):
    rgb, _ = make_disc(size=200, centre=(100, 100), radius=4)            # 0.13% of the frame
    with pytest.raises(NoObjectFound, match="at least"):
        SegmentStage(SegmentSettings()).run(SegmentInputs(rgb=rgb))
    rgb = np.full((100, 100, 3), 50, np.uint8)
    alpha = np.full((100, 100), 255, np.uint8)
    alpha[:, :1] = 0                                                      # 1% transparent: the object fills 99%
    with pytest.raises(NoObjectFound, match="at most"):
        SegmentStage(SegmentSettings()).run(SegmentInputs(rgb=rgb, alpha=alpha))
    alpha[:, :1] = 255
    alpha[:2, :2] = 0                                                     # 0.04% transparent: alpha ignored ...
    with pytest.raises(NoObjectFound, match="one colour"):                # ... and the colour path finds nothing
        SegmentStage(SegmentSettings()).run(SegmentInputs(rgb=rgb, alpha=alpha))


def test_bad_inputs_are_rejected(tmp_path):
    stage = SegmentStage(SegmentSettings())
    with pytest.raises(InputError, match="existing image file"):
        stage.run(SegmentInputs(path=tmp_path / "missing.png"))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read"):
        stage.run(SegmentInputs(path=tmp_path / "junk.png"))
    with pytest.raises(ValueError, match="`rgb` must be"):
        stage.run(SegmentInputs(rgb=np.zeros((10, 10), np.uint8)))


def test_save_and_load_outputs_agree(tmp_path, disc_png):
    stage = SegmentStage(SegmentSettings(size=96, object_size=72))
    out = stage.run(SegmentInputs(path=disc_png))
    assert stage.save(out, tmp_path) == {"cutout": "cutout.png"}
    back = stage.load_outputs(tmp_path)
    assert np.array_equal(back.image, out.image) and np.array_equal(back.alpha, out.alpha)


def test_a_real_photo_segments_plausibly():
    data = pytest.importorskip("skimage.data")
    photo = data.coffee()                                                 # a cup on a saucer on a wooden table
    soft, _ = F.colour_segment(photo, SegmentSettings())
    assert 0.3 < float((soft >= 0.5).mean()) < 0.7
    assert soft[150, 290] >= 0.5 and soft[300, 250] >= 0.5                # the coffee and the saucer
    assert soft[20, 580] < 0.5 and soft[380, 20] < 0.5                    # the table
    _, alpha = F.centre_and_scale(photo, soft, 256, 200)
    y0, y1, x0, x1 = bbox(alpha >= 0.5)
    assert abs(max(y1 - y0, x1 - x0) - 200) <= 2
