"""Worker.loop with fake pipelines: retries, bad input, timeouts, publishing, originals."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ai_modules.errors import InputError, PipelineStopped
from glimpsed.config import load_config
from glimpsed.store import JobStore
from glimpsed.worker import Worker


@dataclass
class FakeResult:
    outputs: dict
    stages: list = field(default_factory=list)

    def to_dict(self):
        return {"pipeline_version": "fake", "device": "cpu", "stages": self.stages}


class FakePipeline:
    """Fails with `errors` in turn, then writes one output file."""

    def __init__(self, *errors: BaseException, stop_after_calls: int | None = None) -> None:
        self.errors = list(errors)
        self.calls = 0

    def run(self, input_path, workdir, on_progress=None, should_stop=None):
        self.calls += 1
        assert Path(input_path).exists()
        on_progress("segment", 0.0, "start")
        if self.errors:
            raise self.errors.pop(0)
        if should_stop():
            raise PipelineStopped("depth")
        out = Path(workdir) / "export"
        out.mkdir(parents=True, exist_ok=True)
        (out / "model.ply").write_bytes(b"ply")
        on_progress("segment", 1.0, "done")
        return FakeResult({"ply": out / "model.ply"}, [{"name": "segment", "backend": "fake"}])


@pytest.fixture
def env(tmp_path):
    for name in ("inbox", "outbox", "work"):
        (tmp_path / name).mkdir()
    config = load_config(None, env={}, overrides={"paths.root": str(tmp_path), "jobs.retry_backoff_seconds": "10",
                                                   "jobs.max_attempts": "3"})
    store = JobStore(config.path("db"))
    clock = [1000.0]

    def add(name="chair.jpg", in_inbox=True):
        src = (tmp_path / "inbox" / name) if in_inbox else (tmp_path / name)
        src.write_bytes(b"original")
        workdir = tmp_path / "work" / name
        (workdir / "input").mkdir(parents=True)
        (workdir / "input" / "image.png").write_bytes(b"png")
        st = src.stat()
        return store.enqueue(source_path=str(src), source_name=name, sha256=name * 4, size=8, src_size=st.st_size,
                             src_mtime_ns=st.st_mtime_ns, pipeline_version="v", config_hash="h", max_attempts=3,
                             workdir=str(workdir), now=clock[0])

    def worker(pipeline):
        return Worker(config, store, device="cpu", pipeline=pipeline, clock=lambda: clock[0])

    return config, store, add, worker, clock, tmp_path


def test_success_publishes_and_archives(env):
    config, store, add, worker, clock, root = env
    job = add()
    done = worker(FakePipeline()).loop(now=clock[0])
    assert done.state == "done" and Path(done.output_dir) == root / "outbox" / "chair"
    manifest = json.loads((root / "outbox" / "chair" / "manifest.json").read_text())
    assert manifest["source"]["name"] == "chair.jpg" and manifest["stages"] == [{"name": "segment", "backend": "fake"}]
    assert not (root / "inbox" / "chair.jpg").exists() and list((root / "archive").rglob("chair.jpg"))
    assert not Path(job.workdir).exists()  # keep_workdir is off
    assert store.get(job.id).progress == 1.0


def test_transient_errors_retry_with_exponential_backoff(env):
    config, store, add, worker, clock, _ = env
    job = add()
    w = worker(FakePipeline(OSError("share went away"), OSError("again")))
    assert w.loop(now=clock[0]).next_attempt_at == pytest.approx(clock[0] + 10)
    assert w.loop(now=clock[0]) is None  # not due yet
    clock[0] += 10
    assert w.loop(now=clock[0]).next_attempt_at == pytest.approx(clock[0] + 20)
    clock[0] += 20
    assert w.loop(now=clock[0]).state == "done"
    assert store.get(job.id).attempts == 3


def test_transient_errors_fail_after_max_attempts(env):
    config, store, add, worker, clock, root = env
    add()
    w = worker(FakePipeline(*[OSError("disk")] * 3))
    for _ in range(3):
        job = w.loop(now=clock[0])
        clock[0] += 1000
    assert job.state == "failed" and job.error_type == "OSError"
    error = json.loads((root / "failed" / "chair.jpg.error.json").read_text())
    assert error["attempts"] == 3 and "glimpsed retry" in error["hint"]


def test_bad_input_fails_at_once(env):
    config, store, add, worker, clock, root = env
    add()
    job = worker(FakePipeline(InputError("no object found: the photo is one colour"))).loop(now=clock[0])
    assert job.state == "failed" and job.attempts == 1 and "one colour" in job.error_message
    assert (root / "failed" / "chair.jpg").exists()


def test_timeout_fails_the_job(env):
    config, store, add, worker, clock, _ = env
    add()

    class Slow(FakePipeline):
        def run(self, *a, **kw):
            clock[0] += config.jobs.timeout_seconds + 1
            return super().run(*a, **kw)

    job = worker(Slow()).loop(now=clock[0])
    assert job.state == "failed" and job.error_type == "JobTimeout"


def test_stop_releases_the_job_without_spending_an_attempt(env):
    config, store, add, worker, clock, _ = env
    add()
    w = worker(FakePipeline())
    w.stop.set()
    job = w.loop(now=clock[0])
    assert job.state == "queued" and job.attempts == 0


def test_submitted_files_outside_the_inbox_are_never_moved(env):
    config, store, add, worker, clock, root = env
    add("outside.jpg", in_inbox=False)
    assert worker(FakePipeline()).loop(now=clock[0]).state == "done"
    assert (root / "outside.jpg").exists()
    add("bad.jpg", in_inbox=False)
    assert worker(FakePipeline(InputError("bad"))).loop(now=clock[0]).state == "failed"
    assert (root / "bad.jpg").exists()


def test_interrupted_publish_is_not_published_twice(env):
    """A crash after the rename but before the store said done: the rerun must not publish again."""
    from glimpsed.outbox import publish, reserve_target

    config, store, add, worker, clock, root = env
    job = add()
    w = worker(FakePipeline())
    claimed = store.claim(w.owner, 60, now=clock[0])
    target = reserve_target(root / "outbox", "", "chair")
    store.set_output_dir(job.id, str(target))
    ply = root / "m.ply"
    ply.write_bytes(b"ply")
    publish(outbox=root / "outbox", rel_dir="", name="chair", job_id=job.id, outputs={"ply": ply}, manifest={},
            config=config.outbox, target=target)
    store.release(claimed.id, w.owner, "simulated crash")
    done = w.loop(now=clock[0])
    assert done.state == "done" and done.output_dir == str(target)
    assert [p.name for p in (root / "outbox").iterdir()] == ["chair"]


def test_a_full_disk_waits_without_spending_an_attempt(env):
    import errno

    config, store, add, worker, clock, _ = env
    job = add()
    full = OSError(errno.ENOSPC, "No space left on device", "/work/x/reconstruct/points.ply")
    w = worker(FakePipeline(full, full, full, full))
    for _ in range(4):  # more often than max_attempts: a full disk is the machine's fault, not the photo's
        waiting = w.loop(now=clock[0])
        assert waiting.state == "queued" and waiting.attempts == 0
        assert waiting.next_attempt_at == pytest.approx(clock[0] + 10)
        clock[0] += 10
    assert w.loop(now=clock[0]).state == "done"
    assert "job_waiting" in [e["event"] for e in store.events(job.id)]


def test_no_job_is_claimed_while_the_outbox_is_gone(env):
    config, store, add, worker, clock, root = env
    add()
    (root / "outbox").rmdir()
    w = worker(FakePipeline())
    assert w.loop(now=clock[0]) is None and "does not exist" in w.paused_reason
    assert store.counts()["queued"] == 1 and not (root / "outbox").exists()  # never recreated
    (root / "outbox").mkdir()
    assert w.loop(now=clock[0]).state == "done" and w.paused_reason == ""


def test_a_name_too_long_is_not_transient():
    import errno

    from glimpsed.worker import is_transient

    assert not is_transient(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert is_transient(OSError(errno.EIO, "I/O error"))


def test_failing_to_set_aside_never_kills_the_worker(env):
    config, store, add, worker, clock, root = env
    job = add()
    (root / "failed").write_bytes(b"a file where the failed/ folder should be")
    failed = worker(FakePipeline(InputError("one colour"))).loop(now=clock[0])
    assert failed.state == "failed"
    assert "original_not_moved" in [e["event"] for e in store.events(job.id)]
    assert (root / "inbox" / "chair.jpg").exists()
    st = (root / "inbox" / "chair.jpg").stat()
    assert store.is_known_file(root / "inbox" / "chair.jpg", st.st_size, st.st_mtime_ns)  # not taken in again


def test_successful_retry_clears_the_failed_copy_and_its_error_json(env):
    config, store, add, worker, clock, root = env
    job = add()
    worker(FakePipeline(InputError("one colour"))).loop(now=clock[0])
    assert (root / "failed" / "chair.jpg.error.json").exists()
    store.retry(job.id)
    assert worker(FakePipeline()).loop(now=clock[0]).state == "done"
    assert not (root / "failed" / "chair.jpg.error.json").exists() and not (root / "failed" / "chair.jpg").exists()
    assert list((root / "archive").rglob("chair.jpg"))  # the original follows outbox.after_success


def test_bad_input_advice_does_not_suggest_retry(env):
    from ai_modules.errors import NoObjectFound

    config, store, add, worker, clock, root = env
    add()
    worker(FakePipeline(NoObjectFound("the whole frame is one colour", "Photograph the object on a contrasting"
                                                                       " background"))).loop(now=clock[0])
    hint = json.loads((root / "failed" / "chair.jpg.error.json").read_text())["hint"]
    assert hint.startswith("Photograph the object") and "would fail the same way" in hint


OPENED: list[tuple] = []


class CountingPipeline(FakePipeline):
    """A `worker.pipeline` factory that records each time a worker opens it; its runs log as ai_modules does."""

    def __init__(self, settings, device=None, models_dir=None, vram_budget=None):  # noqa: ANN001
        super().__init__()
        OPENED.append((settings["segment"]["size"], device, models_dir, vram_budget))

    def run(self, input_path, workdir, on_progress=None, should_stop=None):  # noqa: ANN001
        import logging

        on_progress("segment", 0.0, "start")
        logging.getLogger("ai_modules.pipeline").info("segment (fake): running")
        return super().run(input_path, workdir, on_progress, should_stop)


def test_a_worker_opens_its_pipeline_once_and_the_pipelines_logs_carry_the_job(env, capsys):
    from glimpsed.logs import configure_logging

    config, store, add, _, clock, root = env
    config = dataclasses.replace(config, worker=dataclasses.replace(
        config.worker, pipeline=f"{__name__}:CountingPipeline", vram_budget=12.0))
    OPENED.clear()
    configure_logging("json", "info")
    w = Worker(config, store, device="cpu", clock=lambda: clock[0])
    first, second = add("a.jpg"), add("b.jpg")
    assert w.loop(now=clock[0]).state == "done" and w.loop(now=clock[0]).state == "done"
    assert OPENED == [(256, "cpu", config.path("models"), 12 * 2**30)]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    pipeline_lines = [x for x in lines if x.get("logger") == "ai_modules.pipeline"]
    assert [x["job_id"] for x in pipeline_lines] == [first.id, second.id]
    assert all(x["stage"] == "segment" for x in pipeline_lines)
    events = [e["event"] for e in store.events(first.id)]
    assert "stage_finished" in events
    w.close()
