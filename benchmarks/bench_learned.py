"""Every learned stage at its published size, one worker-held pipeline: a cold job and a warm job per memory mode.

The models are built at their published sizes with random weights from the configs kept in
``benchmarks/configs`` (SyncDreamer, DPT-hybrid, the SDXL-Lightning UNet + depth ControlNet + VAE +
both text encoders; see `benchmarks/learned_models.py`, no download) and written in the real
on-disk layouts, so loading reads real files of the real sizes. Time and memory do not depend on
the weights' values; the images the stages produce are noise.

For each mode (``default``; ``low_memory``: the pipeline's top-level ``low_memory`` setting) one
`Pipeline` is built, as a worker holds one, and the photo runs through it twice: a cold job (the
models load from disk; their files are first evicted from the page cache with
``posix_fadvise(DONTNEED)``, so "from disk" means the disk, unless ``--keep-page-cache``) and a
warm job (the models are held). Every learned stage is on: SyncDreamer (50 DDIM steps x 16 views),
DPT depth on the 16 views, the fit, SDXL-Lightning (4 steps, img2img) on 16 views, export; segment
is the embedded ``alpha_grabcut``; refine is ``none`` (its MVCRM backend comes in a later issue).
Printed: per stage seconds, model-load seconds and peak VRAM; per job the total and the peak
(the largest stage peak: the pipeline resets CUDA's peak counter at each stage), the device name,
torch version and whether the targets are met.

Targets on one H100: warm job <= 15 s end to end; cold job <= 45 s from local disk
(default mode); low-memory mode peak <= 12 GB.

``--tiny`` is a CPU smoke run of the same script: the tiny test stand-ins instead (the tests' micro
SyncDreamer, `ai_modules.diffusion.tiny`'s SDXL trio, a tiny hybrid DPT), 2 DDIM steps, a short fit,
128-px enhancement and a small export without the turntable, so that every stage runs in a few minutes on
2 CPU cores; its figures say nothing about speed.

Usage:
    python benchmarks/bench_learned.py --device cuda [--models-dir DIR --write-models] [--record]
    .venv/bin/python benchmarks/bench_learned.py --tiny                      # CPU smoke run
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from benchmarks import learned_models as lm
from benchmarks.common import commit

MODES = ("default", "low_memory")
WARM_TARGET_S = 15.0
COLD_TARGET_S = 45.0
LOW_MEMORY_PEAK_TARGET_BYTES = 12e9     # "12 GB"
REFINE_NOTE = "refine: backend none (the MVCRM backend comes in a later issue)"


def job_settings(device: str, mode: str, steps: int, tiny: bool) -> dict[str, Any]:
    """The pipeline settings of one job: every learned stage on (refine: none, MVCRM comes later)."""
    settings: dict[str, Any] = {
        "device": device, "low_memory": mode == "low_memory",
        "segment": {"backend": "alpha_grabcut"},
        "multiview": {"backend": "syncdreamer", "steps": steps},
        "depth": {"backend": "dpt"},
        "enhance": {"backend": "sdxl_lightning"},
        "refine": {"backend": "none"},
    }
    if tiny:   # a smoke run: short fit, small enhancement (the tiny SDXL stand-ins are meant for 64-256 px),
        # small mesh and previews, no turntable: every stage still runs, in seconds on 2 CPU cores
        settings["reconstruct"] = {"iterations": 10, "size": 128}
        settings["enhance"]["resolution"] = 128
        settings["export"] = {"formats": ["ply", "splat", "glb", "preview"], "mesh_view_size": 64,
                              "mesh_voxels": 64, "preview_size": 128}
    return settings


def default_photo(directory: Path) -> Path:
    """scikit-image's `coffee` (a cup on a saucer, 600x400) as a JPEG at a 512-px long side."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.coffee())
    image = image.resize((512, round(512 * image.height / image.width)), Image.LANCZOS)
    path = directory / "coffee.jpg"
    image.convert("RGB").save(path, quality=95)
    return path


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def model_paths(models_dir: Path) -> list[Path]:
    """The planned model files/folders of the three learned backends this benchmark uses."""
    from ai_modules.models import model_inventory

    names = {n for names in lm.BACKEND_NAMES.values() for n in names}
    return [m.path for m in model_inventory(models_dir) if m.name in names and m.path is not None]


def missing_models(models_dir: Path) -> list[str]:
    from ai_modules.models import model_inventory

    names = {n for names in lm.BACKEND_NAMES.values() for n in names}
    return [f"{m.name} ({m.path})" for m in model_inventory(models_dir) if m.name in names and not m.present]


