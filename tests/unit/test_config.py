"""Config loading, precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from glimpsed.config import DaemonConfig, defaults, load_config, validate
from glimpsed.errors import ConfigError

DOCUMENTED = Path(__file__).parents[2] / "config" / "glimpsed.yaml"


def write(tmp_path, text):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


def test_documented_yaml_holds_exactly_the_defaults():
    """config/glimpsed.yaml documents every key with its default value."""
    documented = yaml.safe_load(DOCUMENTED.read_text())
    assert documented == defaults()
    assert load_config(DOCUMENTED, env={}) == DaemonConfig()


def test_precedence_cli_over_env_over_file(tmp_path):
    path = write(tmp_path, "watch:\n  poll_interval: 7\n  recursive: true\n")
    cfg = load_config(path, env={"GLIMPSED_WATCH__POLL_INTERVAL": "3"}, overrides={})
    assert cfg.watch.poll_interval == 3.0 and cfg.watch.recursive is True
    cfg = load_config(path, env={"GLIMPSED_WATCH__POLL_INTERVAL": "3"}, overrides={"watch.poll_interval": "2"})
    assert cfg.watch.poll_interval == 2.0


def test_env_values_are_coerced(tmp_path):
    env = {"GLIMPSED_WATCH__RECURSIVE": "yes", "GLIMPSED_JOBS__MAX_ATTEMPTS": "5",
           "GLIMPSED_WATCH__EXTENSIONS": ".jpg, .png", "GLIMPSED_WATCH__SENTINEL": ".mounted",
           "GLIMPSED_PATHS__INBOX": "/srv/in", "GLIMPSED_CONFIG": "ignored: no double underscore"}
    cfg = load_config(None, env=env)
    assert cfg.watch.recursive is True and cfg.jobs.max_attempts == 5
    assert cfg.watch.extensions == (".jpg", ".png") and cfg.watch.sentinel == ".mounted"
    assert cfg.path("inbox") == Path("/srv/in")


@pytest.mark.parametrize("text, key, words", [
    ("watch:\n  pol_interval: 2\n", "watch.pol_interval", "did you mean `poll_interval`"),
    ("wach:\n  mode: auto\n", "wach", "did you mean `watch`"),
    ("watch:\n  poll_interval: fast\n", "watch.poll_interval", "must be a number"),
    ("watch:\n  mode: inotify\n", "watch.mode", "must be one of auto, native, polling"),
    ("watch:\n  recursive: maybe\n", "watch.recursive", "must be true or false"),
    ("jobs:\n  max_attempts: 2.5\n", "jobs.max_attempts", "must be an integer"),
    ("outbox:\n  file_mode: 0644\n", "outbox.file_mode", "quote it"),
    ("watch: 3\n", "watch", "must be a mapping"),
])
def test_errors_name_the_key(tmp_path, text, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert info.value.key == key and words in str(info.value)


@pytest.mark.parametrize("override, key", [
    ({"watch.poll_interval": "0"}, "watch.poll_interval"),
    ({"jobs.max_attempts": "0"}, "jobs.max_attempts"),
    ({"watch.extensions": "jpg"}, "watch.extensions"),
    ({"outbox.file_mode": "rw-r--r--"}, "outbox.file_mode"),
    ({"outbox.group": "no-such-group-here"}, "outbox.group"),
    ({"worker.devices": "gpu0"}, "worker.devices"),
    ({"worker.pipeline": "ai_modules.pipeline"}, "worker.pipeline"),
    ({"watch.sentinel": "a/b"}, "watch.sentinel"),
])
def test_value_checks(override, key):
    with pytest.raises(ConfigError) as info:
        validate(load_config(None, env={}, overrides=override), check_filesystem=False)
    assert info.value.key == key


def test_pipeline_section_is_checked_by_ai_modules():
    with pytest.raises(ConfigError) as info:
        load_config(None, env={}, overrides={"pipeline.segment.no_such_key": "1"})
    assert "pipeline.segment.no_such_key" in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_filesystem_checks(tmp_path):
    cfg = load_config(None, env={}, overrides={"paths.root": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "paths.inbox" and "mkdir -p" in str(info.value)
    (tmp_path / "inbox").mkdir()
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "paths.outbox"
    (tmp_path / "outbox").mkdir()
    validate(cfg)
    assert (tmp_path / "work").is_dir() and (tmp_path / "failed").is_dir() and (tmp_path / "archive").is_dir()


def test_unwritable_outbox_stops_the_start(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir(mode=0o500)
    cfg = load_config(None, env={}, overrides={"paths.root": str(tmp_path)})
    with pytest.raises(ConfigError, match="not writable"):
        validate(cfg)


def test_pipeline_hash_changes_with_pipeline_settings():
    a = load_config(None, env={})
    b = load_config(None, env={}, overrides={"pipeline.segment.object_size": "180"})
    assert a.pipeline_hash() != b.pipeline_hash()


def test_job_store_on_a_network_filesystem_is_refused(tmp_path, monkeypatch):
    import glimpsed.fsinfo

    (tmp_path / "inbox").mkdir()
    (tmp_path / "outbox").mkdir()
    nas = tmp_path / "nas"
    cfg = load_config(None, env={}, overrides={"paths.root": str(tmp_path), "paths.db": str(nas / "glimpsed.db")})
    monkeypatch.setattr(glimpsed.fsinfo, "is_network_fs", lambda p: str(p).startswith(str(nas)))
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    assert info.value.key == "paths.db" and "network filesystem" in str(info.value)


def test_the_ray_section(tmp_path, monkeypatch):
    cfg = load_config(write(tmp_path, "worker:\n  backend: ray\n  ray:\n    address: 10.0.0.1:6379\n"
                                      "    resources: {gpu_host: 1}\n    workers: 4\n"), env={})
    assert cfg.worker.backend == "ray" and cfg.worker.ray.address == "10.0.0.1:6379"
    assert cfg.worker.ray.resources == {"gpu_host": 1.0} and cfg.worker.ray.workers == 4
    env = {"GLIMPSED_WORKER__RAY__RESOURCES": "gpu_host=1, big=0.5", "GLIMPSED_WORKER__RAY__WORKERS": "auto"}
    cfg = load_config(None, env=env)
    assert cfg.worker.ray.resources == {"gpu_host": 1.0, "big": 0.5} and cfg.worker.ray.workers == "auto"
    for override, key, words in [({"worker.ray.resources": "gpu_host"}, "worker.ray.resources", "name=value"),
                                 ({"worker.ray.resources": "a=x"}, "worker.ray.resources.a", "must be a number"),
                                 ({"worker.ray.workers": "0"}, "worker.ray.workers", ">= 1"),
                                 ({"worker.ray.gpus_per_worker": "0"}, "worker.ray.workers", "give a number"),
                                 ({"worker.backend": "slurm"}, "worker.backend", "one of local, ray")]:
        with pytest.raises(ConfigError) as info:
            validate(load_config(None, env={}, overrides=override), check_filesystem=False)
        assert info.value.key == key and words in str(info.value)
    with pytest.raises(ConfigError, match="token_file.*does not exist.*ray get-auth-token"):
        validate(load_config(None, env={}, overrides={"worker.backend": "ray",
                                                      "worker.ray.token_file": str(tmp_path / "nope")}),
                 check_filesystem=False)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'glimpsed\[ray\]'") as info:
        validate(load_config(None, env={}, overrides={"worker.backend": "ray"}), check_filesystem=False)
    assert info.value.key == "worker.backend"


def test_the_web_section(tmp_path):
    from glimpsed.config import web_token

    assert web_token(load_config(None, env={})) is None
    for overrides, key, words in [
            ({"web.host": "0.0.0.0"}, "web.host", "set web.token_file"),
            ({"web.host": "192.168.1.5", "web.token": "short"}, "web.token", "at least 16"),
            ({"web.port": "70000"}, "web.port", "TCP port"),
            ({"web.token_file": str(tmp_path / "missing")}, "web.token_file", "cannot read a token")]:
        with pytest.raises(ConfigError) as info:
            validate(load_config(None, env={}, overrides=overrides), check_filesystem=False)
        assert info.value.key == key and words in str(info.value)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        validate(load_config(None, env={}, overrides={"web.token_file": str(tmp_path / "empty")}),
                 check_filesystem=False)
    (tmp_path / "token").write_text("0123456789abcdef0123\nignored\n")
    cfg = load_config(None, env={}, overrides={"web.host": "0.0.0.0", "web.token_file": str(tmp_path / "token")})
    validate(cfg, check_filesystem=False)
    assert web_token(cfg) == "0123456789abcdef0123"
    validate(load_config(None, env={}, overrides={"web.host": "::1"}), check_filesystem=False)   # loopback
    validate(load_config(None, env={}, overrides={"web.host": "0.0.0.0", "web.enabled": "false"}),
             check_filesystem=False)
