"""benchmarks/bench_refine.py: its stand-in enhanced views are what its docstring says they are."""

from __future__ import annotations

import cv2
import numpy as np

from benchmarks.bench_refine import degrade_for_fit, degraded_truth, inconsistent, parse_variants


def views(count: int = 2, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A checkerboard disc on white: (images [V,S,S,3], alphas [V,S,S])."""
    ys, xs = np.mgrid[0:size, 0:size]
    alpha = (((xs - size / 2) ** 2 + (ys - size / 2) ** 2) < (size / 3) ** 2).astype(np.float32)
    board = (((xs // 4) + (ys // 4)) % 2).astype(np.float32)[..., None] * np.array([0.8, 0.3, 0.2], np.float32)
    image = alpha[..., None] * (0.1 + board) + (1 - alpha[..., None])
    return np.repeat(image[None], count, 0).astype(np.float32), np.repeat(alpha[None], count, 0)


def test_the_coarse_fit_views_lose_their_detail_and_stay_white_outside():
    images, alphas = views()
    out = degrade_for_fit(images, alphas, np.random.default_rng(0))
    inside = alphas[0] > 0.99
    assert out.shape == images.shape and np.allclose(out[:, alphas[0] == 0], 1.0, atol=1e-6)
    detail = lambda x: float(np.abs(cv2.Laplacian(x, cv2.CV_32F))[inside].mean())  # noqa: E731
    assert detail(out[0]) < 0.4 * detail(images[0])


def test_degraded_truth_shifts_each_views_colours_a_little_and_differently():
    images, alphas = views()
    out = degraded_truth(images, alphas, np.random.default_rng(0))
    inside = alphas[0] > 0.99
    means = [out[i][inside].mean(0) - images[i][inside].mean(0) for i in range(2)]
    assert all(np.abs(m).max() < 0.06 for m in means) and not np.allclose(means[0], means[1], atol=1e-3)


def test_inconsistent_views_invent_a_different_texture_per_view_and_shift_by_pixels():
    images, alphas = views()
    out = inconsistent(images, alphas, np.random.default_rng(0))
    inside = alphas[0] > 0.99
    change = out - images
    assert 0.05 < float(change[0][inside].std()) < 0.3
    assert float(np.abs(out[0] - out[1])[inside].mean()) > 0.05             # the two views disagree


def test_variants_parse_into_settings_sections():
    assert parse_variants("") == {"default": {}}
    assert parse_variants("a:refine.prior=0,refine.rounds=4;b:") == {
        "a": {"refine": {"prior": "0", "rounds": "4"}}, "b": {}}
