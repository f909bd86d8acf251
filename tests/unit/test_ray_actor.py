"""The parts of the Ray backend that need no cluster: what must match between the head and a GPU host, and the
job files that travel between them."""

from __future__ import annotations

import pytest

from glimpsed.ray_actor import differences, finished_stages, identity, pack, unpack


def test_identity_names_the_models_present_and_differences_say_what_differs(tmp_path):
    from tests.tiny_models import tiny_dinov2

    empty = identity(tmp_path / "none")
    assert empty["models"] == {} and empty["glimpsed"] and empty["pipeline"]
    tiny_dinov2(tmp_path / "models")
    head = identity(tmp_path / "models")
    assert set(head["models"]) == {"dinov2"}
    assert set(head["models"]["dinov2"]["files"]) == {"config.json", "model.safetensors"}
    assert differences(head, head) == []
    assert differences(head, empty) == ["model dinov2 missing here"]
    assert differences(empty, head) == ["model dinov2 missing on the head"]
    other = dict(head, glimpsed="9.9", pipeline="0.1")
    assert differences(other, head)[:2] == [f"glimpsed {head['glimpsed']} here, 9.9 on the head",
                                            f"pipeline version {head['pipeline']} here, 0.1 on the head"]
    bigger = {**head, "models": {"dinov2": {"files": {"config.json": 1, "model.safetensors": 2}, "sha256": {}}}}
    assert differences(bigger, head) == ["model dinov2: other file sizes here"]
    locked = {**head, "models": {"dinov2": {**head["models"]["dinov2"], "sha256": {"model.safetensors": "a" * 64}}}}
    mine = {**head, "models": {"dinov2": {**head["models"]["dinov2"], "sha256": {"model.safetensors": "b" * 64}}}}
    assert differences(locked, mine) == ["model dinov2: other sha256 here (models.lock.json)"]
    assert differences(head, mine) == []                   # a hash only one side recorded is no difference


def test_pack_and_unpack_carry_a_job_folder_and_nothing_outside_it(tmp_path):
    job = tmp_path / "job"
    (job / "input").mkdir(parents=True)
    (job / "input" / "image.png").write_bytes(b"png")
    (job / "segment").mkdir()
    (job / "segment" / "cutout.png").write_bytes(b"cut")
    (job / "segment" / "done.json").write_text("{}")
    (job / "multiview").mkdir()
    (job / "multiview" / "views.npz").write_bytes(b"half written, no done.json")
    (job / "segment" / ".cutout.png.123.tmp").write_bytes(b"a temporary")
    assert finished_stages(job) == {"segment"}
    files = pack(job, only={"input"} | finished_stages(job))
    assert files == {"input/image.png": b"png", "segment/cutout.png": b"cut", "segment/done.json": b"{}"}
    unpack(files, tmp_path / "copy")
    assert pack(tmp_path / "copy") == files
    with pytest.raises(ValueError, match="outside"):
        unpack({"../escape.txt": b"x"}, tmp_path / "copy")
    assert not (tmp_path / "escape.txt").exists()


def test_pipeline_errors_travel_whole_between_processes():
    """An error raised on a GPU host reaches the daemon as itself: its class decides bad input vs retry, its
    `hint` goes into error.json."""
    import pickle

    from ai_modules import errors as E

    for exc in (E.NoObjectFound("the foreground covers 0.1% of the frame", "Use a plain background"),
                E.SettingsError("pipeline.segment.size", "an integer >= 64", 3), E.PipelineStopped("fit"),
                E.ModelNotAvailable("segment", "rembg", "/m/u2net/isnet.onnx", "https://example.org"),
                E.FeatureModelError("/m/dinov2", "no config.json", "pull it"),
                E.StageFailed("reconstruct", ValueError("nan"))):
        back = pickle.loads(pickle.dumps(exc))
        assert type(back) is type(exc) and str(back) == str(exc) and vars(back) == vars(exc)
    assert pickle.loads(pickle.dumps(E.NoObjectFound("r", "Use a plain background"))).hint == "Use a plain background"
