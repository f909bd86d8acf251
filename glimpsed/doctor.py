"""`glimpsed doctor`: what this machine can do and what is wrong with the set-up, one check per line."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from glimpsed.config import DaemonConfig
from glimpsed.fsinfo import choose_watch_mode, free_bytes, is_network_fs, mount_for
from glimpsed.watcher import check_inbox

MIN_FREE_BYTES = 2 * 1024**3


@dataclass
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


def run_checks(config: DaemonConfig) -> list[Check]:
    """All checks, in the order a user would fix them."""
    checks = [Check("python", "ok" if sys.version_info >= (3, 10) else "fail",
                    f"{platform.python_version()} ({sys.executable})")]
    checks += _torch_checks()
    checks += _model_checks(config)
    checks += _folder_checks(config)
    if config.worker.backend == "ray":
        checks += _ray_checks(config)
    return checks


def _ray_checks(config: DaemonConfig) -> list[Check]:
    """Ray installed, its cluster's nodes and GPUs (when an address is set), and the daemon's actors."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("ray")      # not imported yet: `connect` sets its token first
    except importlib.metadata.PackageNotFoundError:
        return [Check("ray", "fail", "not installed: pip install 'glimpsed[ray]' (or set worker.backend: local)")]
    checks = [Check("ray", "ok", f"{version}; token authentication on"
                    + (f" ({config.worker.ray.token_file})" if config.worker.ray.token_file else ""))]
    if config.worker.ray.address:
        from glimpsed.ray_workers import connect

        try:
            connect(config)
            import ray

            nodes = [n for n in ray.nodes() if n.get("Alive")]
            gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
            checks.append(Check("ray cluster", "ok" if gpus else "warn",
                                f"{config.worker.ray.address}: {len(nodes)} node(s), {gpus:g} GPU(s)"
                                + ("" if gpus else "; start `ray start --address=...` on each GPU host")))
        except Exception as exc:  # noqa: BLE001 - any failure to join is reported, not raised
            checks.append(Check("ray cluster", "fail", f"cannot join {config.worker.ray.address}: "
                                f"{type(exc).__name__}: {str(exc)[:200]}"))
        finally:
            if "ray" in sys.modules:
                sys.modules["ray"].shutdown()
    from glimpsed.store import JobStore

    store = JobStore(config.path("db"))
    daemon = next((d for d in store.daemons() if d["fresh"] and d.get("cluster")), None)
    store.close()
    if daemon is None:
        checks.append(Check("ray actors", "warn", "no running daemon with worker.backend: ray on this store"))
    else:
        for actor in daemon["cluster"]["actors"]:
            checks.append(Check(f"actor {actor['name']}", "fail" if actor["state"] == "refused" else "ok",
                                f"{actor['state']} on {actor.get('host') or '?'}"
                                + (f": {actor['problem']}" if actor.get("problem") else "")))
    return checks


def _torch_checks() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", "fail", f"not importable: {exc}; run `make install`")]
    checks = [Check("torch", "ok", torch.__version__)]
    if not torch.cuda.is_available():
        checks.append(Check("cuda", "warn", "no CUDA device: jobs run on the CPU (slower; embedded backends only"
                                            " are practical)"))
        gsplat = _gsplat_version()
        checks.append(Check("gsplat", "warn" if gsplat else "fail",
                            f"{gsplat} installed; its CUDA kernels need a GPU, the CPU renderer is used"
                            if gsplat else "not installed; `pip install gsplat`"))
        return checks
    for i in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(i)
        checks.append(Check(f"cuda:{i}", "ok", f"{props.name}, {props.total_memory / 1024**3:.1f} GiB, "
                                                 f"compute {props.major}.{props.minor}, CUDA {torch.version.cuda}"))
    checks.append(_gsplat_compiles())
    return checks


def _gsplat_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("gsplat")
    except Exception:  # noqa: BLE001 - any metadata trouble means "not usable"
        return None


