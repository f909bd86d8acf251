"""Run the pinned Node tools of `tools/` (gltf-validator, splat-transform) from tests.

Install them with ``npm ci --prefix tools`` (``make test`` does). Without them
the tests that need them are skipped, unless ``CI`` is set (to anything but
``""``, ``0`` or ``false``) or ``GLIMPSED_REQUIRE_NODE_TOOLS=1``: then a missing
tool is a failure, so a CI run cannot pass by skipping these checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

TOOLS_DIR = Path(__file__).resolve().parents[3] / "tools"
MIN_NODE_MAJOR = 18
TIMEOUT_S = 60

_VALIDATE_JS = """
const fs = require('fs');
const validator = require(process.argv[1]);
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 0})
  .then((report) => process.stdout.write(JSON.stringify(report)),
        (error) => { process.stderr.write(String(error)); process.exit(2); });
"""


def tools_required() -> bool:
    """True when missing tools must fail the run instead of skipping (CI, or opted in)."""
    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return ci or os.environ.get("GLIMPSED_REQUIRE_NODE_TOOLS", "") == "1"


@dataclass(frozen=True)
class NodeTools:
    """Paths of node and the installed tools.

    Attributes:
        node: the node executable.
        splat_transform: entry script of @playcanvas/splat-transform.
        gltf_validator: package directory of gltf-validator (for ``require``).
    """

    node: str
    splat_transform: Path
    gltf_validator: Path

    def splat_transform_run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
        """Run ``splat-transform -w ARGS`` (quiet); the result is returned whatever the exit code."""
        cmd = [self.node, str(self.splat_transform), "-q", "-w", *map(str, args)]
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)

    def validate_glb(self, path: Path) -> dict:
        """The Khronos validator's report (``issues.numErrors``, ``issues.messages``...) for a .glb/.gltf."""
        done = subprocess.run([self.node, "-e", _VALIDATE_JS, str(self.gltf_validator), str(path)],
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"gltf-validator failed on {path} (exit {done.returncode}): {done.stderr.strip()}")
        return json.loads(done.stdout)


def find_tools() -> tuple[NodeTools | None, str]:
    """Locate node and the tools; returns (tools or None, why not)."""
    node = shutil.which("node")
    if node is None:
        return None, "`node` is not on PATH"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return None, f"cannot read the node version from {version!r}"
    if major < MIN_NODE_MAJOR:
        return None, f"node {version} is older than {MIN_NODE_MAJOR}"
    modules = TOOLS_DIR / "node_modules"
    splat = modules / "@playcanvas" / "splat-transform" / "bin" / "cli.mjs"
    validator = modules / "gltf-validator"
    missing = [str(p) for p in (splat, validator / "index.js") if not p.is_file()]
    if missing:
        return None, f"missing {', '.join(missing)}; run `npm ci --prefix tools`"
    return NodeTools(node, splat, validator), ""


def require_tools() -> NodeTools:
    """Return the tools, or skip the test (fail it under CI / GLIMPSED_REQUIRE_NODE_TOOLS=1)."""
    tools, why = find_tools()
    if tools is not None:
        return tools
    if tools_required():
        pytest.fail(f"Node tools required (CI or GLIMPSED_REQUIRE_NODE_TOOLS=1) but unavailable: {why}")
    pytest.skip(f"Node tools unavailable: {why}")
