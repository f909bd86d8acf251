"""`worker.backend: ray`: the daemon's workers are Ray actors, one per GPU, on any host of a Ray cluster.

The head (this daemon) keeps everything that touches files and the store: intake, the SQLite queue,
publishing. For each actor it runs one dispatcher thread with an ordinary `Worker` whose pipeline is
a `RemotePipeline`: the thread claims a job only when its actor answers (idle and alive), renews the
lease while the job runs, and applies the daemon's own rules to how the job ended:

* an error raised by the pipeline comes back as itself (bad input / transient / crash, as locally);
* the actor or its node lost mid-job → `WorkerLost`: the job is requeued with an attempt spent, Ray
  restarts the actor (`max_restarts=-1`; Ray's own task retries are off);
* `glimpsed cancel` → `ray.cancel`, which the actor sees at its next stage boundary;
* `jobs.timeout_seconds` passed → the actor is killed (and restarted by Ray), the job fails as JobTimeout.

Each finished stage's files stream back and are written into ``work/<job>/<stage>/`` on the head, so a job
retried on another actor resumes at its first unfinished stage. SQLite stays the only queue of truth.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.errors import ConfigError, WorkerLost
from glimpsed.ray_actor import PipelineActor, finished_stages, identity, pack, unpack

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.25  # how often a running job's dispatcher looks at cancel, stop and the timeout
READY_TIMEOUT = 5.0  # how long an idle dispatcher waits for its actor to answer before it claims a job
IDLE_SECONDS = 0.5  # between looks for a due job


def connect(config: DaemonConfig) -> None:
    """Join the cluster at `worker.ray.address` (null: start a private Ray instance on this host), with Ray's
    token authentication on (`worker.ray.token_file`, else Ray's default token file).

    Raises:
        ConfigError: the cluster cannot be joined (the message says what to check).
    """
    settings = config.worker.ray
    os.environ["RAY_AUTH_MODE"] = "token"             # read once, when Ray is imported: set before
    if settings.token_file is not None:
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(Path(settings.token_file).expanduser())
    import ray

    if ray.is_initialized():
        return
    extra = {} if settings.address else {"include_dashboard": False}
    try:
        ray.init(address=settings.address, namespace=settings.namespace, log_to_driver=False, **extra)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        where = settings.address or "a private instance"
        raise ConfigError("worker.ray.address", f"cannot join the Ray cluster at {where} ({type(exc).__name__}: "
                                                f"{str(exc).splitlines()[0] if str(exc) else ''}); check that "
                                                "`ray start --head` runs there and that worker.ray.token_file "
                                                "holds the head's token") from exc


@dataclass
class ActorSlot:
    """One actor and what the head knows of it (for `status`).

    Attributes:
        state: "starting", "idle", "running", "waiting" (restarting, or no GPU free for it) or "refused".
        problem: why it is waiting or refused.
        where: the actor's `describe()` (host, GPUs, device, pid).
    """

    name: str
    actor: Any
    state: str = "starting"
    problem: str = ""
    where: dict[str, Any] = field(default_factory=dict)
    job: str | None = None
    stage: str | None = None
    thread: threading.Thread | None = None

    def line(self) -> str:
        """E.g. "w0 on gpu-2 (GPU 0): running 3f2a… (fit)"."""
        gpus = self.where.get("gpus")
        place = f" on {self.where['host']}" + (f" (GPU {','.join(gpus)})" if gpus else "") if self.where else ""
        doing = f"running {self.job} ({self.stage or 'starting'})" if self.state == "running" else self.state
        return f"{self.name}{place}: {doing}" + (f" - {self.problem}" if self.problem else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "state": self.state, "problem": self.problem, "job": self.job,
                "stage": self.stage, **{k: self.where.get(k) for k in ("host", "node_id", "gpus", "device", "pid")}}


class RemotePipeline:
    """What a `Worker` calls `pipeline.run` on: runs the job on its slot's actor and streams the results back.

    Args:
        slot: the actor.
        timeout_seconds: past this, the actor is killed (Ray restarts it) and the job stops.
    """

    def __init__(self, slot: ActorSlot, timeout_seconds: float) -> None:
        self.slot = slot
        self.timeout_seconds = timeout_seconds

    def run(self, input_path: Path, workdir: Path, on_progress: Callable[[str, float, str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Any:
        """Send the job folder's input and finished stages, run it remotely, write back each stage; the result."""
        import ray
        from ray.exceptions import RayActorError, TaskCancelledError

        from ai_modules.errors import PipelineStopped
        from ai_modules.records import PipelineResult

        if not input_path.is_file():
            from ai_modules.errors import InputError

            raise InputError(f"input {str(input_path)!r} does not exist or is not a file")
        files = pack(workdir, only={"input"} | finished_stages(workdir))
        stream = self.slot.actor.run.remote(workdir.name, files)
        deadline = time.monotonic() + self.timeout_seconds
        stage, cancelled = "segment", False
        while True:
            if time.monotonic() > deadline:
                log.error("actor_killed", actor=self.slot.name, reason="job overran jobs.timeout_seconds")
                ray.kill(self.slot.actor, no_restart=False)
                if should_stop is not None:
                    should_stop()                            # lets the worker see its own timeout
                raise PipelineStopped(stage)
            if not cancelled and should_stop is not None and should_stop():
                ray.cancel(stream)                           # the actor stops at its next stage boundary
                cancelled = True
            ready, _ = ray.wait([stream], timeout=POLL_SECONDS)
            if not ready:
                continue
            try:
                item = ray.get(next(stream))
            except StopIteration:
                raise WorkerLost(f"actor {self.slot.name} ended the job without a result") from None
            except TaskCancelledError:
                raise PipelineStopped(stage) from None
            except (RayActorError, ray.exceptions.NodeDiedError, ray.exceptions.ObjectLostError) as exc:
                raise WorkerLost(f"actor {self.slot.name} on {self.slot.where.get('host', '?')} was lost "
                                 f"({type(exc).__name__})") from exc
            kind = item[0]
            if kind == "progress":
                stage = item[1]
                if on_progress is not None:
                    on_progress(item[1], item[2], item[3])
            elif kind == "stage":
                target = workdir / item[1]
                shutil.rmtree(target, ignore_errors=True)
                unpack(item[2], target)
            elif kind == "error":
                raise item[1]
            elif kind == "result":
                data = dict(item[1], outputs={k: str(workdir / rel) for k, rel in item[2].items()})
                where = self.slot.where
                data["device"] = (f"{data['device']} on {where.get('host', '?')} (Ray node "
                                  f"{str(where.get('node_id', '?'))[:8]}, actor {self.slot.name}"
                                  + (f", GPU {','.join(where['gpus'])})" if where.get("gpus") else ")"))
                return PipelineResult.from_dict(data)


class RayWorkers:
    """The daemon's actors and their dispatcher threads.

    Args:
        config: the daemon's config (`worker.ray` says where and how many).
        head_identity: what every actor must match (default: this host's `identity`); tests pass another.
    """

    def __init__(self, config: DaemonConfig, head_identity: dict[str, Any] | None = None) -> None:
        self.config = config
        self.head_identity = head_identity if head_identity is not None else identity(config.path("models"))
        self.slots: list[ActorSlot] = []
        self.stop_event = threading.Event()
        self._actor_class: Any = None

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Connect, then start the actors the cluster has room for and a dispatcher thread for each."""
        connect(self.config)                              # first: it sets Ray's token settings before the import
        import ray

        settings = self.config.worker.ray
        options: dict[str, Any] = {"num_gpus": settings.gpus_per_worker, "max_restarts": -1, "max_task_retries": 0}
        if settings.resources:
            options["resources"] = dict(settings.resources)
        self._actor_class = ray.remote(**options)(PipelineActor)
        self.supervise()

    def wanted(self) -> int:
        """How many actors to keep: `worker.ray.workers`, or one per `gpus_per_worker` GPUs in the cluster."""
        import ray

        settings = self.config.worker.ray
        if settings.workers != "auto":
            return int(settings.workers)
        return int(ray.cluster_resources().get("GPU", 0) // settings.gpus_per_worker)

    def supervise(self) -> None:
        """Start actors for GPUs that joined the cluster (`workers: auto`) and log actors that cannot start."""
        for _ in range(max(0, self.wanted() - len(self.slots))):
            self._add_slot()

    def _add_slot(self) -> None:
        models = self.config.worker.ray.models_dir or self.config.path("models")
        actor = self._actor_class.remote(self.config.pipeline, self.head_identity, str(models),
                                         self.config.worker.pipeline, self.config.worker.vram_budget_bytes())
        slot = ActorSlot(f"w{len(self.slots)}", actor)
        slot.thread = threading.Thread(target=self._serve, args=(slot,), name=f"ray-{slot.name}", daemon=True)
        self.slots.append(slot)
        slot.thread.start()
        log.info("actor_started", actor=slot.name)

    def stop(self, now: bool = False) -> None:
        """Stop the dispatchers (their running jobs go back to the queue at the next stage boundary, or at once
        with `now`), then leave the cluster (our actors end with us)."""
        import ray

        self.stop_event.set()
        for slot in self.slots:
            if now and slot.state == "running":
                ray.kill(slot.actor, no_restart=True)
        for slot in self.slots:
            if slot.thread is not None:
                slot.thread.join()
        ray.shutdown()

    def alive(self) -> bool:
        """Every dispatcher thread runs (a refused actor's thread ends, and is reported, not restarted)."""
        return all(s.thread is not None and (s.thread.is_alive() or s.state == "refused") for s in self.slots)

    # -- what `status` shows -----------------------------------------------------------------

    def worker_lines(self) -> list[str]:
        """One line per actor."""
        return [slot.line() for slot in self.slots]

    def cluster(self) -> dict[str, Any]:
        """The cluster as `status` shows it: its nodes with their GPUs, and each actor with its job."""
        import ray

        try:
            nodes = [{"host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
                      "node_id": n.get("NodeID"), "alive": bool(n.get("Alive")),
                      "gpus": n.get("Resources", {}).get("GPU", 0), "cpus": n.get("Resources", {}).get("CPU", 0)}
                     for n in ray.nodes()]
        except Exception as exc:  # noqa: BLE001 - the head lost the cluster: say so, do not stop the heartbeat
            log.warning("cluster_unreachable", error=f"{type(exc).__name__}: {exc}")
            nodes = []
        return {"backend": "ray", "address": self.config.worker.ray.address or "private instance on the head",
                "nodes": nodes, "actors": [s.to_dict() for s in self.slots]}

    # -- one dispatcher thread per actor ------------------------------------------------------

    def _serve(self, slot: ActorSlot) -> None:
        from glimpsed.store import JobStore
        from glimpsed.worker import Worker

        structlog.contextvars.bind_contextvars(worker=f"ray:{slot.name}")
        store = JobStore(self.config.path("db"), migrate=False)

        def listener(job_id: str, stage: str, fraction: float, message: str) -> None:
            slot.state, slot.job, slot.stage = "running", job_id, stage

        worker = Worker(self.config, store, device=f"ray:{slot.name}", stop=self.stop_event,
                        pipeline=RemotePipeline(slot, self.config.jobs.timeout_seconds), listener=listener)
        try:
            while not self.stop_event.is_set():
                if not self._ready(slot):
                    if slot.state == "refused":
                        return
                    self.stop_event.wait(IDLE_SECONDS)
                    continue
                try:
                    ran = worker.loop()
                except Exception:  # noqa: BLE001 - e.g. the store locked past busy_timeout: the lease recovers it
                    log.exception("dispatch_failed", actor=slot.name)
                    ran = None
                lost = ran is not None and ran.error_type == "WorkerLost" and ran.state == "queued"
                slot.state, slot.job, slot.stage = ("waiting" if lost else "idle"), None, None
                slot.problem = "lost with its last job; Ray restarts it" if lost else ""
                if ran is None:
                    self.stop_event.wait(IDLE_SECONDS)
        finally:
            store.close()

    def _ready(self, slot: ActorSlot) -> bool:
        """Ask the actor where it runs; False (with `slot.state` saying why) while it cannot take a job."""
        import ray
        from ray.exceptions import ActorDiedError, GetTimeoutError, RayActorError

        try:
            slot.where = ray.get(slot.actor.describe.remote(), timeout=READY_TIMEOUT)
        except ActorDiedError as exc:
            if exc.actor_init_failed:
                why = [line for line in (exc.error_msg or "").splitlines() if line.strip()]
                # Its last line: "glimpsed.ray_actor.VersionMismatch: <why>" -> "VersionMismatch: <why>".
                slot.state, slot.problem = "refused", re.sub(r"^[\w.]+\.(\w+): ", r"\1: ", why[-1] if why else str(exc))
                log.error("actor_refused", actor=slot.name, reason=slot.problem)
                return False
            slot.state, slot.problem = "waiting", f"actor died ({type(exc).__name__}); Ray restarts it"
            return False
        except (GetTimeoutError, RayActorError) as exc:
            slot.state = "waiting"
            slot.problem = ("no free GPU for it yet, or it is still loading" if isinstance(exc, GetTimeoutError)
                            else f"restarting ({type(exc).__name__})")
            return False
        slot.state, slot.problem = "idle", ""
        return True