def _gsplat_compiles() -> Check:
    """Render one Gaussian with gsplat: the first call JIT-compiles its CUDA kernels (about a minute)."""
    try:
        import torch
        from gsplat import rasterization

        dev = "cuda"
        viewmat = torch.eye(4, device=dev)
        viewmat[2, 3] = 2.0  # one Gaussian at the origin, 2 units in front of the camera
        _, alphas, _ = rasterization(
            means=torch.zeros(1, 3, device=dev), quats=torch.tensor([[1.0, 0, 0, 0]], device=dev),
            scales=torch.full((1, 3), 0.1, device=dev), opacities=torch.ones(1, device=dev),
            colors=torch.ones(1, 3, device=dev), viewmats=viewmat[None],
            Ks=torch.tensor([[[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]]], device=dev), width=32, height=32)
        torch.cuda.synchronize()
        return Check("gsplat", "ok", f"{_gsplat_version()}: CUDA rasterizer works (peak alpha "
                                     f"{float(alphas.max()):.2f})")
    except Exception as exc:  # noqa: BLE001 - report whatever the build or the kernel says
        return Check("gsplat", "fail", f"CUDA rasterizer unusable: {type(exc).__name__}: {str(exc)[:200]}; "
                                       "check nvcc, a C++ compiler and TORCH_EXTENSIONS_DIR write access")


def _model_checks(config: DaemonConfig) -> list[Check]:
    from ai_modules.models import model_inventory

    checks = []
    for m in model_inventory(config.path("models")):
        info = m.to_dict() if hasattr(m, "to_dict") else dict(m.__dict__)
        present = bool(info.get("present"))
        checks.append(Check(f"model {info.get('stage')}/{info.get('backend')}", "ok" if present else "warn",
                            f"{'present' if present else 'missing (the embedded backend is used)'}: {info.get('path')}"))
    return checks


def _fs_name(path: Path) -> str:
    mount = mount_for(path)
    return f"{mount.fs_type} at {mount.mount_point}" if mount else "an unknown filesystem"


def _folder_checks(config: DaemonConfig) -> list[Check]:
    checks = []
    inbox = config.path("inbox")
    ok, reason = check_inbox(inbox, config.watch.sentinel)
    checks.append(Check("inbox", "ok" if ok else "fail", f"{inbox}" if ok else reason))
    if inbox.exists():
        _, why = choose_watch_mode(inbox, config.watch.mode)
        checks.append(Check("inbox filesystem", "ok", f"{_fs_name(inbox)}; watching: {why}"))
        if config.watch.sentinel:
            checks.append(Check("sentinel", "ok" if ok else "fail", f"{config.watch.sentinel} present" if ok else reason))
        else:
            checks.append(Check("sentinel", "warn" if is_network_fs(inbox) else "ok", "not configured; on a share,"
                                " set watch.sentinel so an unmounted share never looks like an empty inbox"))
    for name in ("outbox", "work", "archive", "failed"):
        path = config.path(name)
        writable = path.is_dir() and os.access(path, os.W_OK | os.X_OK)
        status = "ok" if writable else ("fail" if name == "outbox" else "warn")
        detail = f"{path} writable" if writable else f"{path} missing or not writable" + (
            " (created at start)" if name != "outbox" else "")
        checks.append(Check(name, status, detail))
    db = config.path("db")
    parent = next((p for p in [db.parent, *db.parents] if p.exists()), Path("/"))
    checks.append(Check("job store", "fail" if is_network_fs(parent) else "ok",
                        f"{db} on {_fs_name(parent)}" + (" (network filesystem: not allowed)"
                                                         if is_network_fs(parent) else "")))
    for name in ("outbox", "work"):
        path = config.path(name)
        existing = next((p for p in [path, *path.parents] if p.exists()), Path("/"))
        free = free_bytes(existing)
        checks.append(Check(f"free disk ({name})", "ok" if free >= MIN_FREE_BYTES else "warn",
                            f"{free / 1024**3:.1f} GiB free at {existing}"))
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists():
        checks.append(Check("gpu devices", "warn", "no NVIDIA driver found (/dev/nvidiactl, nvidia-smi)"))
    return checks
