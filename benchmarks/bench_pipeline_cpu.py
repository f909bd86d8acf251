"""Benchmark the embedded pipeline on the CPU: seconds per stage for a 512-px photo.

Uses scikit-image's `coffee` photo (a cup on a saucer, 600x400, shipped with
scikit-image) scaled to a 512-px long side, or a synthetic disc with
``--synthetic``, or any file with ``--image``. One warm-up run (imports, first
calls), then ``--repeats`` runs in fresh work directories; prints the median
seconds per stage and in total. ``--record`` appends a JSON line to
``benchmarks/results/bench_pipeline_cpu.jsonl``.

Usage:
    python benchmarks/bench_pipeline_cpu.py [--repeats 3] [--synthetic | --image PATH] [--record]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_modules.pipeline import PIPELINE_VERSION, STAGES, peak_rss_mb, run  # noqa: E402


def make_photo(path: Path, synthetic: bool) -> tuple[int, int]:
    """Write the benchmark photo (512-px long side) to `path`; return (width, height)."""
    if synthetic:
        yy, xx = np.mgrid[:512, :512]
        rgb = np.empty((512, 512, 3), np.uint8)
        rgb[:] = (235, 235, 230)
        rgb[(xx - 240) ** 2 + (yy - 270) ** 2 < 170 ** 2] = (200, 60, 40)
        image = Image.fromarray(rgb)
    else:
        from skimage import data

        image = Image.fromarray(data.coffee())
        image = image.resize((512, round(512 * image.height / image.width)), Image.LANCZOS)
    image.save(path)
    return image.size


def commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="a synthetic disc instead of skimage's coffee")
    parser.add_argument("--image", type=Path, help="benchmark this file instead")
    parser.add_argument("--record", action="store_true", help="append a JSON line to benchmarks/results/")
    args = parser.parse_args()

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        photo = args.image or tmpdir / "photo.png"
        if args.image is None:
            size = make_photo(photo, args.synthetic)
        else:
            size = Image.open(photo).size
        settings = {"device": "cpu"}
        start = time.perf_counter()
        run(photo, settings, tmpdir / "warmup")
        warmup = time.perf_counter() - start
        per_stage: dict[str, list[float]] = {name: [] for name in STAGES}
        totals = []
        for i in range(args.repeats):
            start = time.perf_counter()
            result = run(photo, settings, tmpdir / f"run{i}")
            totals.append(time.perf_counter() - start)
            for record in result.stages:
                per_stage[record.name].append(record.duration_s)
        metrics = {r.name: r.metrics for r in result.stages}

    label = str(args.image) if args.image else ("synthetic disc" if args.synthetic else "skimage coffee")
    print(f"ai_modules {PIPELINE_VERSION} on {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"input: {label}, {size[0]}x{size[1]} px; {metrics['lift']['gaussians']} Gaussians; "
          f"warm-up run {warmup:.2f} s (includes imports)")
    print(f"median of {args.repeats} runs:")
    medians = {name: statistics.median(v) for name, v in per_stage.items()}
    for name, seconds in medians.items():
        print(f"  {name:<8} {seconds:7.3f} s")
    total = statistics.median(totals)
    print(f"  {'total':<8} {total:7.3f} s   (wall clock per run, incl. hashing and done.json)")
    print(f"  peak RSS {peak_rss_mb():.0f} MiB")
    if args.record:
        out = ROOT / "benchmarks" / "results" / "bench_pipeline_cpu.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        line = {"bench": "pipeline_cpu", "input": label, "size": list(size), "median_s": medians,
                "total_median_s": total, "peak_rss_mb": peak_rss_mb(), "cpus": os.cpu_count(),
                "torch_threads": torch.get_num_threads(), "commit": commit(), "version": PIPELINE_VERSION,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
