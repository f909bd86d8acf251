"""The daemon's configuration: frozen dataclasses, one YAML file, env and CLI overrides.

Precedence is CLI (`--set key=value`) > `GLIMPSED_*` environment > YAML file > defaults.
`config/glimpsed.yaml` documents every key. The `pipeline:` section belongs to
:mod:`ai_modules` and is validated by :func:`ai_modules.settings.parse_settings`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from ai_modules.errors import SettingsError
from ai_modules.settings import default_settings, parse_settings
from glimpsed.errors import ConfigError
from glimpsed.watcher import DEFAULT_EXTENSIONS as WATCHED_EXTENSIONS

ENV_PREFIX = "GLIMPSED_"
DEFAULT_EXTENSIONS: tuple[str, ...] = tuple(sorted(WATCHED_EXTENSIONS))


@dataclass(frozen=True)
class PathsConfig:
    """Where things live. Empty paths default to `<root>/<name>`; relative paths resolve against the cwd."""

    root: Path = Path("var")
    inbox: Path | None = None
    outbox: Path | None = None
    work: Path | None = None
    archive: Path | None = None
    failed: Path | None = None
    db: Path | None = None  # SQLite file; must be on a local filesystem
    models: Path | None = None  # model weights for learned backends


@dataclass(frozen=True)
class WatchConfig:
    """How the inbox is watched; events are hints, the rescan is the safety net."""

    mode: Literal["auto", "native", "polling"] = "auto"
    poll_interval: float = 5.0
    rescan_interval: float = 300.0
    stability_seconds: float = 5.0
    incomplete_seconds: float = 120.0  # how long a file that looks cut off may stay unchanged before it is judged
    recursive: bool = False
    sentinel: str | None = None
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    ignore: tuple[str, ...] = ()  # extra fnmatch patterns, added to the built-in ones
    ignore_dirs: tuple[str, ...] = ()  # extra folder names, added to the built-in ones


@dataclass(frozen=True)
class IngestConfig:
    """Limits on what an inbox file may be before it becomes a job."""

    max_bytes: int = 200 * 1024 * 1024
    max_pixels: int = 100_000_000
    min_side: int = 64


@dataclass(frozen=True)
class JobsConfig:
    """Retries, timeouts, leases and duplicates."""

    on_duplicate: Literal["skip", "reprocess"] = "skip"
    max_attempts: int = 3
    retry_backoff_seconds: float = 30.0
    retry_backoff_max_seconds: float = 3600.0
    timeout_seconds: float = 3600.0
    lease_seconds: float = 120.0
    keep_workdir: bool = False


@dataclass(frozen=True)
class RayConfig:
    """Where the pipeline actors of `worker.backend: ray` run (README "Many GPU hosts")."""

    address: str | None = None  # HOST:PORT of a running cluster's head; null = a private Ray instance on this host
    workers: Literal["auto"] | int = "auto"  # actors to keep; auto = one per `gpus_per_worker` GPUs in the cluster
    gpus_per_worker: float = 1.0  # GPUs each actor reserves (0: CPU actors, e.g. for a trial without GPUs)
    resources: dict[str, float] = field(default_factory=dict)  # custom resources each actor needs, e.g. {gpu_host: 1}
    namespace: str = "glimpsed"
    token_file: Path | None = None  # Ray's auth token (RAY_AUTH_TOKEN_PATH); null = Ray's default, ~/.ray/auth_token
    models_dir: Path | None = None  # where the GPU hosts keep the models; null = paths.models (same path everywhere)


@dataclass(frozen=True)
class WorkerConfig:
    """Which devices run jobs and which pipeline entry they call."""

    devices: tuple[str, ...] = ("auto",)  # "auto" = one worker per CUDA GPU, else one on the CPU
    pipeline: str = "ai_modules.pipeline:open_pipeline"  # called once per worker; returns the pipeline it keeps
    vram_budget: Literal["auto"] | float = "auto"  # GiB the models may keep on a GPU between jobs
    backend: Literal["local", "ray"] = "local"  # local: a process per device here; ray: an actor per GPU anywhere
    ray: RayConfig = field(default_factory=RayConfig)

    def vram_budget_bytes(self) -> int | None:
        """`vram_budget` in bytes; None for `auto` (the pipeline measures the card's free memory)."""
        return None if self.vram_budget == "auto" else int(float(self.vram_budget) * 2**30)


@dataclass(frozen=True)
class OutboxConfig:
    """How results are published and what happens to the originals."""

    file_mode: str = "0644"
    dir_mode: str = "0755"
    group: str | None = None
    after_success: Literal["archive", "keep", "delete"] = "archive"
    sentinel: str | None = None  # a file in the outbox (on the share): results wait while it is missing


@dataclass(frozen=True)
class WebConfig:
    """The status page, the JSON API and /metrics, served by the daemon itself (README "Web page")."""

    enabled: bool = True
    host: str = "127.0.0.1"  # another address than loopback needs a token
    port: int = 8765  # 0: any free port (the daemon's heartbeat says which)
    token: str | None = None  # the secret a browser or a script sends; prefer token_file
    token_file: Path | None = None  # a file holding the token (its first line)
    metrics_public: bool = False  # serve /metrics without the token (for a Prometheus on a trusted network)


@dataclass(frozen=True)
class LoggingConfig:
    """Log format: `auto` is human-readable on a terminal, JSON under systemd."""

    format: Literal["auto", "console", "json"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True)
class DaemonConfig:
    """The whole configuration of one daemon."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    web: WebConfig = field(default_factory=WebConfig)
    pipeline: Mapping[str, Any] = field(default_factory=default_settings)

    def path(self, name: str) -> Path:
        """The resolved absolute path of `paths.<name>` (inbox, outbox, work, archive, failed, db, models)."""
        explicit = getattr(self.paths, name)
        default = "glimpsed.db" if name == "db" else name
        return Path(explicit or self.paths.root / default).expanduser().absolute()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (paths as strings), as `glimpsed config show` prints it."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def pipeline_hash(self) -> str:
        """16 hex digits over the effective pipeline settings (coerced: "256" and 256 agree)."""
        from ai_modules.identity import config_hash

        return config_hash(self.pipeline)


def defaults() -> dict[str, Any]:
    """The default configuration as a plain dict."""
    return DaemonConfig().to_dict()


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DaemonConfig:
    """Build the effective config from defaults, a YAML file, `GLIMPSED_*` env and CLI overrides.

    Args:
        path: YAML file; None uses the defaults alone.
        env: environment to read `GLIMPSED_SECTION__KEY=value` overrides from (default `os.environ`).
        overrides: dotted keys from the CLI, e.g. `{"watch.poll_interval": "2"}`.

    Raises:
        ConfigError: the file cannot be read, or a key is unknown or has the wrong type.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        tree = _read_yaml(Path(path))
    for key, value in _env_overrides(os.environ if env is None else env).items():
        _set_dotted(tree, key, value)
    for key, value in (overrides or {}).items():
        _set_dotted(tree, key, value)
    return _build(DaemonConfig, tree, prefix="")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("--config", f"file {path} does not exist; pass an existing YAML file") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError("--config", f"cannot read {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _env_overrides(env: Mapping[str, str]) -> dict[str, str]:
    """`GLIMPSED_WATCH__POLL_INTERVAL=2` -> {"watch.poll_interval": "2"}; other GLIMPSED_ vars are ignored."""
    out = {}
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            out[name[len(ENV_PREFIX):].lower().replace("__", ".")] = value
    return out


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(key, f"`{part}` is a value, not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, data: Any, prefix: str) -> Any:
    """Turn a nested dict into the dataclass `cls`, checking every key and type."""
    section = prefix.rstrip(".") or "(top level)"
    if not isinstance(data, Mapping):
        raise ConfigError(section, f"must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"valid keys: {', '.join(fields)}"
            raise ConfigError(f"{prefix}{key}", f"unknown key; {hint}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name == "pipeline" and cls is DaemonConfig:
            kwargs[name] = _pipeline_settings(value)
        elif dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hints[name])
    return cls(**kwargs)


def _pipeline_settings(value: Any) -> dict[str, Any]:
    """Validate the `pipeline:` section with ai_modules' own rules; return it merged with defaults."""
    merged = default_settings()
    if value:
        if not isinstance(value, Mapping):
            raise ConfigError("pipeline", f"must be a mapping, got {value!r}")
        _deep_update(merged, value)
    try:
        parse_settings(merged)
    except SettingsError as exc:
        raise ConfigError(getattr(exc, "key", "pipeline"), str(exc)) from exc
    return merged


def _deep_update(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation `hint`, converting strings from env/CLI."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("", "null", "none")):
            return None
        options = [a for a in args if a is not type(None)]
        for option in options[:-1]:  # the first that accepts the value, e.g. `auto` or a number
            try:
                return _coerce(key, value, option)
            except ConfigError:
                pass
        return _coerce(key, value, options[-1])
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, f"must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return tuple(_coerce(key, v, args[0]) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(key, f"must be a number, got {value!r}")
        if isinstance(value, (int, float)) and (hint is float or float(value).is_integer()):
            return hint(value)
        if isinstance(value, str):
            try:
                return hint(value)
            except ValueError:
                pass
        raise ConfigError(key, f"must be {'an integer' if hint is int else 'a number'}, got {value!r}")
    if origin is dict:
        if isinstance(value, str):                       # from the environment or --set: "a=1,b=2"
            pairs = [item.partition("=") for item in value.split(",") if item.strip()]
            if any(not sep for _, sep, _ in pairs):
                raise ConfigError(key, f"must be name=value pairs separated by commas, got {value!r}")
            value = {k.strip(): v.strip() for k, _, v in pairs}
        if not isinstance(value, Mapping):
            raise ConfigError(key, f"must be a mapping, got {value!r}")
        return {_coerce(key, k, args[0]): _coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if hint is Path:
        if not isinstance(value, (str, Path)) or not str(value):
            raise ConfigError(key, f"must be a path, got {value!r}")
        return Path(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a string (quote it in YAML), got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {hint!r} for {key}")


def validate(config: DaemonConfig, check_filesystem: bool = True, need_inbox: bool = True) -> None:
    """Check values and, for a daemon start, the folders; raise ConfigError naming the key and the fix.

    With `check_filesystem` the work, archive and failed folders are created if missing
    (they belong to the daemon); the outbox, and with `need_inbox` the inbox, must already exist
    (`submit` never reads the inbox).
    """
    _check_values(config)
    if check_filesystem:
        _check_folders(config, need_inbox)


def _check_values(cfg: DaemonConfig) -> None:
    positive = {
        "watch.poll_interval": cfg.watch.poll_interval,
        "watch.rescan_interval": cfg.watch.rescan_interval,
        "ingest.max_bytes": cfg.ingest.max_bytes,
        "ingest.max_pixels": cfg.ingest.max_pixels,
        "ingest.min_side": cfg.ingest.min_side,
        "jobs.max_attempts": cfg.jobs.max_attempts,
        "jobs.timeout_seconds": cfg.jobs.timeout_seconds,
        "jobs.lease_seconds": cfg.jobs.lease_seconds,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, f"must be greater than 0, got {value}")
    for key, value in {
        "watch.stability_seconds": cfg.watch.stability_seconds,
        "watch.incomplete_seconds": cfg.watch.incomplete_seconds,
        "jobs.retry_backoff_seconds": cfg.jobs.retry_backoff_seconds,
    }.items():
        if value < 0:
            raise ConfigError(key, f"must be 0 or more, got {value}")
    _check_ray(cfg)
    _check_web(cfg)
    for ext in cfg.watch.extensions:
        if not ext.startswith("."):
            raise ConfigError("watch.extensions", f"each extension must start with a dot, got {ext!r}")
    for key, sentinel in (("watch.sentinel", cfg.watch.sentinel), ("outbox.sentinel", cfg.outbox.sentinel)):
        if sentinel and ("/" in sentinel or sentinel in (".", "..")):
            raise ConfigError(key, f"must be a file name inside the folder, got {sentinel!r}")
    for key in ("file_mode", "dir_mode"):
        file_mode(getattr(cfg.outbox, key), f"outbox.{key}")
    if cfg.outbox.group is not None:
        import grp

        try:
            grp.getgrnam(cfg.outbox.group)
        except KeyError:
            raise ConfigError("outbox.group", f"group {cfg.outbox.group!r} does not exist on this machine") from None
    for device in cfg.worker.devices:
        head, _, index = device.partition(":")
        if head not in ("auto", "cpu", "cuda") or (index and not index.isdigit()) or (index and head != "cuda"):
            raise ConfigError("worker.devices", f"each device must be auto, cpu, cuda or cuda:N, got {device!r}")
    module, _, func = cfg.worker.pipeline.partition(":")
    if not module or not func:
        raise ConfigError("worker.pipeline", f"must be 'module:callable', got {cfg.worker.pipeline!r}")
    if cfg.worker.vram_budget != "auto" and not float(cfg.worker.vram_budget) > 0:
        raise ConfigError("worker.vram_budget", f"must be `auto` or a number of GiB > 0, got {cfg.worker.vram_budget!r}")


def web_token(cfg: DaemonConfig) -> str | None:
    """The web token: `web.token`, else the first line of `web.token_file`; None when neither is set.

    Raises:
        ConfigError: the token file cannot be read or is empty.
    """
    if cfg.web.token:
        return cfg.web.token
    if cfg.web.token_file is None:
        return None
    try:
        token = Path(cfg.web.token_file).expanduser().read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError, UnicodeDecodeError) as exc:
        raise ConfigError("web.token_file", f"cannot read a token from {cfg.web.token_file} ({exc}); put one line "
                                            "in it, e.g. `openssl rand -hex 32 > FILE`") from exc
    if not token:
        raise ConfigError("web.token_file", f"{cfg.web.token_file} is empty; e.g. `openssl rand -hex 32 > FILE`")
    return token


def _check_web(cfg: DaemonConfig) -> None:
    if not 0 <= cfg.web.port <= 65535:
        raise ConfigError("web.port", f"must be a TCP port (1-65535, or 0 for any free one), got {cfg.web.port}")
    if not cfg.web.enabled:
        return
    token = web_token(cfg)
    if token is not None and len(token) < 16:
        raise ConfigError("web.token", "must be at least 16 characters (e.g. `openssl rand -hex 32`)")
    import ipaddress

    try:
        loopback = cfg.web.host == "localhost" or ipaddress.ip_address(cfg.web.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and token is None:
        raise ConfigError("web.host", f"{cfg.web.host} is reachable from other machines: set web.token_file (or "
                                      "web.token) so that only those who know it see and change jobs, or serve "
                                      "on 127.0.0.1")


def _check_ray(cfg: DaemonConfig) -> None:
    ray = cfg.worker.ray
    if ray.workers != "auto" and ray.workers < 1:
        raise ConfigError("worker.ray.workers", f"must be `auto` or a number of actors >= 1, got {ray.workers}")
    if ray.gpus_per_worker < 0:
        raise ConfigError("worker.ray.gpus_per_worker", f"must be 0 or more, got {ray.gpus_per_worker}")
    if ray.workers == "auto" and ray.gpus_per_worker == 0:
        raise ConfigError("worker.ray.workers", "`auto` counts GPUs: give a number of actors when "
                                                "worker.ray.gpus_per_worker is 0")
    for name, amount in ray.resources.items():
        if amount < 0:
            raise ConfigError(f"worker.ray.resources.{name}", f"must be 0 or more, got {amount}")
    if cfg.worker.backend == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ConfigError("worker.backend", "`ray` needs Ray, which is not installed: "
                                                "pip install 'glimpsed[ray]' (or set worker.backend: local)")
        if ray.token_file is not None and not Path(ray.token_file).expanduser().is_file():
            raise ConfigError("worker.ray.token_file", f"{ray.token_file} does not exist: create it with "
                                                       "`ray get-auth-token --generate` and copy it to every host")


def file_mode(text: str, key: str = "outbox.file_mode") -> int:
    """Parse an octal mode string such as "0644"."""
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ConfigError(key, f"must be an octal mode string like \"0644\", got {text!r}")
    return mode


def _check_folders(cfg: DaemonConfig, need_inbox: bool) -> None:
    from glimpsed.fsinfo import is_network_fs

    inbox = cfg.path("inbox")
    if need_inbox and not inbox.is_dir():
        raise ConfigError("paths.inbox", f"{inbox} does not exist or is not a folder; create it (mkdir -p {inbox})"
                          " or mount the share, or point paths.inbox elsewhere")
    outbox = cfg.path("outbox")
    if not outbox.is_dir():
        raise ConfigError("paths.outbox", f"{outbox} does not exist; create it (mkdir -p {outbox})")
    if not os.access(outbox, os.W_OK | os.X_OK):
        raise ConfigError("paths.outbox", f"{outbox} is not writable by this user (uid {os.getuid()}); fix its"
                          " permissions or group")
    for name in ("work", "archive", "failed"):
        folder = cfg.path(name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"paths.{name}", f"cannot create {folder}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"paths.{name}", f"{folder} is not writable by this user")
    db = cfg.path("db")
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("paths.db", f"cannot create {db.parent}: {exc.strerror}") from exc
    if is_network_fs(db.parent):
        raise ConfigError("paths.db", f"{db} is on a network filesystem; SQLite locking is unreliable there and"
                          " the job store would corrupt. Put it on a local disk (e.g. /var/lib/glimpsed)")
