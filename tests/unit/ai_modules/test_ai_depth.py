"""The depth stage: silhouette inflation and rim confidence."""

from __future__ import annotations

import numpy as np
import pytest

from ai_modules.depth import inflate, poisson_inflation, rim_confidence
from ai_modules.depth.functional import shade
from ai_modules.depth.stage import DepthStage
from ai_modules.multiview import MultiviewOutputs, Views
from ai_modules.settings import DepthSettings


def disc_mask(size: int = 128, radius: float = 40.0, centre: float = 64.0) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (xx + 0.5 - centre) ** 2 + (yy + 0.5 - centre) ** 2 < radius ** 2


def test_poisson_solution_of_a_disc_is_the_paraboloid():
    mask = disc_mask()
    u = poisson_inflation(mask)
    assert (u[mask] > 0).all() and (u[~mask] == 0).all()
    # -laplacian(u) = 1 with u = 0 just outside: u = (R^2 - r^2) / 4, R ~ 40.5 on the grid.
    assert u.max() == pytest.approx(40.5 ** 2 / 4, rel=0.03)


def test_inflated_disc_is_a_rounded_dome_with_its_top_in_the_middle():
    mask = disc_mask()
    h = inflate(mask, thickness=0.5)
    assert h.dtype == np.float32
    assert (h[mask] > 0).all() and (h[~mask] == 0).all()
    top = np.unravel_index(np.argmax(h), h.shape)
    assert abs(top[0] - 63.5) <= 1.5 and abs(top[1] - 63.5) <= 1.5
    assert h.max() == pytest.approx(0.5 * 40.5, rel=0.03)                # thickness 0.5: half-depth R/2
    assert h[64, 64 + 38] < 0.5 * h.max()                                # rounded: drops fast at the rim
    assert np.allclose(inflate(mask, 1.0), 2 * h, rtol=1e-5)


def test_shading_raises_bright_spots_lowers_dark_ones_and_leaves_the_rim():
    mask = disc_mask()
    h = inflate(mask, thickness=0.5)
    image = np.full((128, 128, 3), 0.5, np.float32)
    yy, xx = np.mgrid[:128, :128]
    image[(xx - 50) ** 2 + (yy - 64) ** 2 < 16] = 0.9                   # a bright spot left of centre
    image[(xx - 78) ** 2 + (yy - 64) ** 2 < 16] = 0.1                   # a dark one right of centre
    shaded = shade(h, image, mask, strength=0.3)
    assert shaded[64, 50] > 1.2 * h[64, 50] and shaded[64, 78] < 0.8 * h[64, 78]
    assert np.allclose(shaded[30:40, 64], h[30:40, 64], rtol=0.02)        # plain areas away from them: unchanged
    assert (shaded[~mask] == 0).all() and (shaded >= 0).all() and (shaded <= 1.3 * h + 1e-6).all()
    assert shade(h, image, mask, strength=0.0) is h
    assert np.array_equal(shade(h, np.full_like(image, 0.5), mask, strength=0.3), h)   # no shading, no change


def test_confidence_is_zero_at_the_rim_and_one_inside():
    mask = disc_mask()
    conf = rim_confidence(mask, ramp_px=8.0)
    assert conf[64, 64] == 1.0 and (conf[~mask] == 0).all()
    assert conf[64, 64 + 39] < 0.2
    assert conf.min() >= 0 and conf.max() <= 1


def test_stage_estimates_every_view_and_round_trips(tmp_path):
    mask = disc_mask()
    alpha = mask.astype(np.float32)
    image = np.ones((128, 128, 3), np.float32)
    ring = Views(np.repeat(image[None], 3, 0), np.repeat(alpha[None], 3, 0), np.repeat(np.eye(4)[None], 3, 0),
                 np.repeat(np.eye(3)[None], 3, 0))
    ring.alphas[1] = 0.0                                              # a view where nothing was generated
    photo = Views(image[None], alpha[None], np.eye(4)[None], np.eye(3)[None])
    stage = DepthStage(DepthSettings())
    assert stage.backend == "inflation"
    out = stage.run(MultiviewOutputs(ring, photo))
    assert out.depth.shape == (3, 128, 128) and out.confidence.shape == (3, 128, 128)
    assert np.array_equal(out.depth[0], inflate(mask, 0.5)) and np.array_equal(out.input_depth, out.depth[0])
    assert not out.depth[1].any() and not out.confidence[1].any()
    assert out.confidence[0][~mask].max() == 0.0 and out.confidence[0].max() == 1.0
    files = stage.save(out, tmp_path)
    assert set(files) == {"depth", "depth_preview"} and (tmp_path / "depth.png").is_file()
    back = stage.load_outputs(tmp_path)
    assert np.array_equal(back.depth, out.depth) and np.array_equal(back.input_confidence, out.input_confidence)
    with pytest.raises(ValueError, match="multiview"):
        stage.run(MultiviewOutputs(ring, Views(image[None][:0], alpha[None][:0], np.eye(4)[None][:0],
                                               np.eye(3)[None][:0])))


def test_stage_applies_shading_when_asked():
    mask = disc_mask()
    alpha = mask.astype(np.float32)
    image = np.full((128, 128, 3), 0.5, np.float32)
    image[:, 64:] = 0.8                                               # the right half is lit
    photo = Views(image[None], alpha[None], np.eye(4)[None], np.eye(3)[None])
    flat = DepthStage(DepthSettings(backend="inflation")).run(MultiviewOutputs(photo, photo))
    shaded = DepthStage(DepthSettings(backend="inflation", shading=0.3)).run(MultiviewOutputs(photo, photo))
    assert np.array_equal(flat.input_depth, inflate(mask, 0.5))
    lit, shadowed = (64, 70), (64, 58)
    assert shaded.input_depth[lit] > flat.input_depth[lit] and shaded.input_depth[shadowed] < flat.input_depth[shadowed]
