"""Held-out quality of depth -> reconstruct -> export on textured meshes seen as SyncDreamer would see them.

Each mesh of `benchmarks/meshes.py` (a mug, a table on thin legs, a torus knot, a crate with a ball,
a figure with thin arms) is ray cast, with 3x3 supersampling, from SyncDreamer's 16 ring cameras
(elevation 30, azimuth 22.5 * i, distance 1.5, fx = 280 at 256 px) and from the input camera
(azimuth 0, elevation `multiview.input_elevation`), composited on white: those views, their alphas
and cameras become `MultiviewOutputs` as if the `syncdreamer` backend had produced them. The real
pipeline code then runs every stage after `multiview` (depth, reconstruct, enhance, refine, export)
with `multiview.backend: syncdreamer` and otherwise default settings, unless `--set` says otherwise.

Measured against truth that no stage saw:
* 8 held-out cameras at other elevations (0, 15, 45, 60, -10, 0, 15, 45 deg) and between the ring's
  azimuths (11.25 + 45 k deg), distance 1.5, same focal length: the exported `.ply` (turned back
  from the viewers' file frame into the world frame) rendered with `ai_modules.splatting.render_views`
  on white, against the mesh's render: PSNR over the whole image, PSNR inside the union of both
  silhouettes, SSIM (scikit-image), silhouette IoU (alpha >= 0.5); each the mean over the views;
* the exported mesh `.glb` (turned back from glTF's Y-up frame): Chamfer distance to the true
  surface (mean nearest-neighbour distance of 50k samples each way, averaged), as a percentage of
  the true mesh's bounding-box diagonal.
The same image figures on the 17 training views (ring + input) are printed apart, to show the gap.

Targets (issue): median over the meshes of the held-out PSNR >= 30 dB at 256 px; the reconstruct
stage <= 8 s on an H100 (its whole `duration_s`, visual-hull start included; the fit loop's own
seconds are shown beside it).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_multiview_fit.py --meshes mug,knot \\
        --set reconstruct.iterations=100 --out /tmp/mvfit
    python3 benchmarks/bench_multiview_fit.py --device cuda --json benchmarks/results/multiview_fit.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ai_modules.cameras import SYNCDREAMER_RING  # noqa: E402
from benchmarks.common import commit  # noqa: E402
from benchmarks.meshes import MESHES, MeshRenderer, Rendered, TexturedMesh  # noqa: E402

#: The held-out cameras: (azimuth, elevation) in degrees, distance 1.5, SyncDreamer's focal length.
HELDOUT: tuple[tuple[float, float], ...] = tuple(
    (11.25 + 45.0 * k, el) for k, el in enumerate((0.0, 15.0, 45.0, 60.0, -10.0, 0.0, 15.0, 45.0)))
TARGET_PSNR = 30.0
TARGET_FIT_S = 8.0
CHAMFER_SAMPLES = 50_000


def cameras(pairs: tuple[tuple[float, float], ...], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Viewmats [V,4,4] and Ks [V,3,3] of (azimuth, elevation) pairs at distance 1.5, SyncDreamer's field of view."""
    from ai_modules.cameras import ring_cameras

    views = [ring_cameras([az], el, size, SYNCDREAMER_RING.distance) for az, el in pairs]
    return np.concatenate([v for v, _ in views]), np.concatenate([k for _, k in views])


def multiview_outputs(renderer: MeshRenderer, size: int, input_elevation: float, supersample: int) -> Any:
    """The mesh seen as the `syncdreamer` backend's outputs: 16 ring views and the input view (float32)."""
    from ai_modules.multiview.backends import input_camera
    from ai_modules.multiview.stage import MultiviewOutputs, Views

    def views(viewmats: np.ndarray, ks: np.ndarray) -> Views:
        r = renderer.render(viewmats, ks, size, supersample)
        return Views(r.rgb, r.alpha, viewmats.astype(np.float32), ks.astype(np.float32))

    ring = views(*SYNCDREAMER_RING.cameras(size))                  # the cameras the syncdreamer backend returns
    photo = views(*input_camera(input_elevation, size))            # and the photo's, as it builds it
    return MultiviewOutputs(ring, photo, None, {"source": f"benchmarks.meshes:{renderer.scene.name}"})


def run_pipeline(views: Any, settings: dict[str, Any], device: str, workdir: Path) -> Any:
    """Run every stage after `multiview` on `views` (a `MultiviewOutputs`) with `Pipeline.continue_from`;
    artifacts under workdir/<stage>/.

    Returns:
        The `PipelineResult` (outputs: kind -> exported file; stages: the records after `multiview`).
    """
    from ai_modules.pipeline import open_pipeline

    pipeline = open_pipeline(settings, device)
    try:
        return pipeline.continue_from("multiview", views, workdir)
    finally:
        pipeline.close()


