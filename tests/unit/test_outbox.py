"""Atomic publish, manifests and the fate of originals."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from glimpsed.config import OutboxConfig
from glimpsed.errors import PublishError
from glimpsed.outbox import (already_published, clean_staging, dispose_original, move_aside, publish,
                             reserve_target)


@pytest.fixture
def outputs(tmp_path):
    src = tmp_path / "work"
    src.mkdir()
    (src / "model.ply").write_bytes(b"ply-bytes")
    (src / "model.splat").write_bytes(b"s" * 64)
    (src / "preview.png").write_bytes(b"png")
    return {"ply": src / "model.ply", "splat": src / "model.splat", "preview": src / "preview.png"}


def test_publish_writes_files_and_manifest(tmp_path, outputs):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    folder = publish(outbox=outbox, rel_dir="", name="chair", job_id="j1", outputs=outputs,
                     manifest={"source": {"name": "chair.jpg"}}, config=OutboxConfig(file_mode="0640"))
    assert folder == outbox / "chair"
    assert sorted(p.name for p in folder.iterdir()) == ["chair.ply", "chair.splat", "manifest.json", "preview.png"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["job_id"] == "j1" and manifest["source"]["name"] == "chair.jpg"
    assert manifest["outputs"]["ply"] == {"file": "chair.ply", "bytes": 9,
                                          "sha256": hashlib.sha256(b"ply-bytes").hexdigest()}
    assert stat.S_IMODE(os.stat(folder / "chair.ply").st_mode) == 0o640
    assert not list(outbox.glob(".staging-*"))
    assert already_published(folder, "j1") and not already_published(folder, "j2")


def test_name_collisions_and_subfolders(tmp_path, outputs):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    cfg = OutboxConfig()
    a = publish(outbox=outbox, rel_dir="", name="chair", job_id="a", outputs=outputs, manifest={}, config=cfg)
    b = publish(outbox=outbox, rel_dir="", name="chair", job_id="b", outputs=outputs, manifest={}, config=cfg)
    c = publish(outbox=outbox, rel_dir="kitchen/2026", name="chair", job_id="c", outputs=outputs, manifest={},
                config=cfg)
    assert (a.name, b.name) == ("chair", "chair-2")
    assert c == outbox / "kitchen" / "2026" / "chair"
    assert reserve_target(outbox, "", "chair").name == "chair-3"


def test_failed_publish_leaves_nothing_behind(tmp_path, outputs):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    outputs["ply"].unlink()
    with pytest.raises(PublishError, match="cannot publish job j1"):
        publish(outbox=outbox, rel_dir="", name="chair", job_id="j1", outputs=outputs, manifest={},
                config=OutboxConfig())
    assert list(outbox.iterdir()) == []


def test_clean_staging_removes_leftovers(tmp_path):
    (tmp_path / ".staging-x").mkdir()
    (tmp_path / ".staging-x" / "half.ply").write_bytes(b"x")
    (tmp_path / ".staging-live").mkdir()  # a job that still runs, e.g. under another instance
    (tmp_path / "done").mkdir()
    assert [p.name for p in clean_staging(tmp_path, lambda job_id: job_id == "live")] == [".staging-x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging-live", "done"]


@pytest.mark.parametrize("policy, remains, archived", [("keep", True, False), ("delete", False, False),
                                                       ("archive", False, True)])
def test_dispose_original(tmp_path, policy, remains, archived):
    src = tmp_path / "inbox" / "sub" / "chair.jpg"
    src.parent.mkdir(parents=True)
    src.write_bytes(b"jpeg")
    st = src.stat()
    what = dispose_original(src, policy, tmp_path / "archive", "sub", st.st_size, st.st_mtime_ns, now=0)
    assert src.exists() == remains
    found = list((tmp_path / "archive").rglob("chair.jpg")) if (tmp_path / "archive").exists() else []
    assert bool(found) == archived, what
    if archived:
        assert found[0].parent.name == "sub" and found[0].parent.parent.name == "1970-01-01"


def test_changed_original_is_left_in_the_inbox(tmp_path):
    src = tmp_path / "chair.jpg"
    src.write_bytes(b"new content")
    assert "changed" in dispose_original(src, "delete", tmp_path / "a", "", 3, 1)
    assert src.exists()


def test_move_aside_never_overwrites(tmp_path):
    for content in (b"one", b"two"):
        f = tmp_path / "chair.jpg"
        f.write_bytes(content)
        move_aside(f, tmp_path / "failed")
    assert sorted(p.name for p in (tmp_path / "failed").iterdir()) == ["chair-2.jpg", "chair.jpg"]


def test_subfolders_get_dir_mode_whatever_the_umask(tmp_path, outputs):
    """The unit runs with UMask=0027; results in mirrored subfolders must still be readable by others."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    old = os.umask(0o077)
    try:
        folder = publish(outbox=outbox, rel_dir="shop/chairs", name="chair", job_id="j1", outputs=outputs,
                         manifest={}, config=OutboxConfig())
    finally:
        os.umask(old)
    for path in (outbox / "shop", outbox / "shop" / "chairs", folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((folder / "chair.ply").stat().st_mode) == 0o644


def test_publish_never_creates_the_outbox(tmp_path, outputs):
    from glimpsed.errors import OutboxUnavailable

    with pytest.raises(OutboxUnavailable, match="does not exist"):
        publish(outbox=tmp_path / "gone", rel_dir="", name="chair", job_id="j1", outputs=outputs, manifest={},
                config=OutboxConfig())
    assert not (tmp_path / "gone").exists()


def test_long_names_fit(tmp_path, outputs):
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    folder = publish(outbox=outbox, rel_dir="", name="n" * 251, job_id="j1", outputs={**outputs, "splat_glb":
                     outputs["ply"]}, manifest={}, config=OutboxConfig())
    assert all(len(os.fsencode(p.name)) <= 255 for p in (folder, *folder.iterdir()))
    source = tmp_path / ("m" * 251 + ".jpg")
    source.write_bytes(b"x")
    from glimpsed.outbox import error_file, set_aside_failed

    aside = set_aside_failed(source, tmp_path / "failed", {"job_id": "j"})
    assert error_file(aside).exists() and len(os.fsencode(error_file(aside).name)) <= 255
