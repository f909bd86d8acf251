"""The pipeline actor of `worker.backend: ray`: one per GPU, on any host of a Ray cluster.

An actor holds one long-lived pipeline (its models stay loaded between jobs) and runs jobs in a
scratch folder of its own host. It never opens the store, the inbox or the outbox: the daemon on the
head sends it a job's input and the stages already done (so a job retried elsewhere resumes at its
first unfinished stage), and the actor streams back progress, each finished stage's files and the
result. Everything that crosses is plain data (`Packed`: relative path -> bytes).

This module is imported on the GPU hosts; it imports Ray only inside the actor's methods.
"""

from __future__ import annotations

import os
import pickle
import queue
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from glimpsed import __version__

Packed = dict[str, bytes]
DONE = "done.json"  # a stage folder is whole when this is there (`ai_modules.pipeline` writes it last)
POLL_SECONDS = 0.2  # how often a running job looks at Ray's cancel flag


class VersionMismatch(RuntimeError):
    """The actor's glimpsed, pipeline or model files differ from the head's: it refuses to start."""


def identity(models_dir: Path | None) -> dict[str, Any]:
    """What must be the same on the head and on every actor's host: the glimpsed and pipeline versions and,
    per model present, its files' sizes (and the sha256s its lock file recorded at the pull)."""
    from ai_modules.models import MODEL_BY_NAME, model_inventory, required_files
    from ai_modules.pipeline import PIPELINE_VERSION

    lock: dict[str, Any] = {}
    if models_dir is not None and (Path(models_dir) / "models.lock.json").is_file():
        import json

        try:
            lock = json.loads((Path(models_dir) / "models.lock.json").read_text()).get("models", {})
        except (OSError, ValueError):
            lock = {}
    models = {}
    for status in model_inventory(Path(models_dir) if models_dir is not None else None, env={}):
        if status.present and status.path is not None:
            spec = MODEL_BY_NAME[status.name]
            files = {str(f.relative_to(status.path)) if spec.kind == "dir" else "": f.stat().st_size
                     for f in required_files(spec, status.path) if f is not None}
            hashes = {k: v.get("sha256") for k, v in lock.get(status.name, {}).get("files", {}).items()}
            models[status.name] = {"files": files, "sha256": hashes}
    return {"glimpsed": __version__, "pipeline": PIPELINE_VERSION, "models": models}


def differences(head: dict[str, Any], here: dict[str, Any]) -> list[str]:
    """What differs between the head's `identity` and this host's, in words (empty: they agree)."""
    out = [f"{what} {here[key]} here, {head[key]} on the head"
           for key, what in (("glimpsed", "glimpsed"), ("pipeline", "pipeline version")) if head[key] != here[key]]
    for name in sorted(set(head["models"]) | set(here["models"])):
        mine, theirs = here["models"].get(name), head["models"].get(name)
        if mine is None or theirs is None:
            out.append(f"model {name} {'missing here' if mine is None else 'missing on the head'}")
        elif mine["files"] != theirs["files"]:
            out.append(f"model {name}: other file sizes here")
        elif any(theirs["sha256"].get(f) not in (None, sha) for f, sha in mine["sha256"].items() if sha):
            out.append(f"model {name}: other sha256 here (models.lock.json)")
    return out


def pack(folder: Path, only: set[str] | None = None) -> Packed:
    """Every file under `folder` (or under its sub-folders named in `only`) as relative path -> bytes."""
    out: Packed = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not path.name.startswith(".") and (only is None or rel.parts[0] in only):
            out[rel.as_posix()] = path.read_bytes()
    return out


def unpack(files: Packed, folder: Path) -> None:
    """Write `files` under `folder`, each atomically, `done.json` files last (a stage counts as finished only
    once all its files are there)."""
    from ai_modules.fileio import write_bytes

    for rel in sorted(files, key=lambda r: (Path(r).name == DONE, r)):
        target = folder / rel
        if not target.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"refusing to write {rel!r} outside {folder}")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(target, files[rel])