def exported_gaussians(result: Any, workdir: Path) -> Any:
    """The exported `.ply` turned from the viewers' file frame back into the world frame.

    Raises:
        RuntimeError: it disagrees with the world-frame Gaussians that `refine` saved (a frame mix-up).
    """
    import torch

    from ai_modules.export.functional import WORLD_TO_FILE
    from ai_modules.gaussians import Gaussians

    g = Gaussians.load_ply(result.outputs["ply"]).rotated(WORLD_TO_FILE.T)
    world = workdir / "refine" / "gaussians.ply"
    if world.is_file():
        ref = Gaussians.load_ply(world)
        if ref.num != g.num or not torch.allclose(ref.means, g.means, atol=1e-4):
            raise RuntimeError(f"{result.outputs['ply']} turned back by WORLD_TO_FILE.T does not match {world}")
    return g


def exported_mesh(result: Any) -> Any:
    """The exported `.glb` mesh turned from glTF's frame (Y up, front +Z) back into the world frame."""
    import trimesh

    from ai_modules.export.gltf import WORLD_TO_GLTF

    mesh = trimesh.load(result.outputs["glb"], force="mesh", process=False)
    transform = np.eye(4)
    transform[:3, :3] = WORLD_TO_GLTF.T
    mesh.apply_transform(transform)
    return mesh


def image_metrics(truth: Rendered, rgb: np.ndarray, alpha: np.ndarray) -> dict[str, float]:
    """Means over the views: psnr (whole image), psnr_mask (union of silhouettes), ssim, iou (alpha >= 0.5);
    and psnr_views, the PSNR of each view."""
    from skimage.metrics import structural_similarity

    rows = []
    for t_rgb, t_a, p_rgb, p_a in zip(truth.rgb, truth.alpha, rgb, alpha):
        err = (t_rgb.astype(np.float64) - p_rgb) ** 2
        union = (t_a >= 0.5) | (p_a >= 0.5)
        rows.append({
            "psnr": _psnr(err.mean()),
            "psnr_mask": _psnr(err[union].mean()) if union.any() else float("nan"),
            "ssim": float(structural_similarity(t_rgb, p_rgb, channel_axis=-1, data_range=1.0)),
            "iou": float(((t_a >= 0.5) & (p_a >= 0.5)).sum() / max(union.sum(), 1))})
    return {**{k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]},
            "psnr_views": [round(r["psnr"], 2) for r in rows]}


def _psnr(mse: float) -> float:
    return 10.0 * float(np.log10(1.0 / max(float(mse), 1e-12)))


def chamfer(scene: TexturedMesh, mesh: Any, count: int = CHAMFER_SAMPLES) -> dict[str, float]:
    """Chamfer distance between the true outer surface and `mesh`, in % of the true bounding-box diagonal:
    accuracy (mesh -> truth), completeness (truth -> mesh) and their mean; plus the bounding boxes' IoU."""
    import trimesh
    from scipy.spatial import cKDTree

    truth = scene.sample_surface(count, seed=0)
    recon, _ = trimesh.sample.sample_surface(mesh, count, seed=1)
    diag = float(np.linalg.norm(scene.bounds[1] - scene.bounds[0]))
    acc = float(cKDTree(truth).query(recon)[0].mean()) / diag * 100
    comp = float(cKDTree(recon).query(truth)[0].mean()) / diag * 100
    lo, hi = np.maximum(scene.bounds[0], mesh.bounds[0]), np.minimum(scene.bounds[1], mesh.bounds[1])
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    union = float(np.prod(np.ptp(scene.bounds, 0)) + np.prod(np.ptp(mesh.bounds, 0))) - inter
    return {"chamfer_pct": round((acc + comp) / 2, 3), "accuracy_pct": round(acc, 3),
            "completeness_pct": round(comp, 3), "bbox_iou": round(inter / union, 3)}


def contact_sheet(path: Path, truth: Rendered, rgb: np.ndarray) -> None:
    """PNG, one column per view: truth (top row), the fitted render (middle), 1 - 4 |difference| (bottom: dark is
    wrong)."""
    from PIL import Image

    diff = np.clip(np.abs(truth.rgb - rgb).mean(-1, keepdims=True) * 4, 0, 1).repeat(3, -1)
    rows = [np.concatenate(list(x), axis=1) for x in (truth.rgb, np.clip(rgb, 0, 1), 1 - diff)]
    Image.fromarray(np.rint(np.concatenate(rows, axis=0) * 255).astype(np.uint8)).save(path)


