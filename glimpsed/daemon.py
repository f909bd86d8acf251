"""Daemon: intake in the main process, one worker process per device (or, with `worker.backend: ray`, one Ray
actor per GPU of a cluster, see `ray_workers`), signals, health, systemd.

Signal handlers only set flags; the main loop does the stopping. The first SIGTERM or SIGINT
stops intake and lets each worker finish its current stage (the job goes back to the queue
and resumes there next time); a second one stops the workers at once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from glimpsed.config import DaemonConfig
from glimpsed.errors import JobNotFound
from glimpsed.intake import Intake
from glimpsed.logs import configure_logging
from glimpsed.notify import notify, watchdog_interval
from glimpsed.outbox import check_outbox, clean_staging
from glimpsed.store import Job, JobStore

log = structlog.get_logger(__name__)

STEP_SECONDS = 0.25  # main loop period: intake poll, signals
HOUSEKEEPING_SECONDS = 2.0  # lease expiry, worker health, heartbeat, STATUS=
WORKER_IDLE_SECONDS = 0.5  # how often an idle worker looks for a due job
HARD_TIMEOUT_GRACE = 60.0  # seconds past jobs.timeout_seconds before a stuck worker is killed
RESTART_BACKOFF = 5.0


def resolve_devices(requested: tuple[str, ...]) -> list[str]:
    """`auto` -> one device per visible CUDA GPU, else ["cpu"]. torch is imported only on GPU machines."""
    devices: list[str] = []
    for device in requested:
        if device != "auto":
            devices.append(device)
        elif Path("/dev/nvidiactl").exists():
            import torch

            count = torch.cuda.device_count()
            devices.extend([f"cuda:{i}" for i in range(count)] or ["cpu"])
        else:
            devices.append("cpu")
    return devices


def pid_alive(pid: int) -> bool:
    """True while a process of this host runs; a zombie (dead, not yet reaped by its parent) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]  # the name in parentheses may hold spaces
    except (OSError, IndexError):
        return True  # no /proc (not Linux): the signal test is all there is
    return state not in (b"Z", b"X")


def recover_lost_jobs(config: DaemonConfig, store: JobStore, jobs: list[Job], why: str) -> None:
    """Log the jobs that dead workers left behind; the ones out of attempts go to failed/ with error.json."""
    from glimpsed.worker import set_aside

    for job in jobs:
        if job.state == "failed":
            log.error("job_failed", job_id=job.id, error=f"{job.error_type}: {job.error_message}")
            set_aside(config, store, job, job.error_type or "WorkerLost", job.error_message or why, job.stage,
                      time.time())
        else:
            log.warning("job_requeued", job_id=job.id, reason=why, attempts=job.attempts)


def recover_dead_local(config: DaemonConfig, store: JobStore, why: str, backoff: bool = True) -> None:
    """Requeue (or fail, when out of attempts) the jobs of this host's dead workers. With `backoff` the
    next attempt waits `jobs.retry_backoff_seconds` (doubling), so a photo that kills its worker does not
    do so in a tight loop; after a restart of the whole daemon (a power cut) jobs resume at once."""
    jobs = store.recover_dead_local(socket.gethostname(), pid_alive,
                                    backoff=config.jobs.retry_backoff_seconds if backoff else 0.0)
    recover_lost_jobs(config, store, jobs, why)


def staging_in_use(store: JobStore, job_id: str) -> bool:
    """True while a job runs under a worker that may still publish into its staging folder."""
    try:
        job = store.get(job_id)
    except JobNotFound:
        return False
    if job.state != "running" or not job.lease_owner:
        return False
    host, _, pid = job.lease_owner.rpartition(":")
    if host == socket.gethostname():
        return pid.isdigit() and pid_alive(int(pid))
    return (job.lease_expires_at or 0) > time.time()


def prepare(config: DaemonConfig) -> JobStore:
    """Open the store and clean up after a crash: jobs of dead local workers, then their staging folders
    (a staging folder of a job that runs elsewhere — another instance, a `submit` — is left alone)."""
    store = JobStore(config.path("db"))
    recover_dead_local(config, store, "its worker is gone (crash or kill)", backoff=False)
    for path in clean_staging(config.path("outbox"), lambda job_id: staging_in_use(store, job_id)):
        log.info("staging_removed", path=str(path))
    return store


