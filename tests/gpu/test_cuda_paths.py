"""CUDA paths of the daemon: gsplat's rasterizer as `doctor` checks it, and the pipeline on a GPU worker."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _extensions_dir(tmp_path_factory):
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp() / "torch_extensions"))


def test_doctor_compiles_and_runs_gsplat():
    from glimpsed.doctor import _gsplat_compiles

    check = _gsplat_compiles()
    assert check.status == "ok", check.detail


def test_pipeline_runs_on_the_gpu_worker_device(tmp_path):
    from glimpsed.batch import submit
    from glimpsed.config import load_config

    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir()
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.full((240, 320, 3), 205, np.uint8)
    img[((xx - 160) / 70) ** 2 + ((yy - 120) / 90) ** 2 <= 1] = (200, 90, 40)
    Image.fromarray(img).save(tmp_path / "disc.png")
    config = load_config(None, env={}, overrides={"paths.root": str(tmp_path), "worker.devices": "cuda:0"})
    ((_, taken, job),) = submit(config, [tmp_path / "disc.png"], "gpu-test")
    assert job is not None and job.state == "done", (taken, job)
    manifest = json.loads((tmp_path / "outbox" / "disc" / "manifest.json").read_text())
    assert manifest["device"] == "cuda:0"


def test_fit_densifies_with_gsplat_on_cuda():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ai_modules.reconstruct import FitPreset, fit
    from tests.scenes import dataset

    data = {k: torch.from_numpy(v).float() for k, v in dataset(size=96, train=8).items()}
    preset = FitPreset(iterations=300, sh_degree=1, densify="default", init_points=3000)
    g, metrics = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], depths=data["depths"],
                     preset=preset, device="cuda")
    assert g.means.is_cuda and metrics["densify"] == "default"
    assert g.num != 3000 and metrics["train_psnr"] > 22, metrics


def test_fit_with_mcmc_relocates_and_grows_toward_its_cap_on_cuda():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ai_modules.reconstruct import FitPreset, fit
    from tests.scenes import dataset

    data = {k: torch.from_numpy(v).float() for k, v in dataset(size=96, train=8).items()}
    preset = FitPreset(iterations=400, sh_degree=1, densify="mcmc", init_points=3000, max_gaussians=6000)
    g, metrics = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"], depths=data["depths"],
                     preset=preset, device="cuda")
    assert g.means.is_cuda and metrics["densify"] == "mcmc"
    assert 3000 < g.num <= 6000 and metrics["train_psnr"] > 22, metrics


def test_tsdf_fuses_the_same_on_cuda_as_on_the_cpu():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from ai_modules.export.tsdf import fuse_tsdf
    from tests.unit.ai_modules.test_ai_mesh import ring_views

    views = ring_views("sphere", size=128)
    cpu = fuse_tsdf(*views, voxels=64)
    cuda = fuse_tsdf(*views, voxels=64, device="cuda")
    # Only voxels whose projection falls within float rounding of a pixel edge may differ.
    assert np.mean(np.abs(cpu[0] - cuda[0]) < 1e-4) > 0.999 and np.mean(np.abs(cpu[1] - cuda[1]) < 1e-3) > 0.999
