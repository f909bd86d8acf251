"""The systemd units: hardened (systemd-analyze exposure <= 3.5), still valid, the GPU still reachable.

The checks that read the unit files run everywhere; those that need systemd-analyze (252 or later,
for `security --offline=true`) skip where it is absent.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = [ROOT / "systemd" / "glimpsed.service", ROOT / "systemd" / "glimpsed@.service"]
MAX_EXPOSURE = 3.5
HAVE_ANALYZE = shutil.which("systemd-analyze") is not None
needs_analyze = pytest.mark.skipif(not HAVE_ANALYZE, reason="systemd-analyze is not installed")
ids = [u.name for u in UNITS]


@functools.cache
def _tool():
    """tools/unit_security.py (tools/ is no package), which reads the score as the tool prints it."""
    spec = importlib.util.spec_from_file_location("unit_security", ROOT / "tools" / "unit_security.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in file order]}}; repeated keys are kept, comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: setting outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not a setting: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(path: Path) -> dict[str, list[str]]:
    return parse_unit(path)["Service"]


def last(settings: dict[str, list[str]], key: str) -> str | None:
    values = settings.get(key)
    return values[-1] if values else None


def is_yes(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "yes", "true", "on")


# -- read from the files: the GPU stays reachable ------------------------------------------------


@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_devices_closed_but_gpu_allowed(unit: Path) -> None:
    s = service(unit)
    assert last(s, "DevicePolicy") == "closed"
    allow = {}
    for entry in s.get("DeviceAllow", []):
        node, _, access = entry.partition(" ")
        allow[node] = access.strip() or "rwm"
    for node in ("/dev/nvidiactl", "/dev/nvidia-uvm", "char-nvidia-frontend", "char-nvidia-uvm"):
        assert node in allow, f"{unit.name}: DeviceAllow={node} missing: CUDA could not open the GPU"
        assert "r" in allow[node] and "w" in allow[node], f"{unit.name}: {node} needs rw, has {allow[node]}"
    assert {"video", "render"} <= set(" ".join(s.get("SupplementaryGroups", [])).split())


@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_no_settings_that_break_cuda_or_jit(unit: Path) -> None:
    s = service(unit)
    assert not is_yes(last(s, "PrivateDevices")), "PrivateDevices=yes hides /dev/nvidia*"
    assert not is_yes(last(s, "MemoryDenyWriteExecute")), "numba/PyTorch JIT and CUDA need W+X memory"
    assert last(s, "ProcSubset") in (None, "all"), "ProcSubset=pid hides /proc/driver/nvidia"
    assert not is_yes(last(s, "PrivateUsers")), "PrivateUsers=yes breaks chgrp to outbox.group"


@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_daemon_settings_kept(unit: Path) -> None:
    s = service(unit)
    assert last(s, "Type") == "notify" and last(s, "NotifyAccess") == "main"
    assert last(s, "WatchdogSec") and last(s, "KillMode") == "mixed" and last(s, "TimeoutStopSec")
    assert last(s, "StateDirectory") == "glimpsed" and last(s, "CacheDirectory") == "glimpsed"
    assert "/var/cache/glimpsed/torch_extensions" in " ".join(s.get("Environment", []))
    assert s.get("ReadWritePaths"), "the inbox/outbox need ReadWritePaths="


def test_template_matches_the_unit() -> None:
    """Same sandbox in both; only ExecStart differs (and the template has no LogsDirectory= of its own)."""
    single, template = service(UNITS[0]), service(UNITS[1])
    skip = {"ExecStart", "LogsDirectory"}
    assert {k: v for k, v in single.items() if k not in skip} == {k: v for k, v in template.items() if k not in skip}
    assert "%i" in template["ExecStart"][-1]


# -- systemd-analyze -------------------------------------------------------------------------------


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_exposure_at_most_3_5(unit: Path) -> None:
    exposure = _tool().exposure(unit)
    assert exposure.score <= MAX_EXPOSURE, f"{unit.name}: exposure {exposure} > {MAX_EXPOSURE}"


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_verify_reports_nothing_but_the_missing_binary(unit: Path) -> None:
    """`systemd-analyze verify` flags unknown keys and bad values; the install path is absent here."""
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=30, check=False)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    name = unit.name.replace("@.", "@i.")  # a template is verified as an instance
    ours = [line for line in lines if str(unit) in line or line.startswith((unit.name, name))]
    problems = [line for line in ours if "/opt/glimpsed/.venv/bin/glimpsed is not executable" not in line]
    assert not problems, "\n".join(problems)


@needs_analyze
@pytest.mark.parametrize("unit", UNITS, ids=ids)
def test_syscall_filter_lets_cuda_and_torch_through(unit: Path) -> None:
    """Resolve SystemCallFilter= as systemd does: the first line sets allow-list mode, `~` lines remove."""
    proc = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager"], capture_output=True, text=True,
                          timeout=30, check=True)
    groups: dict[str, list[str]] = {}
    current = None
    for line in proc.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())

    def expand(name: str) -> set[str]:
        return set().union(*(expand(n) for n in groups[name])) if name.startswith("@") else {name}

    entries = service(unit)["SystemCallFilter"]
    assert not entries[0].startswith("~"), "expected an allow-list"
    allowed: set[str] = set()
    for entry in entries:
        names = set().union(*(expand(n) for n in entry.lstrip("~").split()))
        allowed = allowed - names if entry.startswith("~") else allowed | names
    cuda_torch = {"ioctl", "mmap", "munmap", "mprotect", "mremap", "madvise", "memfd_create", "clone3", "execve",
                  "sched_getaffinity", "sched_setaffinity", "mbind", "set_mempolicy", "get_mempolicy",
                  "inotify_add_watch", "socket", "sendmsg", "fchown", "chown", "fchmodat", "fsync", "flock"}
    assert cuda_torch <= allowed, f"not allowed: {sorted(cuda_torch - allowed)}"
    refused = {"setuid", "setresuid", "setgroups", "capset", "ptrace", "mount", "bpf", "init_module", "reboot",
               "swapon", "sched_setscheduler", "setpriority", "clock_settime", "perf_event_open"}
    assert not refused & allowed, f"allowed but should not be: {sorted(refused & allowed)}"
    assert last(service(unit), "SystemCallErrorNumber") == "EPERM"