def write_models(models_dir: Path, tiny: bool, device: str) -> list[dict[str, Any]]:
    """Write the (full-size or tiny) models and print seconds and bytes of each."""
    rows: list[dict[str, Any]] = []
    print(f"writing {'tiny' if tiny else 'full-size'} random-weight models to {models_dir}", flush=True)
    if tiny:
        start = time.perf_counter()
        written = lm.write_tiny_models(models_dir)
        seconds = time.perf_counter() - start
        for name, path in written.items():
            rows.append({"model": name, "bytes": lm.tree_bytes(path), "seconds": None})
        print(f"  tiny models: {sum(r['bytes'] for r in rows) / 1e6:.1f} MB in {seconds:.1f} s")
        return rows

    def report(name: str, path: Path, seconds: float) -> None:
        size = lm.tree_bytes(path)
        rows.append({"model": name, "bytes": size, "seconds": round(seconds, 2)})
        print(f"  {name:<28} {size / 1e9:7.3f} GB  {seconds:7.1f} s", flush=True)

    init_device = "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
    lm.write_full_size_models(models_dir, device=init_device, on_written=report)
    print(f"  total {sum(r['bytes'] for r in rows) / 1e9:.2f} GB in {sum(r['seconds'] for r in rows):.1f} s")
    return rows


