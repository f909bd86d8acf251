"""Benchmark the pure-torch Gaussian renderer on the CPU: forward and forward+backward seconds.

Scene (deterministic): `ai_modules.splatting.scenes.textured_sphere` (20k flat
Gaussians on a checker-textured sphere of radius 0.35, SH degree 3), one camera
on the SyncDreamer ring (azimuth 0, elevation 30 deg, distance 1.5, fx = fy = 280,
256x256). Warm-up runs first, then ``--repeats`` timed runs of each; prints the
medians. The backward pass is of a loss over RGB, alpha and depth w.r.t. all
six Gaussian tensors. ``--record`` appends a JSON line to
``benchmarks/results/bench_render_cpu.jsonl``.

Target (issue): forward <= 1 s, forward+backward <= 3 s on the 2-core CI CPU.

Usage:
    python benchmarks/bench_render_cpu.py [--n 20000] [--size 256] [--repeats 5] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ai_modules.gaussians import Gaussians  # noqa: E402
from ai_modules.pipeline import peak_rss_mb  # noqa: E402
from ai_modules.splatting import render  # noqa: E402
from ai_modules.splatting.scenes import ring_cameras, textured_sphere  # noqa: E402
from benchmarks.common import GAUSSIAN_TENSORS as PARAMS, commit  # noqa: E402

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of Gaussians")
    parser.add_argument("--size", type=int, default=256, help="image width and height (focal scales with it)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--record", action="store_true", help="append a JSON line to benchmarks/results/")
    args = parser.parse_args()

    scene = textured_sphere(args.n)
    views, ks = ring_cameras((0.0,), focal=280.0 * args.size / 256, size=args.size)
    tensors = {name: getattr(scene, name).clone().requires_grad_() for name in PARAMS}
    gaussians = Gaussians(**tensors)

    def forward() -> None:
        with torch.no_grad():
            render(gaussians, views, ks, args.size, args.size, backend="torch")

    def forward_backward() -> dict:
        out = render(gaussians, views, ks, args.size, args.size, backend="torch")
        (out.rgb.mean() + out.alpha.mean() + 0.1 * out.depth.mean()).backward()
        for t in tensors.values():
            t.grad = None
        return out.meta

    for _ in range(args.warmup):
        forward()
        meta = forward_backward()
    times: dict[str, list[float]] = {"forward": [], "forward_backward": []}
    for _ in range(args.repeats):
        for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(v) for name, v in times.items()}

    print(f"torch {torch.__version__} on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{torch.get_num_threads()} torch threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"scene: textured sphere, N={args.n} Gaussians (SH degree 3), {args.size}x{args.size}, 1 camera; "
          f"{int((meta['radii'] > 0).all(-1).sum())} visible, {meta['n_isects']} tile intersections")
    for name, seconds in medians.items():
        runs = ", ".join(f"{t:.3f}" for t in times[name])
        print(f"  {name:<17} median {seconds:6.3f} s   (runs: {runs})")
    print(f"  peak RSS {peak_rss_mb():.0f} MiB")
    if args.record:
        out = ROOT / "benchmarks" / "results" / "bench_render_cpu.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        line = {"bench": "render_cpu", "n": args.n, "size": args.size, "median_s": medians,
                "peak_rss_mb": peak_rss_mb(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                "commit": commit(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
