"""Benchmark the renderer on a CUDA GPU: gsplat's kernels and the pure-torch backend on the same scene.

Scene as `bench_render_cpu.py`: 20k Gaussians on a textured sphere (SH degree 3),
SyncDreamer-ring cameras (elevation 30 deg, distance 1.5, fx = fy = 280 at 256 px);
``--cameras`` views per call (default 1). For each backend: warm-up calls (the
first compiles gsplat's kernels), then ``--repeats`` timed calls of forward and
of forward+backward, each between `torch.cuda.synchronize()`; prints median ms
and `max_memory_allocated`. ``--record`` appends JSON lines to
``benchmarks/results/bench_render_gpu.jsonl``.

Usage:
    python benchmarks/bench_render_gpu.py [--n 20000] [--size 256] [--cameras 1] [--repeats 20] [--record]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from ai_modules.gaussians import Gaussians  # noqa: E402
from ai_modules.splatting import render  # noqa: E402
from ai_modules.splatting.scenes import ring_cameras, textured_sphere  # noqa: E402
from benchmarks.common import GAUSSIAN_TENSORS as PARAMS, commit  # noqa: E402

def timed(fn, repeats: int) -> tuple[float, float]:
    """(median ms, peak MiB allocated) of `fn` over `repeats` synchronised calls."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), torch.cuda.max_memory_allocated() / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--cameras", type=int, default=1, help="views per render call (ring azimuths)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backends", default="gsplat,torch")
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA device")

    tensors = {name: getattr(textured_sphere(args.n), name).cuda().requires_grad_() for name in PARAMS}
    gaussians = Gaussians(**tensors)
    views, ks = ring_cameras(tuple(22.5 * i for i in range(args.cameras)), focal=280.0 * args.size / 256,
                             size=args.size)
    views, ks = views.cuda(), ks.cuda()
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}; textured sphere N={args.n} (SH 3), {args.cameras} camera(s) "
          f"{args.size}x{args.size}; median of {args.repeats} after {args.warmup} warm-up calls")
    for backend in args.backends.split(","):
        def forward(backend: str = backend) -> None:
            with torch.no_grad():
                render(gaussians, views, ks, args.size, args.size, backend=backend)

        def forward_backward(backend: str = backend) -> None:
            out = render(gaussians, views, ks, args.size, args.size, backend=backend)
            (out.rgb.mean() + out.alpha.mean() + 0.1 * out.depth.mean()).backward()
            for t in tensors.values():
                t.grad = None

        start = time.perf_counter()
        for _ in range(args.warmup):
            forward()
            forward_backward()
        torch.cuda.synchronize()
        warm = time.perf_counter() - start
        fwd_ms, fwd_mib = timed(forward, args.repeats)
        fb_ms, fb_mib = timed(forward_backward, args.repeats)
        print(f"  {backend:<7} forward {fwd_ms:8.2f} ms ({fwd_mib:7.1f} MiB peak)   forward+backward {fb_ms:8.2f} ms "
              f"({fb_mib:7.1f} MiB peak)   warm-up {warm:.1f} s")
        if args.record:
            out = ROOT / "benchmarks" / "results" / "bench_render_gpu.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            line = {"bench": "render_gpu", "backend": backend, "gpu": name, "n": args.n, "size": args.size,
                    "cameras": args.cameras, "forward_ms": fwd_ms, "forward_backward_ms": fb_ms,
                    "forward_peak_mib": fwd_mib, "forward_backward_peak_mib": fb_mib, "commit": commit(),
                    "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(out, "a") as f:
                f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
