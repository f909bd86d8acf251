"""`worker.backend: ray` end to end: a Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head without
GPUs and two nodes with one fake GPU each, token authentication on), the daemon as a real subprocess on the
embedded CPU pipeline, real folders and a real SQLite store."""

from __future__ import annotations

import json
import os
import secrets
import signal
from pathlib import Path

import pytest

from tests.integration.conftest import daemons, make_photo
from tests.integration.ray_cluster import LocalCluster

GATED = "tests.integration.gated_pipeline:GatedPipeline"


def _require_ray() -> None:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        from tests.unit.ai_modules.nodetools import tools_required

        message = "ray is not installed: pip install -e '.[test,ray]' (`make test` does)"
        pytest.fail(message) if tools_required() else pytest.skip(message)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    _require_ray()
    root = tmp_path_factory.mktemp("ray")
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    gate = root / "gate"
    gate.mkdir()
    # The nodes' processes (and so the actors) inherit these: our code, the gate, Ray's token.
    c = LocalCluster(token, {"GLIMPSED_TEST_GATE": str(gate), "GLIMPSED_TEST_GATE_AFTER": "depth"})
    c.gate = gate
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def start(cluster, tmp_path):
    """start(overrides) -> a daemon with worker.backend: ray on the cluster; the gate is shut at the start."""
    for name in ("reached", "open", "stages.log"):
        (cluster.gate / name).unlink(missing_ok=True)
    ray_section = {"backend": "ray", "ray": {"address": cluster.address, "token_file": str(cluster.token)}}
    with daemons(tmp_path, {"worker": ray_section, "jobs": {"retry_backoff_seconds": 0.2}}) as run:
        def start_daemon(overrides: dict | None = None, ready: bool = True):
            d = run(overrides)
            if ready:
                d.wait_for(lambda: idle_actors(d) == 2, "both actors idle", 120)
            return d
        yield start_daemon


def actors(d) -> list[dict]:
    state = d.store().daemon_state()
    return state["cluster"]["actors"] if state and state.get("cluster") else []


def idle_actors(d) -> int:
    return sum(a["state"] == "idle" for a in actors(d))


def running_actor(d, job_id: str) -> dict:
    return d.wait_for(lambda: next((a for a in actors(d) if a["job"] == job_id and a["pid"]), None),
                      f"the actor running {job_id}", 30)


def stages_run(gate: Path) -> list[str]:
    return [line.split()[0] for line in (gate / "stages.log").read_text().splitlines()]


def held_after_depth(d, cluster, name: str, seed: int) -> tuple:
    """Drop a photo; its job and the actor running it, once the job waits at the gate with its depth stage back
    on the head."""
    (d.inbox / name).write_bytes(make_photo(seed))
    d.wait_for(lambda: (cluster.gate / "reached").exists(), "the job to reach the gate")
    (job,) = d.jobs("running")
    d.wait_for(lambda: (d.root / "work" / job.id / "depth" / "done.json").is_file(), "depth back on the head")
    return job, running_actor(d, job.id)


def test_photos_spread_over_both_gpu_nodes_and_each_is_published_once(start):
    d = start()
    for i in range(6):
        (d.inbox / f"p{i}.jpg").write_bytes(make_photo(i))
    done = d.wait_jobs("done", 6, 240)
    manifests = [json.loads(p.read_text()) for p in d.published()]
    assert len(manifests) == 6 and len({m["job_id"] for m in manifests}) == 6 == len({j.id for j in done})
    assert {m["device"].split("actor ")[1].split(",")[0] for m in manifests} == {"w0", "w1"}
    assert all(" on " in m["device"] and "GPU 0" in m["device"] for m in manifests)
    nodes = {a["node_id"] for a in actors(d)}
    assert len(nodes) == 2                                   # one actor per GPU node, none on the head
    status = d.cli("status").stdout
    assert "3 node(s) up, 2 GPU(s)" in status and "actor w0" in status and "actor w1" in status
    doctor = d.cli("doctor", check=False).stdout
    assert "2 GPU(s)" in doctor and "actor w0" in doctor and "idle" in doctor


def test_an_actor_killed_mid_job_requeues_it_and_another_resumes_it(start, cluster):
    d = start({"worker": {"pipeline": GATED}})
    job, victim = held_after_depth(d, cluster, "vase.jpg", 3)
    os.kill(victim["pid"], signal.SIGKILL)
    d.wait_for(lambda: d.store().get(job.id).attempts == 2, "the job on its second attempt", 60)
    (cluster.gate / "open").touch()
    (done,) = d.wait_jobs("done", 1, 120)
    assert done.id == job.id and done.attempts == 2
    retries = [e["message"] for e in d.store().events(job.id) if e["event"] == "job_retry_scheduled"]
    assert len(retries) == 1 and retries[0].startswith("WorkerLost: actor w")
    ran = stages_run(cluster.gate)
    assert ran.count("segment") == ran.count("multiview") == ran.count("depth") == 1   # resumed after depth
    assert ran.count("reconstruct") == 1 and len(d.published()) == 1


