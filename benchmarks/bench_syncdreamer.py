"""Benchmark SyncDreamer on a CUDA GPU: the full-size model with random weights, 50 DDIM steps x 16 views, cfg 2.

No checkpoint is needed: the network is built at the published sizes with random weights (the
time and memory do not depend on the values). For each mode (``default``: bf16 autocast, views
batched by free VRAM; ``low_memory``: bf16, 2-view chunks, CLIP/VAE on the CPU and moved in only
while used, VAE decode one view at a time; ``fp32``: the exact reference path; ``compile``:
default + torch.compile of the UNet) it runs one warm-up generation (1 step) and then the
timed one, between `torch.cuda.synchronize()`, and prints the sampling time (50 steps), the
total time (encode + sample + decode), the peak `max_memory_allocated` and the GPU name.
It also measures the activation memory of one view per chunk (to calibrate
`ai_modules.sync_dreamer.speed.PER_VIEW_BYTES`) and, on the tiny golden model from
``../shared/syncdreamer/golden`` when present, the max difference of bf16 vs fp32.
``--record`` appends JSON lines to ``benchmarks/results/bench_syncdreamer.jsonl``.

Usage:
    python benchmarks/bench_syncdreamer.py [--steps 50] [--modes default,low_memory] [--record]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ai_modules.sync_dreamer import RunOptions, SyncDreamer, SyncDreamerConfig, SyncDreamerModel  # noqa: E402
from ai_modules.sync_dreamer.speed import precision_context  # noqa: E402
from benchmarks.common import commit  # noqa: E402

MODES = {
    "default": RunOptions(precision="bf16"),
    "low_memory": RunOptions(precision="bf16", low_memory=True),
    "fp32": RunOptions(precision="fp32"),
    "compile": RunOptions(precision="bf16", compile_unet=True),
}


def test_image(size: int = 320) -> Image.Image:
    """An RGBA cutout: an orange ellipse with a darker band on a transparent background."""
    yy, xx = np.mgrid[0:size, 0:size]
    inside = ((xx - size / 2) / (size * 0.3)) ** 2 + ((yy - size / 2) / (size * 0.4)) ** 2 <= 1
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[inside] = (230, 140, 40, 255)
    rgba[inside & (np.abs(yy - size / 2) < size * 0.05)] = (120, 60, 20, 255)
    return Image.fromarray(rgba, mode="RGBA")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_generation(model: SyncDreamerModel, device: torch.device, options: RunOptions, steps: int = 50,
                   cfg_scale: float = 2.0, warmup_steps: int = 1, seed: int = 0) -> dict:
    """One warm-up and one timed generation of 16 views; times in seconds, peak memory in GiB (CUDA only).

    Returns:
        {"sample_s", "decode_s", "total_s", "peak_gib", "batch_view_num", "views", "finite"}.
    """
    sd = SyncDreamer(model, device, options)
    image = test_image()
    if warmup_steps:
        sd.generate_latents(image, steps=warmup_steps, cfg_scale=cfg_scale, seed=seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    latents = sd.generate_latents(image, steps=steps, cfg_scale=cfg_scale, seed=seed)
    synchronize(device)
    sampled = time.perf_counter()
    views = sd.decode(latents)
    synchronize(device)
    end = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"sample_s": sampled - start, "decode_s": end - sampled, "total_s": end - start, "peak_gib": peak,
            "batch_view_num": sd.batch_view_num, "views": int(views.shape[0]),
            "finite": bool(torch.isfinite(latents).all())}


def per_view_bytes(model: SyncDreamerModel, device: torch.device, dtype: torch.dtype) -> int:
    """Activation memory of one more target view per chunk: peak(bvn=2) - peak(bvn=1) of one CFG denoiser call."""
    b, size = 1, model.config.latent_size
    x = torch.randn(b, 16, 4, size, size, device=device)
    t = torch.full((b,), 501, device=device, dtype=torch.long)
    x_input = torch.randn(b, 4, size, size, device=device)
    clip = torch.randn(b, 1, 768, device=device)
    elevation = torch.full((b,), 0.5236, device=device)
    peaks = []
    for bvn in (1, 2):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.no_grad(), precision_context(device, dtype):
            model.denoise(x, t, x_input, clip, elevation, cfg_scale=2.0, batch_view_num=bvn)
        synchronize(device)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    return peaks[1] - peaks[0]


def golden_dir() -> Path:
    from tests.shared_data import shared_dir

    return shared_dir("syncdreamer") / "golden"


def bf16_vs_fp32_on_golden(device: torch.device, directory: Path | None = None) -> dict | None:
    """Max |bf16 - fp32| on the tiny golden model: one CFG eps at t=501, and the 4-step sampler's final latents.

    Returns None when the golden folder or safetensors is missing.
    """
    directory = golden_dir() if directory is None else directory
    try:
        from safetensors.torch import load_file
    except ImportError:
        return None
    if not (directory / "tiny_state_dict.safetensors").is_file():
        return None
    from ai_modules.sync_dreamer.generate import sample_latents
    from ai_modules.sync_dreamer.weights import check_and_load

    model = SyncDreamerModel(SyncDreamerConfig.tiny()).eval()
    check_and_load(model, load_file(str(directory / "tiny_state_dict.safetensors")),
                   allowed_missing=("clip_image_encoder.",))
    model.to(device)
    pre = {k: v.to(device) for k, v in load_file(str(directory / "preprocess.safetensors")).items()}
    fwd = {k: v.to(device) for k, v in load_file(str(directory / "forward_t501.safetensors")).items()}
    samp = {k: v.to(device) for k, v in load_file(str(directory / "sampler_ddim4_cfg2.safetensors")).items()}
    elevation = pre["input_elevation"][:, 0]
    out: dict[str, float] = {}
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        with torch.no_grad(), precision_context(device, dtype):
            eps = model.denoise(fwd["x_noisy"], fwd["timesteps"], pre["x_input"], pre["clip_embed"], elevation,
                                cfg_scale=2.0, batch_view_num=4).float()
        final = sample_latents(model, pre["x_input"], pre["clip_embed"], elevation, steps=4, cfg_scale=2.0,
                               eta=0.0, batch_view_num=16, dtype=dtype, x_T=samp["x_T"])
        results[dtype] = (eps, final)
    (eps32, fin32), (eps16, fin16) = results[torch.float32], results[torch.bfloat16]
    out["eps_t501_max_abs"] = (eps16 - eps32).abs().max().item()
    out["eps_t501_max_ref"] = eps32.abs().max().item()
    out["eps_t501_fp32_vs_golden"] = (eps32 - fwd["eps_cfg"]).abs().max().item()
    out["final_eta0_max_abs"] = (fin16 - fin32).abs().max().item()
    out["final_eta0_max_ref"] = fin32.abs().max().item()
    out["final_eta0_fp32_vs_golden"] = (fin32 - samp["eta0_final_latents"]).abs().max().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--cfg-scale", type=float, default=2.0)
    parser.add_argument("--modes", default="default,low_memory", help=f"comma-separated from {sorted(MODES)}")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--skip-per-view", action="store_true", help="skip the per-view memory measurement")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        sys.exit("needs a CUDA device")
    name = torch.cuda.get_device_name(device)
    print(f"{name}, torch {torch.__version__}; SyncDreamer full size, random weights; {args.steps} DDIM steps x 16 "
          f"views, cfg {args.cfg_scale}")
    torch.manual_seed(0)
    start = time.perf_counter()
    with torch.device(device):              # random init on the GPU (seconds, not minutes on the CPU)
        model = SyncDreamerModel(SyncDreamerConfig.full()).eval().requires_grad_(False)
    print(f"  model built in {time.perf_counter() - start:.1f} s")
    lines = []
    for mode in args.modes.split(","):
        if mode not in MODES:
            sys.exit(f"`--modes` must be from {sorted(MODES)}, got {mode!r}")
        result = run_generation(model, device, MODES[mode], steps=args.steps, cfg_scale=args.cfg_scale)
        print(f"  {mode:<10} sample {result['sample_s']:7.2f} s   total {result['total_s']:7.2f} s (decode "
              f"{result['decode_s']:.2f} s)   peak {result['peak_gib']:6.2f} GiB   batch_view_num "
              f"{result['batch_view_num']}   finite {result['finite']}")
        lines.append({"mode": mode, **result})
    per_view = None
    if not args.skip_per_view:
        model.to(device)
        per_view = per_view_bytes(model, device, torch.bfloat16)
        print(f"  one more view per chunk costs {per_view / 2 ** 30:.3f} GiB of activations (bf16)")
    model.to("cpu")
    torch.cuda.empty_cache()
    golden = bf16_vs_fp32_on_golden(device)
    if golden is None:
        print("  tiny golden model: skipped (../shared/syncdreamer/golden or safetensors missing)")
    else:
        print(f"  tiny golden model, bf16 vs fp32: eps(t=501) max|diff| {golden['eps_t501_max_abs']:.3e} "
              f"(max|eps| {golden['eps_t501_max_ref']:.2f}); 4-step eta=0 latents max|diff| "
              f"{golden['final_eta0_max_abs']:.3e} (max|x| {golden['final_eta0_max_ref']:.2f}); fp32 vs golden "
              f"{golden['eps_t501_fp32_vs_golden']:.2e} / {golden['final_eta0_fp32_vs_golden']:.2e}")
    if args.record:
        out = ROOT / "benchmarks" / "results" / "bench_syncdreamer.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        stamp = {"commit": commit(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(out, "a") as f:
            f.writelines(json.dumps({"bench": "syncdreamer", "gpu": name, "steps": args.steps, "cfg": args.cfg_scale,
                                     **line, "per_view_bytes": per_view, "bf16_vs_fp32": golden, **stamp}) + "\n"
                         for line in lines)


if __name__ == "__main__":
    main()