def run_job(pipeline: Any, photo: Path, workdir: Path, device: str) -> dict[str, Any]:
    """One job through the held pipeline; seconds, load seconds and peak memory per stage and in all."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    result = pipeline.run(photo, workdir, on_progress=None, should_stop=None)
    synchronize(device)
    total = time.perf_counter() - start
    stages = []
    for rec in result.stages:
        load_s = getattr(rec, "load_s", None)
        stages.append({"name": rec.name, "backend": rec.backend, "seconds": rec.duration_s, "load_s": load_s,
                       "peak_vram_gib": None if rec.peak_vram_mb is None else rec.peak_vram_mb / 1024,
                       "resumed": rec.resumed})
    peaks = [s["peak_vram_gib"] for s in stages if s["peak_vram_gib"] is not None]
    if device.startswith("cuda"):   # the pipeline resets the counter per stage: the job's peak is the largest
        peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
    loads = [s["load_s"] for s in stages if s["load_s"] is not None]
    return {"total_s": total, "stage_sum_s": sum(s["seconds"] for s in stages),
            "load_s": sum(loads) if loads else None, "peak_vram_gib": max(peaks) if peaks else None,
            "stages": stages, "outputs": sorted(result.outputs)}


def _fmt(value: float | None, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def print_job(mode: str, job: str, r: dict[str, Any]) -> None:
    print(f"  {mode} / {job} job: {r['total_s']:.2f} s end to end (stages {r['stage_sum_s']:.2f} s, model loads "
          f"{_fmt(r['load_s'], '.2f')} s), peak {_fmt(r['peak_vram_gib'], '.2f')} GiB")
    print(f"    {'stage':<12} {'backend':<15} {'seconds':>8} {'load s':>7} {'peak GiB':>9}")
    for s in r["stages"]:
        print(f"    {s['name']:<12} {s['backend']:<15} {s['seconds']:8.2f} {_fmt(s['load_s'], '7.2f'):>7} "
              f"{_fmt(s['peak_vram_gib'], '9.2f'):>9}{'  (resumed)' if s['resumed'] else ''}")


def check_targets(results: dict[str, dict[str, dict[str, Any]]], tiny: bool, device: str) -> list[str]:
    """One line per target: the figure, the bound and whether it is met."""
    if tiny or not device.startswith("cuda"):
        return ["targets: not applicable (" + ("tiny models" if tiny else "not on CUDA") + ")"]
    lines = []

    def line(what: str, value: float | None, bound: float, unit: str, shown: str | None = None) -> None:
        if value is None:
            lines.append(f"{what}: not measured")
            return
        ok = value <= bound
        lines.append(f"{what}: {shown or f'{value:.2f} {unit}'} (target <= {bound:g} {unit}) "
                     f"{'MET' if ok else 'NOT MET'}")

    if "default" in results:
        line("warm job, default mode", results["default"]["warm"]["total_s"], WARM_TARGET_S, "s")
        line("cold job, default mode", results["default"]["cold"]["total_s"], COLD_TARGET_S, "s")
    if "low_memory" in results:
        peak = max(j["peak_vram_gib"] or 0.0 for j in results["low_memory"].values()) * 2**30
        line("low-memory peak", peak / 1e9, LOW_MEMORY_PEAK_TARGET_BYTES / 1e9, "GB",
             shown=f"{peak / 1e9:.2f} GB = {peak / 2**30:.2f} GiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, help="model tree (default: a temporary folder, written first)")
    parser.add_argument("--write-models", action="store_true", help="write the random-weight models first")
    parser.add_argument("--device", default=None, help="torch device (default: cuda; cpu with --tiny)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated from {list(MODES)}")
    parser.add_argument("--photo", type=Path, help="the photo (default: scikit-image's coffee, 512 px)")
    parser.add_argument("--steps", type=int, default=None, help="SyncDreamer DDIM steps (default 50; 2 with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="CPU smoke run with the tiny test models")
    parser.add_argument("--keep-page-cache", action="store_true",
                        help="do not evict the model files from the page cache before each cold job")
    parser.add_argument("--record", action="store_true",
                        help="append JSON lines to benchmarks/results/bench_learned.jsonl")
    args = parser.parse_args()

    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda, but torch sees no CUDA device (use --tiny for a CPU smoke run)")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        sys.exit(f"`--modes` must be from {list(MODES)}, got {args.modes!r}")
    steps = args.steps if args.steps is not None else (2 if args.tiny else 50)

    from ai_modules.pipeline import Pipeline
    from ai_modules.settings import parse_settings

    device_name = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or "cpu"
    print(f"{device_name} ({device}), torch {torch.__version__}"
          f"{', CUDA ' + str(torch.version.cuda) if device.startswith('cuda') else ''}; "
          f"{'TINY stand-ins' if args.tiny else 'published sizes, random weights'}; "
          f"SyncDreamer {steps} steps x 16 views, DPT on 16 views, fit, SDXL-Lightning 4 steps on 16 views, export")
    print(f"  {REFINE_NOTE}")

    with tempfile.TemporaryDirectory(prefix="bench_learned-") as tmp:
        tmpdir = Path(tmp)
        models_dir = args.models_dir or tmpdir / "models"
        written = None
        if args.write_models or args.models_dir is None:
            written = write_models(models_dir, args.tiny, device)
        missing = missing_models(models_dir)
        if missing:
            sys.exit(f"model files missing under {models_dir}: {', '.join(missing)}; pass --write-models")
        photo = args.photo or default_photo(tmpdir)
        fs = lm.filesystem_type(models_dir)
        print(f"  photo {photo}, models {models_dir} ({fs}"
              + ("; RAM, not a disk: cold loads read no disk, pass --models-dir on a local disk" if fs == "tmpfs"
                 else "") + ")")

        results: dict[str, dict[str, dict[str, Any]]] = {}
        for mode in modes:
            settings = job_settings(device, mode, steps, args.tiny)
            if not args.keep_page_cache:
                evicted = lm.evict_from_page_cache(model_paths(models_dir))
                print(f"  {mode}: evicted {evicted / 1e9:.2f} GB of model files from the page cache", flush=True)
            built = time.perf_counter()
            pipeline = Pipeline(parse_settings(settings), device, models_dir, vram_budget=None)
            build_s = time.perf_counter() - built
            try:
                results[mode] = {}
                for job in ("cold", "warm"):
                    r = run_job(pipeline, photo, tmpdir / "work" / f"{mode}-{job}", device)
                    results[mode][job] = r
                    print_job(mode, job, r)
                    sys.stdout.flush()
            finally:
                pipeline.close()
                del pipeline
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            print(f"  {mode}: pipeline built in {build_s:.2f} s")

        print("summary")
        for mode, jobs in results.items():
            peaks = [j["peak_vram_gib"] for j in jobs.values() if j["peak_vram_gib"] is not None]
            print(f"  {mode:<10} cold {jobs['cold']['total_s']:7.2f} s (loads {_fmt(jobs['cold']['load_s'], '.2f')} s)"
                  f"   warm {jobs['warm']['total_s']:7.2f} s (loads {_fmt(jobs['warm']['load_s'], '.2f')} s)"
                  f"   peak {_fmt(max(peaks) if peaks else None, '.2f')} GiB")
        targets = check_targets(results, args.tiny, device)
        for line in targets:
            print(f"  {line}")
        print(f"  {REFINE_NOTE}")

        if args.record:
            out = ROOT / "benchmarks" / "results" / "bench_learned.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            stamp = {"commit": commit(), "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            with open(out, "a") as f:
                for mode, jobs in results.items():
                    for job, r in jobs.items():
                        f.write(json.dumps({"bench": "learned", "device": device, "device_name": device_name,
                                            "tiny": args.tiny, "steps": steps, "mode": mode, "job": job, **r,
                                            "written": written, "targets": targets, **stamp}) + "\n")
            print(f"  recorded to {out}")


if __name__ == "__main__":
    main()