def bench_mesh(scene: TexturedMesh, settings: dict[str, Any], device: str, workdir: Path, size: int,
               supersample: int, out: Path | None) -> dict[str, Any]:
    """Render, run the pipeline, measure one mesh; returns its row of figures."""
    from ai_modules.settings import parse_settings
    from ai_modules.splatting import render_views

    start = time.perf_counter()
    renderer = MeshRenderer(scene)
    views = multiview_outputs(renderer, size, parse_settings(settings).multiview.input_elevation, supersample)
    h_view, h_k = cameras(HELDOUT, size)
    heldout = renderer.render(h_view, h_k, size, supersample)
    truth_s = time.perf_counter() - start
    start = time.perf_counter()
    result = run_pipeline(views, settings, device, workdir)
    pipeline_s = time.perf_counter() - start
    g = exported_gaussians(result, workdir).to(device)
    rgb, alpha, _ = render_views(g, h_view, h_k, size)
    held = image_metrics(heldout, rgb.clip(0, 1), alpha)
    t_view = np.concatenate([views.ring.viewmats, views.input.viewmats])
    t_k = np.concatenate([views.ring.Ks, views.input.Ks])
    t_rgb, t_alpha, _ = render_views(g, t_view, t_k, size)
    train_truth = Rendered(np.concatenate([views.ring.images, views.input.images]),
                           np.concatenate([views.ring.alphas, views.input.alphas]), np.zeros(0))
    train = image_metrics(train_truth, t_rgb.clip(0, 1), t_alpha)
    geometry = chamfer(scene, exported_mesh(result)) if "glb" in result.outputs else {}
    stages = {r.name: r for r in result.stages}
    rec = stages["reconstruct"]
    if out is not None:
        contact_sheet(out / f"{scene.name}_heldout.png", heldout, rgb)
        contact_sheet(out / f"{scene.name}_train.png", Rendered(train_truth.rgb[:16:2], train_truth.alpha[:16:2],
                                                                 np.zeros(0)), t_rgb[:16:2])
    return {"mesh": scene.name, "depth_backend": stages["depth"].backend,
            "gaussians": rec.metrics.get("num_gaussians"), "iterations": rec.metrics.get("iterations"),
            "reconstruct_s": round(rec.duration_s, 2), "fit_loop_s": rec.metrics.get("seconds"),
            "pipeline_s": round(pipeline_s, 2), "truth_render_s": round(truth_s, 2),
            "stages_s": {r.name: round(r.duration_s, 2) for r in result.stages},
            **{f"heldout_{k}": v for k, v in held.items()}, **{f"train_{k}": v for k, v in train.items()},
            **geometry}


#: The table: (title, key, width, format spec); text columns have no spec.
COLUMNS = (("mesh", "mesh", 7, ""), ("depth", "depth_backend", 9, ""), ("N", "gaussians", 6, "d"),
           ("rec s", "reconstruct_s", 6, ".1f"), ("loop s", "fit_loop_s", 6, ".1f"),
           ("HO PSNR", "heldout_psnr", 7, ".2f"), ("HO mPSNR", "heldout_psnr_mask", 8, ".2f"),
           ("HO SSIM", "heldout_ssim", 7, ".4f"), ("HO IoU", "heldout_iou", 6, ".3f"),
           ("TR PSNR", "train_psnr", 7, ".2f"), ("TR mPSNR", "train_psnr_mask", 8, ".2f"),
           ("TR SSIM", "train_ssim", 7, ".4f"), ("TR IoU", "train_iou", 6, ".3f"),
           ("CD %diag", "chamfer_pct", 8, ".3f"), ("bbIoU", "bbox_iou", 5, ".2f"), ("all s", "pipeline_s", 6, ".1f"))


def _row(values: dict[str, Any]) -> str:
    cells = []
    for _, key, width, spec in COLUMNS:
        v = values.get(key)
        if not spec or v is None:
            cells.append(str("-" if v is None else v).ljust(width) if not spec else "-".rjust(width))
        else:
            cells.append(format(round(v) if spec == "d" else v, spec).rjust(width))
    return "  ".join(cells)