def test_a_node_removed_and_added_back(start, cluster):
    d = start({"worker": {"pipeline": GATED}})
    job, lost = held_after_depth(d, cluster, "lamp.jpg", 4)
    cluster.remove_node(lost["node_id"])
    d.wait_for(lambda: d.store().get(job.id).attempts == 2, "the job on its second attempt", 60)
    (cluster.gate / "open").touch()
    (done,) = d.wait_jobs("done", 1, 120)
    assert done.id == job.id and len(d.published()) == 1
    assert lost["name"] not in json.loads(d.published()[0].read_text())["device"]   # finished on the other one
    d.wait_for(lambda: next((a for a in actors(d) if a["name"] == lost["name"] and a["state"] == "waiting"), None),
               "its actor waiting for a GPU", 30)
    cluster.add_node()
    d.wait_for(lambda: idle_actors(d) == 2, "the lost actor back on the new node", 120)
    for i in range(2):
        (d.inbox / f"after{i}.jpg").write_bytes(make_photo(10 + i))
    d.wait_jobs("done", 3, 120)
    assert len(d.published()) == 3


def test_cancel_reaches_the_actor_at_its_next_stage_boundary(start, cluster):
    d = start({"worker": {"pipeline": GATED}})
    job, _ = held_after_depth(d, cluster, "clock.jpg", 5)
    assert "will stop" in d.cli("cancel", job.id).stdout
    d.wait_jobs("cancelled", 1, 30)                      # the gate stays shut: only the cancel ends the wait
    assert (d.root / "failed" / "clock.jpg").exists() and d.published() == []
    assert "reconstruct" not in stages_run(cluster.gate)
    (cluster.gate / "open").touch()
    d.wait_for(lambda: idle_actors(d) == 2, "the actor free again")
    (d.inbox / "next.jpg").write_bytes(make_photo(6))
    d.wait_jobs("done", 1, 120)


def test_a_job_past_its_timeout_fails_and_its_actor_is_restarted(start, cluster):
    d = start({"worker": {"pipeline": GATED}, "jobs": {"timeout_seconds": 8, "retry_backoff_seconds": 0.2}})
    job, before = held_after_depth(d, cluster, "slow.jpg", 7)
    (failed,) = d.wait_jobs("failed", 1, 60)              # the gate stays shut: the stage never returns
    assert failed.error_type == "JobTimeout"
    d.wait_for(lambda: (d.root / "failed" / "slow.jpg.error.json").exists(), "the photo set aside with its error")
    d.wait_for(lambda: next((a for a in actors(d) if a["name"] == before["name"] and a["state"] == "idle"
                             and a["pid"] != before["pid"]), None), "the actor restarted", 90)
    (cluster.gate / "open").touch()
    (d.inbox / "quick.jpg").write_bytes(make_photo(8))
    (done,) = d.wait_jobs("done", 1, 120)
    assert done.source_name == "quick.jpg"


def test_an_actor_whose_host_differs_from_the_head_refuses_to_start(start, cluster, tmp_path):
    """The head holds a model (DINOv2) that the GPU hosts' models folder lacks: each actor refuses to start,
    says why in `status` and `doctor`, and no job is claimed."""
    from tests.tiny_models import tiny_dinov2

    tiny_dinov2(tmp_path / "models")
    (tmp_path / "hosts-models").mkdir()
    d = start({"paths": {"models": str(tmp_path / "models")},
               "worker": {"ray": {"address": cluster.address, "token_file": str(cluster.token),
                                  "models_dir": str(tmp_path / "hosts-models")}}}, ready=False)
    d.wait_for(lambda: [a["state"] for a in actors(d)] == ["refused", "refused"], "both actors refused", 120)
    problem = actors(d)[0]["problem"]
    assert problem.startswith("VersionMismatch: ") and "model dinov2 missing here" in problem
    (d.inbox / "cup.jpg").write_bytes(make_photo(9))
    d.wait_jobs("queued", 1)
    assert "refused - VersionMismatch" in d.cli("status").stdout
    doctor = d.cli("doctor", check=False)
    assert doctor.returncode != 0 and "model dinov2 missing here" in doctor.stdout
    assert d.jobs("running") == [] and d.published() == []


def test_a_pipeline_error_comes_back_as_itself_and_follows_the_local_rules(start):
    """A photo with nothing to cut out fails on the actor with NoObjectFound; the head gets that error (class and
    hint), spends no retry on it (bad input) and sets the photo aside with its error.json, as a local worker does."""
    import io

    import numpy as np
    from PIL import Image

    d = start()
    blank = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(blank, "PNG")
    (d.inbox / "blank.png").write_bytes(blank.getvalue())
    (job,) = d.wait_jobs("failed", 1, 60)
    assert job.error_type == "NoObjectFound" and job.attempts == 1
    error = d.wait_for(lambda: (d.root / "failed" / "blank.png.error.json").is_file()
                       and json.loads((d.root / "failed" / "blank.png.error.json").read_text()), "error.json")
    assert error["error_type"] == "NoObjectFound" and "Photograph the object" in error["hint"]
