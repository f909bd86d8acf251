#!/usr/bin/env python3
"""Print the systemd exposure score of each unit in systemd/, optionally next to a git revision's.

    python3 tools/unit_security.py                  # | unit | after |
    python3 tools/unit_security.py --before HEAD    # | unit | before | after |
    python3 tools/unit_security.py --max 3.5        # exit 1 when a unit scores above 3.5

The score is the "Overall exposure level" line of `systemd-analyze security --offline=true UNIT`
(0.0 safest .. 10.0 unsafe). The JSON form (`--json=short`) is not used: in systemd 252 it lists
each setting's exposure but neither the weights nor the total, so the total cannot be rebuilt from it.
A unit at REV is written to a temporary folder under its own name, since the name (a template's
`@`, the `.service` suffix) matters to the analysis.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS_DIR = ROOT / "systemd"
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount")
_OVERALL = re.compile(r"Overall exposure level for (?P<unit>\S+):\s+(?P<score>\d+(?:\.\d+)?)\s+(?P<label>[A-Z]+)")


class ToolMissing(RuntimeError):
    """systemd-analyze is not on PATH."""


@dataclass(frozen=True)
class Exposure:
    """One unit's overall exposure, as systemd-analyze rates it."""

    score: float
    label: str  # OK, MEDIUM, EXPOSED, UNSAFE...

    def __str__(self) -> str:
        return f"{self.score:.1f} {self.label}"


def systemd_analyze() -> str:
    """Path of systemd-analyze, or ToolMissing with what to install."""
    path = shutil.which("systemd-analyze")
    if path is None:
        raise ToolMissing("systemd-analyze not found on PATH: install systemd (250 or later, for"
                          " `security --offline=true`), e.g. `apt-get install systemd`")
    return path


def exposure(unit_file: Path) -> Exposure:
    """Overall exposure of `unit_file`, from `systemd-analyze security --offline=true`."""
    proc = subprocess.run([systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit_file)],
                          capture_output=True, text=True, errors="replace", timeout=60, check=False)
    match = _OVERALL.search(proc.stdout + proc.stderr)
    if match is None:
        detail = (proc.stderr or proc.stdout).strip()[-500:]
        raise RuntimeError(f"systemd-analyze security gave no overall exposure for {unit_file}"
                           f" (exit {proc.returncode}): {detail}")
    return Exposure(float(match["score"]), match["label"])


def unit_files(units_dir: Path = UNITS_DIR) -> list[Path]:
    """The unit files in `units_dir` (not the sysusers.d snippet beside them)."""
    return sorted(p for p in units_dir.iterdir() if p.is_file() and p.name.endswith(UNIT_SUFFIXES))


def exposure_at(rev: str, unit_file: Path, tmp: Path) -> Exposure | None:
    """Exposure of `unit_file` as it was at git revision `rev`; None when it did not exist there."""
    rel = unit_file.resolve().relative_to(ROOT).as_posix()
    proc = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{rel}"], capture_output=True, check=False)
    if proc.returncode != 0:
        if b"exists on disk, but not in" in proc.stderr or b"does not exist in" in proc.stderr:
            return None
        raise RuntimeError(f"git show {rev}:{rel} failed: {proc.stderr.decode(errors='replace').strip()}")
    folder = tmp / rev.replace("/", "_")
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / unit_file.name  # same name: a template stays a template
    copy.write_bytes(proc.stdout)
    return exposure(copy)


def table(rows: list[tuple[str, Exposure | None, Exposure]], before: bool) -> str:
    """A markdown table of the scores."""
    if before:
        lines = ["| unit | before | after |", "|---|---|---|"]
        lines += [f"| {name} | {b if b is not None else '(absent)'} | {a} |" for name, b, a in rows]
    else:
        lines = ["| unit | after |", "|---|---|"]
        lines += [f"| {name} | {a} |" for name, _, a in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", metavar="REV", help="also rate the units as they are at this git revision")
    parser.add_argument("--max", type=float, metavar="SCORE", help="exit 1 when a unit's exposure is above SCORE")
    parser.add_argument("units", nargs="*", type=Path, help=f"unit files (default: every unit in {UNITS_DIR})")
    args = parser.parse_args(argv)
    try:
        version = subprocess.run([systemd_analyze(), "--version"], capture_output=True, text=True,
                                 check=False).stdout.split("\n", 1)[0]
    except ToolMissing as exc:
        print(f"unit_security: {exc}", file=sys.stderr)
        return 2
    units = args.units or unit_files()
    rows: list[tuple[str, Exposure | None, Exposure]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="unit-security-") as tmp:
            for unit in units:
                before = exposure_at(args.before, unit, Path(tmp)) if args.before else None
                rows.append((unit.name, before, exposure(unit)))
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        print(f"unit_security: {exc}", file=sys.stderr)
        return 2
    print(f"Overall exposure, `systemd-analyze security --offline=true` ({version}; 0 safest, 10 unsafe)"
          + (f"; before = {args.before}, after = working tree" if args.before else ""))
    print()
    print(table(rows, before=bool(args.before)))
    if args.max is not None:
        over = [f"{name} ({after.score:.1f})" for name, _, after in rows if after.score > args.max]
        if over:
            print(f"\nabove {args.max:.1f}: {', '.join(over)}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
