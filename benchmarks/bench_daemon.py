"""Inbox-to-outbox latency of the real daemon on this machine (embedded backends).

Starts `glimpsed run` as a subprocess on a temporary root, drops photos one at a time
(real photos from scikit-image's `skimage.data` where available, plus synthetic ones), and
prints, per photo, the seconds from the copy into the inbox to the published manifest, and
the per-stage times from the manifest. Usage:

    .venv/bin/python benchmarks/bench_daemon.py [--photos N] [--stability 1.0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.conftest import make_photo  # noqa: E402


def photos(n: int) -> list[tuple[str, bytes]]:
    out = []
    try:
        from skimage import data

        for name in ("coffee", "rocket"):
            buf = io.BytesIO()
            Image.fromarray(getattr(data, name)()).save(buf, "JPEG", quality=92)
            out.append((f"{name}.jpg", buf.getvalue()))
    except Exception as exc:  # noqa: BLE001 - the benchmark runs without scikit-image too
        print(f"# skimage photos unavailable: {exc}")
    seed = 0
    while len(out) < n:
        out.append((f"synthetic-{seed}.jpg", make_photo(seed, (512, 384))))
        seed += 1
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=4)
    parser.add_argument("--stability", type=float, default=1.0, help="watch.stability_seconds")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="glimpsed-bench-"))
    (root / "inbox").mkdir()
    (root / "outbox").mkdir()
    config = root / "glimpsed.yaml"
    config.write_text(yaml.safe_dump({"paths": {"root": str(root)}, "logging": {"format": "json"},
                                      "watch": {"stability_seconds": args.stability, "poll_interval": 0.2}}))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = open(root / "daemon.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "glimpsed", "run", "--config", str(config)], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, stability_seconds={args.stability}")
    print(f"{'photo':<22} {'pixels':>10} {'latency_s':>9}  stages (s)")
    try:
        for name, data in photos(args.photos):
            w, h = Image.open(io.BytesIO(data)).size
            t0 = time.monotonic()
            (root / "inbox" / name).write_bytes(data)
            manifest = root / "outbox" / Path(name).stem / "manifest.json"
            while not manifest.exists():
                if proc.poll() is not None:
                    raise SystemExit(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
                time.sleep(0.02)
            latency = time.monotonic() - t0
            stages = json.loads(manifest.read_text())["stages"]
            per_stage = " ".join(f"{s['name']}={s['duration_s']:.2f}" for s in stages)
            print(f"{name:<22} {w}x{h:<6} {latency:9.2f}  {per_stage}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    print(f"# latency includes watch.stability_seconds={args.stability}; results under {root}")


if __name__ == "__main__":
    main()
