"""The CLI over a real store; every command documented in the README and with help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from glimpsed.cli import main
from glimpsed.store import JobStore

README = (Path(__file__).parents[2] / "README.md").read_text()


def commands(group=main, prefix=""):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


@pytest.mark.parametrize("name", [n for n, _ in commands()])
def test_every_command_is_documented_and_has_help(name):
    assert f"`glimpsed {name}" in README, f"README's command table lacks `glimpsed {name}`"
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0 and len(result.output) > 100


@pytest.fixture
def cli(tmp_path, monkeypatch):
    monkeypatch.delenv("GLIMPSED_CONFIG", raising=False)
    root = ["--set", f"paths.root={tmp_path}"]

    def invoke(*args):
        return CliRunner().invoke(main, [*args, *root], catch_exceptions=False)

    store = JobStore(tmp_path / "glimpsed.db")
    (tmp_path / "w" / "input").mkdir(parents=True)
    job = store.enqueue(source_path=str(tmp_path / "inbox" / "chair.jpg"), source_name="chair.jpg", sha256="ab" * 32,
                        size=10, pipeline_version="v", config_hash="h", max_attempts=3, workdir=str(tmp_path / "w"))
    return invoke, store, job


def test_jobs_show_cancel_retry(cli):
    invoke, store, job = cli
    out = invoke("jobs").output
    assert re.search(rf"{job.id}\s+queued", out)
    assert json.loads(invoke("jobs", "--json").output)[0]["id"] == job.id
    assert "job_queued" in invoke("show", job.id[:12]).output
    assert f"{job.id} cancelled" in invoke("cancel", job.id).output
    assert invoke("cancel", job.id).exit_code != 0
    assert "queued again" in invoke("retry", job.id).output
    assert invoke("jobs", "--state", "queued").output.count(job.id) == 1


def test_unknown_job_is_a_clean_error(cli):
    invoke, _, _ = cli
    result = invoke("show", "nope")
    assert result.exit_code == 1 and "no job with id 'nope'" in result.output and "Traceback" not in result.output


def test_status_without_daemon(cli):
    invoke, store, _ = cli
    out = invoke("status").output
    assert "never started" in out and "1 queued" in out
    store.set_daemon_state("paused", message="sentinel missing — the share looks unmounted", now=0)
    assert "not running" in invoke("status").output


def test_config_show_prints_effective_yaml(cli, tmp_path):
    invoke, _, _ = cli
    shown = yaml.safe_load(invoke("config", "show", "--set", "watch.poll_interval=2").output)
    assert shown["watch"]["poll_interval"] == 2.0 and shown["paths"]["root"] == str(tmp_path)


def test_bad_config_is_a_clean_error(cli):
    invoke, _, _ = cli
    result = invoke("config", "show", "--set", "watch.mode=inotify")
    assert result.exit_code == 1 and "watch.mode" in result.output and "Traceback" not in result.output


def test_run_backend_and_address_flags_choose_the_ray_workers(tmp_path, monkeypatch):
    import glimpsed.daemon

    seen = {}

    class Daemon:
        def __init__(self, config, version):
            seen["worker"] = config.worker

        def run(self):
            return 0

    monkeypatch.setattr(glimpsed.daemon, "Daemon", Daemon)
    (tmp_path / "var" / "inbox").mkdir(parents=True)
    (tmp_path / "var" / "outbox").mkdir()
    base = ["run", "--set", f"paths.root={tmp_path / 'var'}"]
    assert CliRunner().invoke(main, [*base, "--address", "10.0.0.1:6379"]).exit_code == 0
    assert seen["worker"].backend == "ray" and seen["worker"].ray.address == "10.0.0.1:6379"
    assert CliRunner().invoke(main, [*base, "--backend", "ray"]).exit_code == 0
    assert seen["worker"].backend == "ray" and seen["worker"].ray.address is None      # a private instance
    assert CliRunner().invoke(main, base).exit_code == 0 and seen["worker"].backend == "local"