def finished_stages(workdir: Path) -> set[str]:
    """The stage folders of `workdir` that hold their `done.json`."""
    return {p.parent.name for p in workdir.glob(f"*/{DONE}")}


class PipelineActor:
    """The body of the Ray actor (`ray.remote(...)(PipelineActor)` on the head; see `ray_workers`).

    Args:
        settings: the head's `pipeline:` settings.
        head: the head's `identity`; a host whose own differs refuses to start (`VersionMismatch`).
        models_dir: where this host keeps the models.
        entry: the pipeline factory (`worker.pipeline`).
        vram_budget: bytes of GPU memory the models may keep (None: measured).
    """

    def __init__(self, settings: dict[str, Any], head: dict[str, Any], models_dir: str | None, entry: str,
                 vram_budget: int | None) -> None:
        problems = differences(head, identity(Path(models_dir) if models_dir else None))
        if problems:
            raise VersionMismatch(f"{socket.gethostname()}: " + "; ".join(problems)
                                  + ": install the head's glimpsed and copy its models (`glimpsed models verify`)")
        from ai_modules.pipeline import resolve_device
        from glimpsed.worker import load_pipeline

        self.device = resolve_device("auto")
        self.pipeline = load_pipeline(entry)(settings, device=self.device,
                                             models_dir=Path(models_dir) if models_dir else None,
                                             vram_budget=vram_budget)
        self.scratch = Path(tempfile.mkdtemp(prefix="glimpsed-actor-"))

    def describe(self) -> dict[str, Any]:
        """Where this actor runs: host, node id, GPUs, device, pid."""
        import ray

        context = ray.get_runtime_context()
        return {"host": socket.gethostname(), "node_id": context.get_node_id(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "device": self.device, "pid": os.getpid()}

    def run(self, job_id: str, files: Packed) -> Iterator[tuple[Any, ...]]:
        """Run one job (a Ray streaming generator). `files`: the job folder's ``input/`` and finished stages.

        Yields:
            ("progress", stage, fraction, message); ("stage", stage, Packed) once a stage is done;
            finally ("result", result dict, {kind: path under the job folder}) or ("error", exception).
        """
        import ray

        work = self.scratch / job_id
        shutil.rmtree(work, ignore_errors=True)
        unpack(files, work)
        sent = finished_stages(work)                      # the head has these already
        events: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        stop = threading.Event()

        def on_progress(stage: str, fraction: float, message: str) -> None:
            events.put(("progress", stage, fraction, message))
            if fraction >= 1.0 and stage not in sent and (work / stage / DONE).is_file():
                sent.add(stage)
                events.put(("stage", stage, pack(work / stage)))

        def job() -> None:
            try:
                result = self.pipeline.run(work / "input" / "image.png", work, on_progress=on_progress,
                                           should_stop=stop.is_set)
                events.put(("result", result.to_dict(),
                            {kind: Path(p).relative_to(work).as_posix() for kind, p in result.outputs.items()}))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the head, which decides
                events.put(("error", _portable(exc)))
            finally:
                events.put(None)

        runner = threading.Thread(target=job, name=f"job-{job_id}", daemon=True)
        runner.start()
        try:
            while True:
                try:
                    item = events.get(timeout=POLL_SECONDS)
                except queue.Empty:
                    if ray.get_runtime_context().is_canceled():
                        stop.set()                        # seen by the pipeline at its next stage boundary
                    continue
                if item is None:
                    return
                yield item
        finally:
            stop.set()
            runner.join()
            shutil.rmtree(work, ignore_errors=True)


class RemoteError(RuntimeError):
    """An error from an actor that could not travel as itself (its class cannot be pickled)."""


def _portable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # noqa: BLE001 - any pickling failure: send its name and message instead
        return RemoteError(f"{type(exc).__name__}: {exc}")
