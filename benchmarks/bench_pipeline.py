"""Quality and speed of the whole pipeline on real photos: per image and per stage.

Photos of objects that nobody here made: scikit-image's `coffee` (a cup on a saucer) and
`rocket` (a rocket on its launch pad), and `chelsea` (a cat, a hard case: fur, no plain
background), each scaled to a 512-px long side; or files given with ``--image``. One warm-up
run (imports, first calls), then one timed run per photo.

Quality, measured on the final Gaussians (what is exported):
* front: rendered from the photo's own camera, PSNR inside the cutout's silhouette against the
  cutout, and the silhouette IoU (targets: >= 28 dB, >= 0.95);
* ring: rendered from the 16 ring cameras, the share of the silhouette the multiview stage
  predicted that is covered (alpha >= 0.5; target >= 98 % in every view) and the share of covered
  pixels more than 2 px outside it (floaters).

    .venv/bin/python benchmarks/bench_pipeline.py                       # CPU
    python3 benchmarks/bench_pipeline.py --device cuda --previews docs/images
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_modules.gaussians import Gaussians  # noqa: E402
from ai_modules.multiview.stage import MultiviewStage  # noqa: E402
from ai_modules.pipeline import PIPELINE_VERSION, run  # noqa: E402
from ai_modules.reconstruct.quality import input_view_quality, ring_closure  # noqa: E402
from ai_modules.settings import parse_settings  # noqa: E402

PHOTOS = ("coffee", "rocket", "chelsea")


def skimage_photo(name: str, path: Path) -> Path:
    """Write scikit-image's photo `name` at a 512-px long side to `path`."""
    from skimage import data

    image = Image.fromarray(getattr(data, name)())
    image = image.resize((512, round(512 * image.height / image.width)) if image.width >= image.height
                         else (round(512 * image.width / image.height), 512), Image.LANCZOS)
    image.convert("RGB").save(path)
    return path


def measure(workdir: Path, device: str) -> dict[str, float]:
    """The quality figures of a finished run in `workdir` (module docstring)."""
    views = MultiviewStage(parse_settings({}).multiview).load_outputs(workdir / "multiview")
    final = Gaussians.load_ply(workdir / "refine" / "gaussians.ply").to(device)
    return {**input_view_quality(final, views.input), **ring_closure(final, views.ring)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--image", type=Path, nargs="*", help="benchmark these files instead of skimage's")
    parser.add_argument("--set", nargs="*", default=[], metavar="STAGE.KEY=VALUE",
                        help="pipeline settings, e.g. reconstruct.iterations=200")
    parser.add_argument("--previews", type=Path, help="copy each preview.png and turntable.webp here")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON lines here")
    args = parser.parse_args()

    import torch

    settings: dict = {"device": args.device}
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        settings.setdefault(section, {})[name] = value
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else (platform.processor() or "cpu")
    print(f"# pipeline {PIPELINE_VERSION} on {args.device} ({name}), {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); settings {json.dumps(settings)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        photos = args.image or [skimage_photo(p, tmpdir / f"{p}.png") for p in PHOTOS]
        start = time.perf_counter()
        run(photos[0], settings, tmpdir / "warmup")
        print(f"# warm-up run {time.perf_counter() - start:.1f} s (imports, first calls)")
        for photo in photos:
            workdir = tmpdir / photo.stem
            start = time.perf_counter()
            result = run(photo, settings, workdir)
            total = time.perf_counter() - start
            quality = measure(workdir, args.device)
            stages = {r.name: r.duration_s for r in result.stages}
            peak_ram = max(r.peak_rss_mb for r in result.stages)
            vram = [r.peak_vram_mb for r in result.stages if r.peak_vram_mb is not None]
            size = Image.open(photo).size
            print(f"{photo.stem:<10} {size[0]}x{size[1]}  total {total:6.1f} s  "
                  + "  ".join(f"{k} {v:.1f}" for k, v in stages.items()))
            export = next(r for r in result.stages if r.name == "export").metrics
            print(f"{'':<10} export: " + "  ".join(f"{k} {v:.2f}" for k, v in export.get("seconds", {}).items())
                  + f";  Gaussians {export.get('gaussians')}")
            print(f"{'':<10} front PSNR {quality['input_view_psnr']:.2f} dB, IoU {quality['input_view_iou']:.3f};  "
                  f"ring coverage min {quality['ring_coverage_min']:.3f} mean {quality['ring_coverage_mean']:.3f}, "
                  f"floaters {quality['ring_floaters']:.4f};  peak RSS {peak_ram:.0f} MiB"
                  + (f", VRAM {max(vram):.0f} MiB" if vram else ""))
            if args.previews:
                args.previews.mkdir(parents=True, exist_ok=True)
                for kind, suffix in (("preview", "png"), ("turntable", "webp")):
                    if kind in result.outputs:
                        (args.previews / f"{photo.stem}-{kind}.{suffix}").write_bytes(result.outputs[kind].read_bytes())
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"photo": photo.stem, "device": args.device, "device_name": name,
                                        "total_s": round(total, 2), "stages_s": stages, **quality,
                                        "peak_rss_mb": peak_ram, "peak_vram_mb": max(vram) if vram else None,
                                        "version": PIPELINE_VERSION}) + "\n")


if __name__ == "__main__":
    main()