def worker_main(config: DaemonConfig, device: str, parent_pid: int) -> None:
    """Entry of a worker process: loop over due jobs until SIGTERM or until the daemon is gone.

    SIGTERM (from the daemon, or from a `kill` of the process group) means: finish the current
    stage, put the job back in the queue, exit.
    """
    from glimpsed.worker import Worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C reaches the daemon, which decides
    local_stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: local_stop.set())
    configure_logging(config.logging.format, config.logging.level)
    structlog.contextvars.bind_contextvars(worker=f"{device}:{os.getpid()}")
    store = JobStore(config.path("db"), migrate=False)
    worker = Worker(config, store, device=device, stop=local_stop, parent_pid=parent_pid)
    log.info("worker_started", device=device)
    while not local_stop.is_set() and os.getppid() == parent_pid:
        try:
            ran = worker.loop()
        except Exception:  # noqa: BLE001 - e.g. the store locked past busy_timeout: the lease recovers the job
            log.exception("worker_step_failed")
            ran = None
            local_stop.wait(WORKER_IDLE_SECONDS * 10)
        if ran is None:
            local_stop.wait(WORKER_IDLE_SECONDS)
    worker.close()
    store.close()
    log.info("worker_stopped", device=device)


@dataclass
class _Slot:
    device: str
    process: Any = None
    started_at: float = 0.0
    restarts: int = 0


