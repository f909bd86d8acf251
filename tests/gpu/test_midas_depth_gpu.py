"""midas_depth on CUDA: the fp16 model against the fp32 CPU model on tiny random-weight DPT snapshots.

Run with `python -m pytest tests/gpu/test_midas_depth_gpu.py -m gpu`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ai_modules.midas_depth import (
    DepthEstimator,
    clear_cache,
    estimate_depth,
    estimate_depth_confidence,
)
from tests.tiny_models import tiny_dpt, tiny_processor

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

SIZE = 64


@pytest.fixture(scope="module", params=[False, True], ids=["vit", "hybrid"])
def models_dir(request, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hybrid" if request.param else "vit")
    snapshot = root / "depth" / "dpt-hybrid-midas"
    tiny_dpt(0, hybrid=request.param, size=SIZE, reassemble=(4, 2, 1, 0.5)).save_pretrained(snapshot)
    tiny_processor(SIZE).save_pretrained(snapshot)
    return root


@pytest.fixture(autouse=True)
def _fresh_cache():
    clear_cache()
    yield
    clear_cache()


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = (rng.random((4, 5, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC)).copy()


def test_fp16_on_cuda_is_close_to_fp32_on_cpu(models_dir):
    image = photo(90, 120, 0)
    est = DepthEstimator(models_dir, device="cuda")
    assert est.dtype == torch.float16
    assert {(p.device.type, p.dtype) for p in est.model.parameters()} == {("cuda", torch.float16)}
    on_gpu = estimate_depth(image, models_dir=models_dir, device="cuda")
    on_cpu = estimate_depth(image, models_dir=models_dir, device="cpu")
    assert on_gpu.dtype == np.float32 and on_gpu.shape == (90, 120)
    span = float(np.ptp(on_cpu))
    assert span > 1e-3
    err = np.abs(on_gpu - on_cpu)
    print(f"fp16 vs fp32: max {err.max() / span:.2e}, mean {err.mean() / span:.2e} of the span {span:.3f}")
    assert err.max() <= 2e-2 * span and err.mean() <= 3e-3 * span


def test_batches_and_confidence_on_cuda(models_dir):
    images = [photo(90, 120, 1), photo(64, 64, 2), photo(40, 100, 3)]
    est = DepthEstimator(models_dir, device="cuda", batch_size=2)
    batched = est.predict(images)
    for image, depth in zip(images, batched):
        single = est.predict(image)
        assert np.abs(depth - single).max() <= 1e-2 * max(float(np.ptp(single)), 1e-6)
    mask = np.zeros((90, 120), bool)
    mask[20:70, 30:90] = True
    conf_gpu = estimate_depth_confidence(images[0], mask=mask, models_dir=models_dir, device="cuda")
    conf_cpu = estimate_depth_confidence(images[0], mask=mask, models_dir=models_dir, device="cpu")
    assert conf_gpu.dtype == np.float32 and (conf_gpu[~mask] == 0).all()
    assert np.abs(conf_gpu - conf_cpu).mean() < 0.02
