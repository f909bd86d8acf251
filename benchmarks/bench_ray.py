"""Throughput of the daemon on this machine: `worker.backend: local` with one worker (and, for scale, two) against
`worker.backend: ray` with a local Ray cluster (a head without GPUs and two nodes with one fake GPU each, so two
actors), on the embedded pipeline.

For each backend the real daemon (`glimpsed run`, a subprocess) starts on a fresh root and waits until its
workers are ready; one photo per worker goes through first (a local worker opens its pipeline on its first
job, an actor when it starts); then N photos are dropped into the inbox at once, and the clock runs from the
drop to the N-th job done. Prints photos per minute and the seconds per photo, and the device each manifest names.
The photos and settings are those of the daemon tests (small cutouts and meshes: the scheduling, not the
pipeline, is under test); `--full` uses the default pipeline settings.

    .venv/bin/python benchmarks/bench_ray.py [--photos 8] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import DaemonProcess, make_photo  # noqa: E402
from tests.integration.ray_cluster import LocalCluster  # noqa: E402


def run(backend: str, photos: int, full: bool, root: Path, worker: dict) -> dict:
    overrides: dict = {"worker": worker, "jobs": {"timeout_seconds": 1800}, "logging": {"level": "warning"}}
    root.mkdir(parents=True)
    d = DaemonProcess(root, overrides)
    if full:                                                  # the default pipeline settings
        config = yaml.safe_load(d.config_path.read_text())
        del config["pipeline"]
        d.config_path.write_text(yaml.safe_dump(config))
    d.start()
    try:
        if backend == "ray":
            d.wait_for(lambda: sum(a["state"] == "idle" for a in d.store().daemon_state()["cluster"]["actors"]) == 2,
                       "both actors idle", 300)
        workers = len(worker.get("devices", ())) or 2
        for i in range(workers):                        # warm: local workers open their pipeline on a first job
            (d.inbox / f"warm{i}.jpg").write_bytes(make_photo(100 + i))
        d.wait_jobs("done", workers, 600)
        warm = {m for m in d.published()}
        started = time.monotonic()
        for i in range(photos):
            (d.inbox / f"photo{i}.jpg").write_bytes(make_photo(i))
        d.wait_jobs("done", workers + photos, 3600)
        seconds = time.monotonic() - started
        devices = Counter(json.loads(m.read_text())["device"] for m in d.published() if m not in warm)
    finally:
        d.stop(120)
    return {"backend": backend, "workers": workers, "photos": photos,
            "seconds": round(seconds, 1),
            "photos_per_minute": round(60 * photos / seconds, 2), "devices": dict(devices)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="the default pipeline settings")
    args = parser.parse_args()
    print(f"# {platform.node()}: {os.cpu_count()} CPUs, python {platform.python_version()}; "
          f"{args.photos} photos, {'default' if args.full else 'test'} settings; the clock starts at the drop, "
          "with the workers up")
    tmp = Path(tempfile.mkdtemp(prefix="glimpsed-bench-ray-"))
    results = [run("local", args.photos, args.full, tmp / "local", {"devices": ["cpu"]}),
               run("local", args.photos, args.full, tmp / "local2", {"devices": ["cpu", "cpu"]})]
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    cluster = LocalCluster(token)
    try:
        results.append(run("ray", args.photos, args.full, tmp / "ray",
                           {"backend": "ray", "ray": {"address": cluster.address, "token_file": str(token)}}))
    finally:
        cluster.stop()
    for r in results:
        label = (f"local, {r['workers']} worker(s)" if r["backend"] == "local"
                 else "ray, 2 actors on 2 fake-GPU nodes")
        print(f"{label:36s} {r['photos']} photos in {r['seconds']:7.1f} s: {r['photos_per_minute']:6.2f} photos/min"
              f" ({r['seconds'] / r['photos']:.1f} s each)")
        for device, n in sorted(r["devices"].items()):
            print(f"    {n} on {device}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
