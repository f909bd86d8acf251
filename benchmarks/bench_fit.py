"""Fitting quality and time per preset against an independent renderer's views.

Ground truth: an analytic ray-cast scene (tests/scenes.py: a textured sphere on a box), 12
training views on SyncDreamer's ring (elevation 30, distance 1.5, fx = 280 at 256 px) and 8
held-out views (between the training azimuths, and at elevation 5). Prints one line per preset.

    .venv/bin/python benchmarks/bench_fit.py --device cpu --presets draft
    python3 benchmarks/bench_fit.py --device cuda --presets draft standard high
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ai_modules.reconstruct import FitBudget, fit  # noqa: E402
from tests.scenes import dataset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="+", default=["draft", "standard"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=None, help="wall-time budget per fit")
    parser.add_argument("--no-depth", action="store_true", help="fit from the masks' visual hull, not depth")
    args = parser.parse_args()
    data = {k: torch.from_numpy(v).float() for k, v in dataset(args.size).items()}
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# device {args.device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.size}px, 12 train / 8 held-out views")
    for preset in args.presets:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        _, metrics = fit(data["images"], data["viewmats"], data["Ks"], masks=data["masks"],
                         depths=None if args.no_depth else data["depths"], preset=preset,
                         budget=FitBudget(seconds=args.seconds), device=args.device,
                         heldout=(data["heldout_images"], data["heldout_viewmats"], data["heldout_Ks"]))
        if args.device.startswith("cuda"):
            metrics["peak_vram_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        print(json.dumps(metrics))


if __name__ == "__main__":
    main()
