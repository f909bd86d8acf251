"""The `glimpsed` command: thin click commands over the daemon's API."""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import click

from glimpsed import __version__, report
from glimpsed.config import DaemonConfig, load_config, validate
from glimpsed.errors import GlimpsedError
from glimpsed.store import STATES, JobStore

SYSTEM_CONFIG = Path("/etc/glimpsed/glimpsed.yaml")


def _config_path(explicit: str | None) -> Path | None:
    if explicit:
        return Path(explicit)
    if os.environ.get("GLIMPSED_CONFIG"):
        return Path(os.environ["GLIMPSED_CONFIG"])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def config_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--config, --set, --inbox, --outbox: shared by every command; builds `config` for it."""

    @click.option("--config", "-c", "config_file", type=click.Path(dir_okay=False),
                  help="YAML config (default: $GLIMPSED_CONFIG, else /etc/glimpsed/glimpsed.yaml if present).")
    @click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                  help="Override one key, e.g. --set watch.poll_interval=2 (repeatable).")
    @click.option("--inbox", type=click.Path(file_okay=False), help="Same as --set paths.inbox=DIR.")
    @click.option("--outbox", type=click.Path(file_okay=False), help="Same as --set paths.outbox=DIR.")
    @functools.wraps(func)
    def wrapper(config_file: str | None, sets: tuple[str, ...], inbox: str | None, outbox: str | None,
                **kwargs: Any) -> Any:
        overrides: dict[str, Any] = {}
        for item in sets:
            key, sep, value = item.partition("=")
            if not sep:
                raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--set")
            overrides[key.strip()] = value
        if inbox:
            overrides["paths.inbox"] = inbox
        if outbox:
            overrides["paths.outbox"] = outbox
        try:
            config = load_config(_config_path(config_file), overrides=overrides)
            validate(config, check_filesystem=False)
            return func(config=config, **kwargs)
        except GlimpsedError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(func)


def _store(config: DaemonConfig) -> JobStore:
    return JobStore(config.path("db"))


def _pipeline_version() -> str:
    from ai_modules.pipeline import PIPELINE_VERSION

    return PIPELINE_VERSION


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="glimpsed")
def main() -> None:
    """glimpsed turns photos dropped into an inbox folder into 3D files in an outbox folder."""


@main.command()
@config_options
@click.option("--once", is_flag=True, help="Process what is in the inbox now, then exit.")
@click.option("--backend", type=click.Choice(["local", "ray"]), help="Same as --set worker.backend=...")
@click.option("--address", metavar="HOST:PORT", help="A Ray cluster's head (implies --backend ray); same as "
                                                     "--set worker.ray.address=...")
def run(config: DaemonConfig, once: bool, backend: str | None, address: str | None) -> None:
    """Run the daemon in the foreground.

    Examples:

        glimpsed run --config /etc/glimpsed/glimpsed.yaml

        glimpsed run --backend ray --address 10.0.0.1:6379
    """
    import dataclasses

    from glimpsed.logs import configure_logging

    if backend or address:
        ray = dataclasses.replace(config.worker.ray, address=address or config.worker.ray.address)
        worker = dataclasses.replace(config.worker, backend=backend or "ray", ray=ray)
        config = dataclasses.replace(config, worker=worker)
    validate(config)
    configure_logging(config.logging.format, config.logging.level)
    click.echo(f"glimpsed {__version__}: drop photos into {config.path('inbox')}; results appear in"
               f" {config.path('outbox')}", err=True)
    if once:
        from glimpsed.batch import run_once

        jobs = run_once(config, _pipeline_version())
        click.echo(f"processed {len(jobs)} job(s): " + ", ".join(f"{j.id} {j.state}" for j in jobs) if jobs
                   else "nothing to do")
        sys.exit(1 if any(j.state == "failed" for j in jobs) else 0)
    from glimpsed.daemon import Daemon

    sys.exit(Daemon(config, _pipeline_version()).run())


@main.command()
@config_options
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def submit(config: DaemonConfig, files: tuple[str, ...]) -> None:
    """Turn FILES into 3D now, in this process (no daemon needed); print each output folder.

    The files are read, never moved. Example:

        glimpsed submit ~/photos/chair.jpg
    """
    from glimpsed.batch import submit as submit_files
    from glimpsed.logs import configure_logging

    validate(config, need_inbox=False)
    configure_logging(config.logging.format, "warning")
    bar = _ProgressLine()
    failed = False
    for path, taken, job in submit_files(config, [Path(f) for f in files], _pipeline_version(), bar.update):
        bar.clear()
        if job is not None and job.state == "done":
            click.echo(job.output_dir)
        elif taken.outcome == "skipped":
            click.echo(f"{path}: {taken.message}; output: {taken.job.output_dir}", err=True)
            click.echo(taken.job.output_dir or "")
        else:
            failed = True
            reason = (job.error_message if job is not None else None) or taken.message
            if job is not None and job.state == "queued":
                reason = f"{reason or 'not run'}; the outbox cannot take results now, the job stays queued"
            click.echo(f"{path}: {job.state if job else taken.outcome}: {reason}", err=True)
    sys.exit(1 if failed else 0)


@main.command()
@config_options
@json_option
def status(config: DaemonConfig, as_json: bool) -> None:
    """Show the daemon's state, queue counts and the running jobs with their progress."""
    store = _store(config)
    if as_json:
        click.echo(json.dumps(report.status(store), indent=2))
        return
    daemons, counts = store.daemons(), store.counts()
    running = store.jobs("running", limit=20)
    live = [d for d in daemons if d["fresh"]] or daemons[:1]
    for i, daemon in enumerate(live or [None]):
        click.echo(f"{'daemon:' if i == 0 else '':<8} {_daemon_line(daemon)}")
    click.echo(f"inbox:   {config.path('inbox')}")
    click.echo("queue:   " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    for job in running:
        click.echo(f"  {job.id}  {job.source_name}  {job.stage or 'starting'}  {_bar(job.progress or 0.0)}"
                   f"  {job.progress_message or ''}")
    _print_inbox(daemons)


@main.command()
@config_options
@json_option
@click.option("--state", type=click.Choice(STATES), help="Only jobs in this state.")
@click.option("--limit", default=50, show_default=True, help="How many, newest first.")
def jobs(config: DaemonConfig, as_json: bool, state: str | None, limit: int) -> None:
    """List jobs, newest first."""
    store = _store(config)
    if as_json:
        click.echo(json.dumps(report.jobs(store, state, limit), indent=2))
        return
    rows = store.jobs(state, limit)
    table = [("ID", "STATE", "STAGE", "TRIES", "AGE", "SOURCE", "OUTPUT / ERROR")]
    for j in rows:
        detail = j.output_dir or (f"{j.error_type}: {j.error_message}" if j.error_type else "")
        if j.duplicate_of:
            detail = f"duplicate of {j.duplicate_of}"
        table.append((j.id, j.state, j.stage or "-", str(j.attempts), _age(j.created_at), j.source_name,
                      detail[:80]))
    _print_table(table)
    if state is None:
        _print_inbox(store.daemons())  # files in the inbox that are no job (yet), and why


@main.command()
@config_options
@json_option
@click.argument("job_id")
def show(config: DaemonConfig, as_json: bool, job_id: str) -> None:
    """Show one job (by id or unique prefix) and its events."""
    detail = report.job_detail(_store(config), job_id)
    if as_json:
        click.echo(json.dumps(detail, indent=2))
        return
    events = detail["events"]
    for key, value in detail["job"].items():
        if value not in (None, "", "[]") and key != "result":
            click.echo(f"{key:>17}: {value}")
    click.echo("events:")
    for e in events:
        click.echo(f"  {_clock(e['at'])}  {e['event']:<20} {e['stage'] or '':<8} {e['message'] or ''}")


@main.command()
@config_options
@click.argument("job_id")
def retry(config: DaemonConfig, job_id: str) -> None:
    """Queue a failed or cancelled job again, from its saved input."""
    job = _store(config).retry(job_id)
    click.echo(f"{job.id} queued again")


@main.command()
@config_options
@click.argument("job_id")
def cancel(config: DaemonConfig, job_id: str) -> None:
    """Cancel a queued job, or stop a running one at its next stage boundary."""
    job = _store(config).cancel(job_id)
    click.echo(f"{job.id} cancelled" if job.state == "cancelled" else f"{job.id} will stop after its current stage")


@main.command()
@config_options
@json_option
def doctor(config: DaemonConfig, as_json: bool) -> None:
    """Check this machine: Python, torch and CUDA, gsplat, model files, folders, filesystems, disk."""
    from glimpsed.doctor import run_checks

    checks = run_checks(config)
    if as_json:
        click.echo(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        for c in checks:
            mark = {"ok": click.style("ok  ", fg="green"), "warn": click.style("warn", fg="yellow"),
                    "fail": click.style("FAIL", fg="red")}[c.status]
            click.echo(f"[{mark}] {c.name:<22} {c.detail}")
    sys.exit(1 if any(c.status == "fail" for c in checks) else 0)


@main.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """List the model files each stage can use (or `models pull BACKEND` to fetch them)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models.command("list")
@config_options
@json_option
def models_list(config: DaemonConfig, as_json: bool) -> None:
    """List every model file a backend can use: present / missing / corrupt (by size against the lock file),
    size, licence, source and the pinned revision."""
    from .model_pull import PullError, inventory

    try:
        rows = inventory(config.path("models"))
    except PullError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = [("STAGE", "BACKEND", "MODEL", "STATUS", "SIZE", "LICENCE", "SOURCE", "REVISION", "PATH")]
    table += [(r["stage"], r["backend"], r["name"], r["status"],
               f"{(r['bytes'] or r['approx_bytes'] or 0) / 1e9:.2f} GB" + ("" if r["bytes"] else " (approx.)"),
               r["licence"] + (" (restricted)" if r["restricted"] else ""), r["sources"][0],
               (r["revision"] or "-")[:12] if not str(r["revision"]).startswith("not pinned") else "not pinned yet",
               str(r["path"])) for r in rows]
    _print_table(table)


@models.command("verify")
@click.argument("names", nargs=-1)
@config_options
@json_option
def models_verify(config: DaemonConfig, names: tuple[str, ...], as_json: bool) -> None:
    """Re-hash the model files on disk (all, or NAMES: backends or model names) against the lock file and the
    publishers' hashes. Exit status 1 when one is corrupt."""
    from .model_pull import PullError, names_for, verify

    try:
        wanted = list(dict.fromkeys(n for t in names for n in names_for(t))) or None
        checks = verify(config.path("models"), wanted)
    except PullError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        _print_table([("MODEL", "STATUS", "DETAIL", "PATH")]
                     + [(c.name, c.status, c.detail, str(c.path)) for c in checks])
    if any(c.status == "corrupt" for c in checks):
        raise SystemExit(1)


@models.command("pull")
@click.argument("targets", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="fetch again even if the files are present")
@click.option("--accept-licence", "accept_licence", is_flag=True,
              help="accept the use restrictions of the models' licences (SDXL's CreativeML Open RAIL++-M)")
@click.option("--to", "to", type=click.Path(file_okay=False, path_type=Path),
              help="fetch into this folder instead of paths.models (for a machine without internet: copy the "
                   "folder there, then `glimpsed models verify`)")
@config_options
def models_pull(config: DaemonConfig, targets: tuple[str, ...], force: bool, accept_licence: bool,
                to: Path | None) -> None:
    """Fetch the model files of TARGETS (backends: rembg, syncdreamer, dpt, sdxl_lightning, mvcrm; or model
    names) into paths.models, each verified (size and sha256) before it is renamed into place."""
    from ai_modules.models import MODEL_BY_NAME

    from .model_pull import PullError, names_for, pull, restricted

    try:
        names = list(dict.fromkeys(n for t in targets for n in names_for(t)))
    except PullError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in names:
        licence = MODEL_BY_NAME[name].licence
        click.echo(f"{name}: {licence.name} ({licence.url})")
    needs = restricted(names)
    if needs and not accept_licence and sys.stdin.isatty():
        accept_licence = click.confirm(f"{', '.join(m.name for m in needs)}: accept the use restrictions of "
                                       f"{needs[0].licence.name}?", default=False)
    line = _ProgressLine()
    try:
        paths = pull(names, to or config.path("models"), force=force, accept_licence=accept_licence,
                     progress=lambda name, done, total: line.update(name, "pull", done / total if total else 0.0,
                                                                    f"{done / 2**20:.0f} MiB"))
    except PullError as exc:
        line.clear()
        raise click.ClickException(str(exc)) from exc
    line.clear()
    for path in paths:
        click.echo(f"ok  {path}")


@main.group("config")
def config_group() -> None:
    """Inspect the configuration."""


@config_group.command("show")
@config_options
def config_show(config: DaemonConfig) -> None:
    """Print the effective configuration (file + environment + flags) as YAML."""
    import yaml

    click.echo(yaml.safe_dump(config.to_dict(), sort_keys=False), nl=False)


# -- formatting helpers ------------------------------------------------------------------


class _ProgressLine:
    """One self-rewriting line on stderr while a job runs (only on a terminal)."""

    def __init__(self) -> None:
        self.active = sys.stderr.isatty()

    def update(self, job_id: str, stage: str, fraction: float, message: str) -> None:
        if self.active:
            click.echo(f"\r\033[K{job_id} {stage:<8} {_bar(fraction)} {message[:50]}", nl=False, err=True)

    def clear(self) -> None:
        if self.active:
            click.echo("\r\033[K", nl=False, err=True)


def _bar(fraction: float, width: int = 20) -> str:
    filled = int(round(max(0.0, min(1.0, fraction)) * width))
    return f"[{'#' * filled}{'-' * (width - filled)}] {fraction * 100:3.0f}%"


def _daemon_line(daemon: dict[str, Any] | None) -> str:
    if not daemon:
        return "never started with this store"
    if daemon["state"] in ("running", "paused") and not daemon["fresh"]:
        return f"not running (last heartbeat {_age(daemon['heartbeat_at'])} ago from pid {daemon['pid']})"
    line = f"{daemon['state']} (pid {daemon['pid']} on {daemon['host']}, up {_age(daemon['started_at'])}"
    cluster = daemon.get("cluster")
    if daemon.get("workers") and not cluster:
        line += f", workers {', '.join(daemon['workers'])}"
    line += f", watching by {daemon['watch_mode']})" if daemon["watch_mode"] else ")"
    if daemon.get("web_url"):
        line += f"\n         web page: {daemon['web_url']}"
    if daemon["message"]:
        line += f"\n         paused: {daemon['message']}"
    if cluster:
        nodes = cluster.get("nodes", [])
        alive = [n for n in nodes if n["alive"]]
        line += (f"\n         Ray cluster {cluster['address']}: {len(alive)} node(s) up, "
                 f"{sum(n['gpus'] for n in alive):g} GPU(s)")
        for node in nodes:
            line += (f"\n           node {node['host']} ({node['address']}): {node['gpus']:g} GPU, "
                     f"{node['cpus']:g} CPU{'' if node['alive'] else ', DOWN'}")
        for worker in daemon.get("workers", []):
            line += f"\n           actor {worker}"
    return line


def _print_inbox(daemons: list[dict[str, Any]]) -> None:
    """What intake waits for or ignores, and why (from the running daemon's last heartbeat)."""
    inbox = next((d["inbox"] for d in daemons if d["fresh"] and d["inbox"]), None)
    if not inbox:
        return
    counts = [f"{inbox.get(k, 0)} {k}" for k in ("settling", "ready", "waiting", "ignored") if inbox.get(k)]
    if counts:
        click.echo("intake:  " + ", ".join(counts))
    for entry in inbox.get("files", [])[:20]:
        click.echo(f"  {entry['state']:<10} {entry['path']}: {entry['reason']}")


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    seconds = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _clock(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    main()
