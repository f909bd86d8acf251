"""A Ray cluster on this machine for the tests, in a process of its own: a head without GPUs and GPU nodes with
one fake GPU each (`ray.cluster_utils.Cluster`, which stops every process it started; the Ray CLI would leave
agents behind). Ray reads its token settings once per process, so the test process itself never imports Ray.

`LocalCluster` starts it and speaks its protocol: it prints one JSON line ``{"address", "gpu_nodes": [node ids]}``
when up, then reads JSON commands from stdin, one per line, answering each with one JSON line:
``{"add": 1}`` -> ``{"node": id}``; ``{"remove": id}`` -> ``{"removed": id}``. End of input or ``{"stop": 1}`` shuts the cluster down.

    python -m tests.integration.ray_cluster GPU_NODES
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class LocalCluster:
    """This module in its own process (a head and `gpu_nodes` GPU nodes, token authentication with the token in
    file `token`); `address`, `add_node()`, `remove_node(id)`, `stop()`. `env`: more variables for the nodes'
    processes, and so for the actors."""

    def __init__(self, token: Path, env: dict[str, str] | None = None, gpu_nodes: int = 2) -> None:
        self.token = token
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token), "PYTHONPATH": str(REPO),
               "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.ray_cluster", str(gpu_nodes)], env=env,
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        first = self._answer()
        self.address: str = first["address"]

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the Ray cluster process ended ({self.proc.wait(30)})")
        return json.loads(line)

    def _ask(self, command: dict) -> dict:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def add_node(self) -> str:
        return self._ask({"add": 1})["node"]

    def remove_node(self, node_id: str) -> None:
        self._ask({"remove": node_id})

    def stop(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def main() -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1, num_gpus=1) for _ in range(int(sys.argv[1]))]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "gpu_nodes": [n.node_id for n in nodes]}), flush=True)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if "add" in command:
                node = cluster.add_node(num_cpus=1, num_gpus=1)
                cluster.wait_for_nodes()
                print(json.dumps({"node": node.node_id}), flush=True)
            elif "remove" in command:
                node = next(n for n in cluster.list_all_nodes() if n.node_id == command["remove"])
                cluster.remove_node(node)
                print(json.dumps({"removed": command["remove"]}), flush=True)
            else:
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main()