class Daemon:
    """The long-running service: `run()` until a signal, `step()` is one pass of the main loop."""

    def __init__(self, config: DaemonConfig, pipeline_version: str) -> None:
        self.config = config
        self.pipeline_version = pipeline_version
        self.ctx = mp.get_context("spawn")
        self.stopping = False
        self.stop_now = False
        self.store: JobStore | None = None
        self.intake: Intake | None = None
        self.slots: list[_Slot] = []
        self.remote: Any = None  # `ray_workers.RayWorkers` with worker.backend: ray
        self.web: Any = None  # `web.WebServer` with web.enabled
        self.started_at = time.time()
        self._next_housekeeping = 0.0
        self._next_watchdog = 0.0
        self._watchdog = watchdog_interval()

    # -- signals only set flags -----------------------------------------------------------

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            self.stop_now = True
        self.stopping = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    # -- life cycle -------------------------------------------------------------------------

    def run(self) -> int:
        """Start everything, loop until asked to stop, stop cleanly; the exit status (0)."""
        self.install_signal_handlers()
        self.store = prepare(self.config)
        self.intake = Intake(self.config, self.store, self.pipeline_version)
        if self.config.worker.backend == "ray":
            from glimpsed.ray_workers import RayWorkers

            self.remote = RayWorkers(self.config)
            self.remote.start()
            self.install_signal_handlers()  # ray.init installs its own SIGTERM handler: ours decides
        else:
            for device in resolve_devices(self.config.worker.devices):
                slot = _Slot(device)
                self.slots.append(slot)
                self._start_worker(slot)
        self._start_watcher()
        if self.config.web.enabled:
            from glimpsed.web import WebServer

            self.web = WebServer(self.config, self.pipeline_version)
            try:
                self.web.start()
            except Exception:  # noqa: BLE001 - the page is a window on the daemon: never a reason to stop it
                log.exception("web_failed", detail="the daemon runs on without its web page")
                self.web = None
        log.info("daemon_started", inbox=str(self.config.path("inbox")), outbox=str(self.config.path("outbox")),
                 workers=self._worker_lines(), backend=self.config.worker.backend, pid=os.getpid())
        self._heartbeat("running")
        notify("READY=1")
        while not self.stopping:
            try:
                self.step()
            except Exception:  # noqa: BLE001 - e.g. a store locked past busy_timeout; log it and go on
                log.exception("step_failed")
                time.sleep(HOUSEKEEPING_SECONDS)
            time.sleep(STEP_SECONDS)
        return self.shutdown()

    def step(self) -> None:
        """Intake, then (every few seconds) leases, worker health and the heartbeat."""
        intake = self.intake
        intake.poll()
        now = time.monotonic()
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + HOUSEKEEPING_SECONDS
            if not intake.watcher_alive():
                self._start_watcher()  # the share came back, or the observer died: rescans cover the gap
            recover_lost_jobs(self.config, self.store,
                              self.store.requeue_expired(backoff=self.config.jobs.retry_backoff_seconds),
                              "lease expired")
            self._supervise()
            self._heartbeat("paused" if intake.paused_reason else "running")
        if self._watchdog and now >= self._next_watchdog and self._healthy():
            notify("WATCHDOG=1")
            self._next_watchdog = now + self._watchdog

    def shutdown(self) -> int:
        """Stop intake, let workers finish their stage (or kill them on a second signal), exit 0."""
        log.info("daemon_stopping", detail="finishing the running stage; send the signal again to stop at once")
        notify("STOPPING=1")
        self._heartbeat("stopping")
        self.intake.stop_watching()
        if self.web is not None:
            self.web.stop()
        if self.remote is not None:
            self.remote.stop(now=self.stop_now)
        for slot in self.slots:
            if slot.process.is_alive():
                slot.process.terminate()  # SIGTERM: the worker finishes its stage, requeues the job, exits
        for slot in self.slots:
            while slot.process.is_alive():
                slot.process.join(0.2)
                if self.stop_now:
                    slot.process.kill()
                if self._watchdog:
                    notify("WATCHDOG=1")  # still making progress towards a clean stop
        recover_dead_local(self.config, self.store, "its worker was stopped at once", backoff=False)
        self._heartbeat("stopped")
        log.info("daemon_stopped", **{k: v for k, v in self.store.counts().items() if k in ("queued", "running")})
        self.store.close()
        return 0

    # -- helpers ----------------------------------------------------------------------------

    def _start_watcher(self) -> None:
        from glimpsed.watcher import check_inbox

        ok, _ = check_inbox(self.config.path("inbox"), self.config.watch.sentinel)
        if not ok:
            return
        self.intake.stop_watching()
        try:
            self.intake.start_watching()
        except OSError as exc:
            log.warning("watch_failed", error=str(exc), detail="relying on rescans until it can be restarted")

    def _start_worker(self, slot: _Slot) -> None:
        slot.process = self.ctx.Process(target=worker_main, name=f"glimpsed-worker-{slot.device}",
                                        args=(self.config, slot.device, os.getpid()))
        slot.process.start()
        slot.started_at = time.monotonic()

    def _supervise(self) -> None:
        """Restart dead workers; kill a worker whose job overran its timeout by far. (Ray restarts its actors
        itself; new GPUs in the cluster get actors.)"""
        if self.remote is not None:
            self.remote.supervise()
        for slot in self.slots:
            if not slot.process.is_alive():
                if time.monotonic() - slot.started_at < RESTART_BACKOFF:
                    continue
                log.error("worker_died", device=slot.device, exitcode=slot.process.exitcode, restarts=slot.restarts)
                recover_dead_local(self.config, self.store, "its worker died")
                slot.restarts += 1
                self._start_worker(slot)
                continue
            self._enforce_timeout(slot)

    def _enforce_timeout(self, slot: _Slot) -> None:
        from glimpsed.worker import set_aside

        owner = f"{socket.gethostname()}:{slot.process.pid}"
        limit = self.config.jobs.timeout_seconds + HARD_TIMEOUT_GRACE
        for job in self.store.jobs("running", limit=100):
            if job.lease_owner == owner and job.started_at and time.time() - job.started_at > limit:
                log.error("worker_killed", job_id=job.id, device=slot.device, reason="job overran its timeout")
                slot.process.kill()
                slot.process.join(10)
                message = f"ran longer than jobs.timeout_seconds={self.config.jobs.timeout_seconds:g} and did not stop"
                failed = self.store.fail(job.id, owner, "JobTimeout", message, stage=job.stage)
                set_aside(self.config, self.store, failed, "JobTimeout", message, job.stage, time.time())
                slot.started_at = 0.0  # restart at once

    def _healthy(self) -> bool:
        watcher_ok = self.intake.watcher_alive() or bool(self.intake.paused_reason)
        workers_ok = self.remote.alive() if self.remote is not None else True
        web_ok = self.web.alive() if self.web is not None else True
        return watcher_ok and workers_ok and web_ok and all(s.process.is_alive() for s in self.slots)

    def _worker_lines(self) -> list[str]:
        if self.remote is not None:
            return self.remote.worker_lines()
        return [f"{s.device} (pid {s.process.pid})" if s.process is not None else s.device for s in self.slots]

    def _heartbeat(self, state: str) -> None:
        counts = self.store.counts()
        outbox_ok, outbox_reason = check_outbox(self.config.path("outbox"), self.config.outbox.sentinel)
        reasons = [r for r in (self.intake.paused_reason if self.intake else "",
                               "" if outbox_ok else f"results wait: {outbox_reason}") if r]
        message = "; ".join(reasons)
        mode = self.intake.watcher.mode if self.intake and self.intake.watcher else ""
        self.store.set_daemon_state(state, message=message, watch_mode=mode, started_at=self.started_at,
                                    workers=self._worker_lines(),
                                    inbox=self.intake.summary() if self.intake else {},
                                    cluster=self.remote.cluster() if self.remote is not None else None,
                                    web_url=self.web.url if self.web is not None else None)
        summary = f"{counts['queued']} queued, {counts['running']} running, {counts['done']} done, " \
                  f"{counts['failed']} failed"
        notify(f"STATUS={'paused: ' + message + '; ' if message else ''}{summary}")
