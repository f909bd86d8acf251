"""TRELLIS-image-large speed and memory: the full-size model with random weights (the published configs, so the
same FLOPs), one image, 25 + 25 sampler steps; and bf16 against fp32 on the tiny golden model.

Random weights decide nothing about which voxels are occupied, so the sparse-structure decoder runs (its cost
counts) and its output is then replaced by a shell of `--voxels` voxels, about two voxels thick, like the surface
voxels of a real object; everything after that (SLat flow over those voxels, 32 Gaussians each) costs what a real
run costs.

    python3 benchmarks/bench_trellis.py --device cuda [--dtype bf16|published|fp32] [--low-memory] [--voxels 20000]
    .venv/bin/python benchmarks/bench_trellis.py --tiny-golden      # bf16 vs fp32 on ../shared/trellis (CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ai_modules.trellis import pipeline as P  # noqa: E402
from ai_modules.trellis.conditioner import DinoV2Config, DinoV2Reg  # noqa: E402
from ai_modules.trellis.gs_decoder import PUBLISHED_CONFIG as GS_CONFIG  # noqa: E402
from ai_modules.trellis.gs_decoder import SLatGaussianDecoder  # noqa: E402
from ai_modules.trellis.slat_flow import SLatFlowModel  # noqa: E402
from ai_modules.trellis.ss_decoder import PUBLISHED_CONFIG as SS_DECODER_CONFIG  # noqa: E402
from ai_modules.trellis.ss_decoder import SparseStructureDecoder  # noqa: E402
from ai_modules.trellis.ss_flow import SparseStructureFlowModel  # noqa: E402

# The manifests' config_args (../shared/trellis/manifest_*.json), fp32 weights: the dtype is chosen per run.
SS_FLOW = {"resolution": 16, "in_channels": 8, "out_channels": 8, "model_channels": 1024, "cond_channels": 1024,
           "num_blocks": 24, "num_heads": 16, "mlp_ratio": 4, "patch_size": 1, "pe_mode": "ape", "qk_rms_norm": True}
SLAT_FLOW = {"resolution": 64, "in_channels": 8, "out_channels": 8, "model_channels": 1024, "cond_channels": 1024,
             "num_blocks": 24, "num_heads": 16, "mlp_ratio": 4, "patch_size": 2, "num_io_res_blocks": 2,
             "io_block_channels": [128], "pe_mode": "ape", "qk_rms_norm": True}


def photo(size: int = 512) -> Image.Image:
    """An RGBA cutout: a shaded ellipse with a stripe, soft alpha at its rim."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = ((xx - 0.5) / 0.3) ** 2 + ((yy - 0.52) / 0.4) ** 2
    alpha = np.clip((1.0 - r) * 20, 0, 1)
    rgb = np.stack([0.8 - 0.3 * xx, 0.4 + 0.2 * yy, 0.2 + 0.6 * (np.abs(yy - 0.5) < 0.05)], -1)
    return Image.fromarray((np.concatenate([rgb, alpha[..., None]], -1) * 255).astype(np.uint8), "RGBA")


def published_models(device: str, fp16: bool = False) -> P.TrellisModels:
    """The five networks at their published sizes with random weights (initialised on `device`); `fp16`: the
    torsos in fp16 as published (``use_fp16``), else fp32 throughout."""
    with torch.device(device):
        return P.TrellisModels(DinoV2Reg(DinoV2Config()), SparseStructureFlowModel(**SS_FLOW, use_fp16=fp16),
                               SparseStructureDecoder(**{**SS_DECODER_CONFIG, "use_fp16": fp16}),
                               SLatFlowModel(**SLAT_FLOW, use_fp16=fp16),
                               SLatGaussianDecoder(**{**GS_CONFIG, "use_fp16": fp16}))


def shell_occupancy(voxels: int) -> Callable[[torch.nn.Module, tuple, torch.Tensor], torch.Tensor]:
    """A forward hook for the SS decoder: its logits replaced by +1 on the `voxels` voxels nearest a sphere of
    0.44 of the grid (a shell about two voxels thick at 20,000 of 64^3) and -1 elsewhere."""

    def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        res = out.shape[-1]
        axis = torch.arange(res, device=out.device, dtype=torch.float32) - (res - 1) / 2
        centred = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1)
        off_sphere = (centred.norm(dim=-1) - 0.44 * res).abs().flatten()
        logits = torch.full_like(off_sphere, -1.0)
        logits[torch.topk(-off_sphere, voxels).indices] = 1.0
        return logits.reshape(out.shape).to(out.dtype)

    return hook