def print_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Print the table (HO = held-out, TR = training views, mPSNR = inside the silhouettes) and the medians."""
    print("  ".join(t.ljust(w) if not spec else t.rjust(w) for t, _, w, spec in COLUMNS))
    for r in rows:
        print(_row(r))
    median = {key: statistics.median(r[key] for r in rows) for _, key, _, spec in COLUMNS
              if spec and all(isinstance(r.get(key), (int, float)) for r in rows)}
    print(_row({"mesh": "median", "depth_backend": "", **median}))
    return median


def parse_sets(items: list[str]) -> dict[str, dict[str, str]]:
    """``["reconstruct.iterations=200", ...]`` -> ``{"reconstruct": {"iterations": "200"}}``."""
    settings: dict[str, dict[str, str]] = {}
    for item in items:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        settings.setdefault(section, {})[name] = value
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--meshes", default=",".join(MESHES), help=f"comma-separated, of {', '.join(MESHES)}")
    parser.add_argument("--size", type=int, default=256, help="side of every view, pixels (SyncDreamer's: 256)")
    parser.add_argument("--supersample", type=int, default=3, help="rays per pixel side of the truth renders")
    parser.add_argument("--set", nargs="*", default=[], metavar="STAGE.KEY=VALUE",
                        help="pipeline settings over the defaults, e.g. reconstruct.iterations=200")
    parser.add_argument("--out", type=Path, help="keep the work folders and contact sheets (PNG) here")
    parser.add_argument("--warmup", choices=("auto", "yes", "no"), default="auto",
                        help="one short run first (CUDA kernels' first-call cost); auto: on CUDA only")
    parser.add_argument("--json", type=Path, help="also append one JSON line per mesh here")
    args = parser.parse_args()

    import torch

    names = [n.strip() for n in args.meshes.split(",") if n.strip()]
    unknown = [n for n in names if n not in MESHES]
    if unknown:
        parser.error(f"`--meshes` must name some of {', '.join(MESHES)}, got {', '.join(unknown)}")
    sets = parse_sets(args.set)
    settings: dict[str, Any] = {**sets, "device": args.device,
                                "multiview": {**sets.get("multiview", {}), "backend": "syncdreamer"}}
    cuda = args.device.startswith("cuda")
    device_name = torch.cuda.get_device_name(args.device) if cuda else (platform.processor() or platform.machine())
    print(f"# bench_multiview_fit at {commit()} on {args.device} ({device_name}), {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads); {args.size} px, truth "
          f"{args.supersample}x{args.supersample} supersampled; settings {json.dumps(settings)}")
    with tempfile.TemporaryDirectory() as tmp:
        base = args.out or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        if args.warmup == "yes" or (args.warmup == "auto" and cuda):
            start = time.perf_counter()
            warm = {**settings, "reconstruct": {**settings.get("reconstruct", {}), "iterations": "20"}}
            bench_mesh(MESHES[names[0]](), warm, args.device, Path(tmp) / "warmup", args.size, 1, None)
            print(f"# warm-up run {time.perf_counter() - start:.1f} s (imports, kernels' first calls)")
        rows = []
        for name in names:
            row = bench_mesh(MESHES[name](), settings, args.device, base / name, args.size, args.supersample,
                             args.out)
            rows.append(row)
            print(f"# {name}: stages " + ", ".join(f"{k} {v:.1f} s" for k, v in row["stages_s"].items())
                  + f"; truth renders {row['truth_render_s']:.1f} s; {row['iterations']} fit steps; Chamfer "
                  f"accuracy {row.get('accuracy_pct', float('nan')):.3f} %, completeness "
                  f"{row.get('completeness_pct', float('nan')):.3f} %; held-out PSNR per view (elevation): "
                  + ", ".join(f"{p:.1f} ({el:.0f})" for p, (_, el) in zip(row["heldout_psnr_views"], HELDOUT)),
                  flush=True)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                with open(args.json, "a") as f:
                    f.write(json.dumps({**row, "device": args.device, "device_name": device_name,
                                        "torch": torch.__version__, "size": args.size, "settings": settings,
                                        "commit": commit()}) + "\n")
    print("# HO = 8 held-out cameras, TR = the 17 training views (16 ring + input); PSNR over the whole "
          "image on white, mPSNR inside the union of silhouettes; CD = Chamfer of the .glb, % of the bbox diagonal")
    median = print_table(rows)
    psnr_ok = median["heldout_psnr"] >= TARGET_PSNR
    print(f"target: median held-out PSNR >= {TARGET_PSNR:.0f} dB at 256 px: {median['heldout_psnr']:.2f} dB "
          f"-> {'met' if psnr_ok else 'NOT met'}" + ("" if args.size == 256 else f" (measured at {args.size} px)"))
    slowest = max(r["reconstruct_s"] for r in rows)
    verdict = ("met" if slowest <= TARGET_FIT_S else "NOT met") if cuda else "n/a on the CPU (target is for CUDA)"
    print(f"target: reconstruct <= {TARGET_FIT_S:.0f} s on an H100: slowest {slowest:.1f} s, median "
          f"{median['reconstruct_s']:.1f} s -> {verdict}")


if __name__ == "__main__":
    main()
