"""The daemon as a real subprocess against real folders and a real SQLite file."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from glimpsed.store import JobStore

REPO = Path(__file__).resolve().parents[2]


def photo_array(seed: int = 0, size: tuple[int, int] = (320, 240)) -> np.ndarray:
    """[H,W,3] uint8: a shaded orange ellipse with a blue stripe on a plain, slightly noisy grey backdrop,
    which the border-colour segmentation finds."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.full((h, w, 3), 205.0, np.float32) + rng.normal(0, 2.0, (h, w, 3))
    cx, cy, rx, ry = w * 0.5, h * 0.52, w * 0.22, h * 0.33
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    shade = np.clip(1.1 - 0.6 * ((xx - cx + rx * 0.4) / rx) ** 2, 0.3, 1.0)
    base = np.array([200, 90 + 10 * seed % 60, 40], np.float32)
    img[inside] = base[None, :] * shade[inside][:, None]
    stripe = inside & (np.abs(yy - cy) < h * 0.04)
    img[stripe] = [40, 60, 160]
    return np.clip(img, 0, 255).astype(np.uint8)


def make_photo(seed: int = 0, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG of :func:`photo_array`."""
    buf = io.BytesIO()
    Image.fromarray(photo_array(seed, size)).save(buf, "JPEG", quality=92)
    return buf.getvalue()


class DaemonProcess:
    """Starts `glimpsed run` in its own process group; waits by polling, never by fixed sleeps."""

    def __init__(self, root: Path, overrides: dict, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.inbox, self.outbox = root / "inbox", root / "outbox"
        self.inbox.mkdir(exist_ok=True)
        self.outbox.mkdir(exist_ok=True)
        config = {
            "paths": {"root": str(root)},
            "watch": {"poll_interval": 0.2, "stability_seconds": 0.6, "rescan_interval": 2.0},
            "jobs": {"lease_seconds": 6.0, "retry_backoff_seconds": 0.5},
            "logging": {"format": "json"},
            "web": {"port": 0},  # any free port: daemons of other tests (or a real one) may hold 8765
            # a smaller cutout, relief and mesh and fewer rendered views keep each job about 2 s on a
            # 2-core CPU; the daemon's behaviour, not the export quality, is under test here
            "pipeline": {"segment": {"size": 128, "object_size": 100},
                         "multiview": {"view_size": 64, "relief_size": 48},
                         "reconstruct": {"iterations": 10, "size": 64},
                         "export": {"mesh_views": 4, "mesh_view_size": 64, "mesh_voxels": 48, "mesh_max_faces": 5000,
                                    "turntable_frames": 4, "turntable_size": 64, "preview_size": 64}},
        }
        for section, values in overrides.items():
            config.setdefault(section, {}).update(values)
        self.config_path = root / "glimpsed.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env.pop("NOTIFY_SOCKET", None)
        self.proc: subprocess.Popen | None = None
        self.log_path = root / "daemon.log"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "glimpsed", *args, "--config", str(self.config_path)],
                              env=self.env, capture_output=True, text=True, timeout=240, check=check)

    def start(self) -> "DaemonProcess":
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "glimpsed", "run", "--config", str(self.config_path)],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wait_for(lambda: self.store().daemon_state() is not None and
                      self.store().daemon_state()["pid"] == self.proc.pid, "the daemon's first heartbeat", 60)
        return self

    def store(self) -> JobStore:
        return JobStore(self.root / "glimpsed.db")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def kill_group(self) -> None:
        """kill -9 the daemon and its workers, as a power cut or the OOM killer would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
                raise
        return self.proc.returncode if self.proc else 0

    def wait_for(self, predicate: Callable[[], object], what: str, timeout: float = 90) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = predicate()
            except Exception:  # noqa: BLE001 - the store may not exist yet
                value = None
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) while waiting for {what}:\n"
                                     + self.log_path.read_text()[-4000:])
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; log tail:\n" + self.log_path.read_text()[-4000:])

    def jobs(self, state: str | None = None):
        store = self.store()
        try:
            return store.jobs(state, limit=100_000)
        finally:
            store.close()

    def wait_jobs(self, state: str, n: int, timeout: float = 120):
        return self.wait_for(lambda: len(self.jobs(state)) >= n and self.jobs(state), f"{n} {state} job(s)", timeout)

    def published(self) -> list[Path]:
        return sorted(p for p in self.outbox.rglob("manifest.json") if ".staging-" not in str(p))


@pytest.fixture
def photo() -> Callable[[int], bytes]:
    return make_photo


@contextlib.contextmanager
def daemons(tmp_path: Path, defaults: dict | None = None):
    """Yields start(overrides, env, run=True, root=None) -> DaemonProcess; every daemon started is stopped after."""
    started: list[DaemonProcess] = []

    def start(overrides: dict | None = None, env: dict | None = None, run: bool = True,
              root: Path | None = None) -> DaemonProcess:
        merged = {section: dict(values) for section, values in (defaults or {}).items()}
        for section, values in (overrides or {}).items():
            merged.setdefault(section, {}).update(values)
        d = DaemonProcess(root or tmp_path, merged, env)
        started.append(d)
        return d.start() if run else d

    try:
        yield start
    finally:
        for d in started:
            if d.alive():
                try:
                    d.stop(30)
                except subprocess.TimeoutExpired:
                    pass


@pytest.fixture
def start_daemon(tmp_path):
    """start_daemon(**overrides) -> a running DaemonProcess; always stopped at the end of the test."""
    with daemons(tmp_path) as start:
        yield start