@contextlib.contextmanager
def phase_clock(models: P.TrellisModels, device: str) -> Iterator[dict[str, list[float]]]:
    """Seconds of every call of the four networks the pipeline calls as modules (hooks that synchronise the
    device around each call); the rest of a run is the conditioner, the preprocessing and the moves."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    calls: dict[str, list[float]] = {}
    started: dict[str, float] = {}
    handles = []
    for name in ("ss_flow", "ss_decoder", "slat_flow", "gs_decoder"):
        module = getattr(models, name)

        def before(_m, _args, name=name):
            sync()
            started[name] = time.perf_counter()

        def after(_m, _args, _out, name=name):
            sync()
            calls.setdefault(name, []).append(time.perf_counter() - started[name])

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def timed(models: P.TrellisModels, image: Image.Image, settings: P.TrellisSettings, device: str,
          dtype: torch.dtype | None, offload: bool) -> dict:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype else contextlib.nullcontext()
    with autocast, phase_clock(models, device) as calls:
        result = P.run(models, image, settings, device, offload=offload)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    phases = {name: {"calls": len(c), "seconds": round(sum(c), 3)} for name, c in calls.items()}
    phases["rest"] = {"seconds": round(seconds - sum(sum(c) for c in calls.values()), 3)}
    return {"seconds": round(seconds, 3), "peak_gib": round(peak, 2), "voxels": int(result.coords.shape[0]),
            "gaussians": int(result.gaussians.get_xyz.shape[0]), "phases": phases}


def full_size(args: argparse.Namespace) -> None:
    dtype = {"fp32": None, "bf16": torch.bfloat16, "published": None}[args.dtype]
    device = args.device
    torch.manual_seed(0)
    models = published_models("cpu" if args.low_memory else device, fp16=args.dtype == "published")
    for m in models.modules():
        m.eval()
    params = sum(p.numel() for m in models.modules() for p in m.parameters())
    settings = P.TrellisSettings()                        # 25 + 25 steps, cfg 7.5 / 3.0 (SPEC 0 defaults)
    if args.steps:
        settings = replace(settings, ss_sampler=replace(settings.ss_sampler, steps=args.steps),
                           slat_sampler=replace(settings.slat_sampler, steps=args.steps))
    image = photo()
    models.ss_decoder.register_forward_hook(shell_occupancy(args.voxels))
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"# {name}; {params / 1e9:.2f}B parameters (random); {args.dtype}; "
          f"{'low-memory (one network on the GPU at a time)' if args.low_memory else 'all networks resident'}; "
          f"{settings.ss_sampler.steps}+{settings.slat_sampler.steps} steps", flush=True)
    runs = []
    for i in range(args.repeat):                         # each printed as it ends: a cut-off run still reports
        r = timed(models, image, settings, device, dtype, args.low_memory)
        runs.append(r)
        print(f"run {i}: {r['seconds']:.2f} s, peak {r['peak_gib']:.2f} GiB, {r['voxels']} voxels, "
              f"{r['gaussians']} Gaussians; " + ", ".join(
                  f"{name} {p['seconds']:.2f} s" + (f" ({p['calls']} calls)" if "calls" in p else "")
                  for name, p in r["phases"].items()), flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with profile(activities=activities, record_shapes=True) as prof:
            r = timed(models, image, settings, device, dtype, args.low_memory)
        averages = prof.key_averages()
        cuda = device.startswith("cuda")
        key = "self_cuda_time_total" if cuda else "self_cpu_time_total"     # the table's sort key
        busy = sum(e.self_device_time_total if cuda else e.self_cpu_time_total for e in averages) / 1e6
        print(f"profiled run: {r['seconds']:.2f} s wall, {busy:.2f} s of kernels ({key})", flush=True)
        print(averages.table(sort_by=key, row_limit=30), flush=True)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by=key, row_limit=25), flush=True)
    print(json.dumps({"device": name, "dtype": args.dtype, "low_memory": args.low_memory, "runs": runs}))


def tiny_golden(args: argparse.Namespace) -> None:
    """bf16 (and fp16) autocast against fp32 on the tiny golden model, measured on the final Gaussians."""
    sys.path.insert(0, str(REPO / "tests" / "unit" / "ai_modules"))
    from test_trellis_pipeline import golden_settings, tiny_models
    from trellis_golden import GOLDEN, golden

    image = Image.open(GOLDEN / "input_rgba.png")
    reference = golden("gaussians")
    models, settings = tiny_models(), golden_settings()
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            result = P.run(models, image, settings, "cpu")
        g = result.gaussians
        same = torch.equal(result.coords, golden("sparse_structure")["ss_coords"])
        diffs = {name: float((getattr(g, f"get_{name}").float() - reference[f"gs_get_{name}"]).abs().max())
                 if same else float("nan") for name in ("xyz", "features", "scaling", "rotation", "opacity")}
        print(f"{label}: coords {'equal' if same else 'DIFFER'} ({result.coords.shape[0]} voxels); max |diff| vs the "
              "original's fp32 Gaussians: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "published"), default="bf16",
                        help="bf16: fp32 weights under bf16 autocast; published: the checkpoints' fp16 torsos "
                             "(the backend's `precision: auto` on CUDA)")
    parser.add_argument("--low-memory", action="store_true")
    parser.add_argument("--voxels", type=int, default=20_000)
    parser.add_argument("--steps", type=int, default=0, help="steps of each sampler (0: the published 25)")
    parser.add_argument("--profile", action="store_true", help="then one more run under torch.profiler: top 20 ops")
    parser.add_argument("--repeat", type=int, default=2, help="runs after calibration (the first warms up)")
    parser.add_argument("--tiny-golden", action="store_true", help="bf16 vs fp32 on the tiny golden model (CPU)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    tiny_golden(args) if args.tiny_golden else full_size(args)


if __name__ == "__main__":
    main()
