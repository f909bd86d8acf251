"""Tests for glimpsed.watcher: ignore rules, the stability gate, scanning, inbox checks, watching."""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from glimpsed import watcher as watcher_mod
from glimpsed.watcher import (
    DEFAULT_EXTENSIONS,
    DEFAULT_IGNORE_DIRS,
    DEFAULT_IGNORE_PATTERNS,
    IgnoreRules,
    InboxWatcher,
    StabilityTracker,
    check_inbox,
    scan_folder,
    sentinel_ok,
)

# ---------------------------------------------------------------- IgnoreRules

# (relative path, the default pattern expected to catch it)
IGNORED_BY_PATTERN = [
    ("photo.jpg.part", "*.part"),
    ("photo.jpg.crdownload", "*.crdownload"),
    ("photo.jpg.download", "*.download"),
    ("photo.jpg.partial", "*.partial"),
    ("photo.jpg.filepart", "*.filepart"),
    ("photo.jpg.!ut", "*.!ut"),
    ("photo.jpg.tmp", "*.tmp"),
    ("photo.jpg.swp", "*.swp"),
    ("~$report.jpg", "~$*"),
    (".syncthing.photo.jpg.tmp", ".syncthing.*.tmp"),
    ("~syncthing~photo.jpg.tmp", "~syncthing~*.tmp"),
    (".photo.jpg.~1234", ".*.~*"),
    (".DS_Store", ".DS_Store"),
    ("._photo.jpg", "._*"),
    (".photo.jpg.AbC123", ".*"),  # rsync's temp name
    (".hidden.jpg", ".*"),
    ("Thumbs.db", "Thumbs.db"),
    ("thumbs.db", "Thumbs.db"),  # case-insensitive
    ("desktop.ini", "desktop.ini"),
    ("PHOTO.JPG.PART", "*.part"),
    ("sub/photo.jpg.part", "*.part"),
]


@pytest.mark.parametrize(("rel", "pattern"), IGNORED_BY_PATTERN)
def test_default_patterns_hit(rel: str, pattern: str) -> None:
    reason = IgnoreRules().match(rel)
    assert reason is not None and reason.endswith(f"({pattern})")


def test_every_default_pattern_is_exercised() -> None:
    assert {p for _, p in IGNORED_BY_PATTERN} == set(DEFAULT_IGNORE_PATTERNS)


def test_default_patterns_are_valid_fnmatch() -> None:
    for pattern in (*DEFAULT_IGNORE_PATTERNS, *DEFAULT_IGNORE_DIRS):
        assert pattern and "/" not in pattern
        re.compile(fnmatch.translate(pattern))
    assert all(ext.startswith(".") and ext == ext.lower() for ext in DEFAULT_EXTENSIONS)


@pytest.mark.parametrize(
    "rel",
    ["@eaDir/photo.jpg", "sub/@eaDir/x.jpg", "#recycle/a.jpg", "#snapshot/a.jpg", ".stfolder/a.jpg",
     ".stversions/a~20240101.jpg", "__MACOSX/a.jpg", ".Trash-1000/files/a.jpg", "$Recycle.Bin/a.jpg",
     "System Volume Information/a.jpg", "lost+found/#123.jpg", ".git/a.jpg", "a/b/.cache/c/d.jpg"],
)
def test_files_in_ignored_dirs(rel: str) -> None:
    reason = IgnoreRules().match(rel)
    assert reason is not None and reason.startswith("inside the ignored folder")


@pytest.mark.parametrize("rel", ["photo.jpg", "PHOTO.JPG", "a.jpeg", "b.png", "c.webp", "d.tif", "e.TIFF", "f.bmp",
                                 "sub/dir/chair.jpg", "my photo (1).jpg", "tmp/photo.jpg", "photo.part.jpg"])
def test_accepted(rel: str) -> None:
    assert IgnoreRules().match(rel) is None


@pytest.mark.parametrize(("rel", "in_reason"), [("notes.txt", ".txt"), ("README", "no extension"),
                                                ("photo.heic", ".heic"), ("scan.pdf", ".pdf")])
def test_extension_allow_list(rel: str, in_reason: str) -> None:
    reason = IgnoreRules().match(rel)
    assert reason is not None and "not an accepted image type" in reason and in_reason in reason


def test_user_rules_add_to_defaults() -> None:
    rules = IgnoreRules(extra_patterns=("draft_*",), extra_dirs=("incoming",), extensions=(".jpg", ".GIF"))
    assert rules.match("draft_chair.jpg") == "matches a `watch.ignore` pattern (draft_*)"
    assert rules.match("photo.jpg.part") is not None  # the defaults still apply
    assert rules.match("incoming/a.jpg") is not None
    assert rules.match("@eaDir/a.jpg") is not None
    assert rules.match("a.gif") is None and rules.match("a.png") is not None
    assert rules.patterns[: len(DEFAULT_IGNORE_PATTERNS)] == DEFAULT_IGNORE_PATTERNS
    assert rules.is_ignored_dir("INCOMING") and rules.is_ignored_dir("@eaDir") and not rules.is_ignored_dir("sub")


def test_sentinel_is_ignored() -> None:
    rules = IgnoreRules(sentinel="glimpsed-inbox.jpg")
    assert rules.match("glimpsed-inbox.jpg") == "the inbox mount sentinel"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"extensions": ("jpg",)}, "`extensions` must be suffixes"), ({"extra_patterns": ("",)}, "`extra_patterns`"),
     ({"extra_dirs": ("a/b",)}, "`extra_dirs`")],
)
def test_rules_reject_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        IgnoreRules(**kwargs)


# ----------------------------------------------------------- StabilityTracker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, data: bytes, mtime_ns: int) -> None:
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tracker(clock: FakeClock) -> StabilityTracker:
    return StabilityTracker(5.0, clock=clock)


def test_stable_after_the_period(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    f = tmp_path / "a.jpg"
    _write(f, b"x" * 10, 1_000_000_000)
    tracker.track(f)
    assert tracker.is_tracking(f) and tracker.pending_count == 1
    clock.now += 4.9
    assert tracker.get_stable_files() == []
    clock.now += 0.1
    assert tracker.get_stable_files() == [f]
    assert not tracker.is_tracking(f) and tracker.pending_count == 0
    assert tracker.get_stable_files() == []  # reported once


def test_chunked_write_restarts_the_clock(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    f = tmp_path / "a.jpg"
    for i in range(1, 5):
        _write(f, b"x" * (100 * i), 1_000_000_000)  # same mtime, size grows
        tracker.track(f)
        clock.now += 3
        assert tracker.get_stable_files() == []
    clock.now += 2
    assert tracker.get_stable_files() == [f]


def test_same_size_new_mtime_is_not_stable(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    """SMB/Explorer: the final size is set first, then the data is filled in."""
    f = tmp_path / "a.jpg"
    _write(f, b"\0" * 100, 1_000_000_000)
    tracker.track(f)
    clock.now += 4
    _write(f, b"x" * 100, 2_000_000_000)
    tracker.track(f)
    clock.now += 4
    assert tracker.get_stable_files() == []
    clock.now += 1
    assert tracker.get_stable_files() == [f]


def test_fresh_stat_disagreement_without_event(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    """A change that produced no event (polling gap, NAS) is caught by the stat taken when time is up."""
    f = tmp_path / "a.jpg"
    _write(f, b"x" * 10, 1_000_000_000)
    tracker.track(f)
    _write(f, b"x" * 20, 1_000_000_000)
    clock.now += 5
    assert tracker.get_stable_files() == []
    assert tracker.is_tracking(f)
    clock.now += 5
    assert tracker.get_stable_files() == [f]


def test_vanished_file_is_dropped(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    f = tmp_path / "a.jpg"
    _write(f, b"x", 1_000_000_000)
    tracker.track(f)
    f.unlink()
    clock.now += 10
    assert tracker.get_stable_files() == []
    assert tracker.pending_count == 0
    tracker.track(tmp_path / "never-existed.jpg")
    assert tracker.pending_count == 0


def test_zero_byte_file_is_reported(tmp_path: Path, clock: FakeClock, tracker: StabilityTracker) -> None:
    f = tmp_path / "empty.jpg"
    _write(f, b"", 1_000_000_000)
    tracker.track(f)
    clock.now += 5
    assert tracker.get_stable_files() == [f]


def test_retrack_unchanged_keeps_the_clock_and_forget(tmp_path: Path, clock: FakeClock,
                                                       tracker: StabilityTracker) -> None:
    f, g = tmp_path / "a.jpg", tmp_path / "b.jpg"
    _write(f, b"x", 1_000_000_000)
    _write(g, b"y", 1_000_000_000)
    tracker.track(f)
    tracker.track(g)
    clock.now += 3
    tracker.track(f)  # a rescan sees it again, unchanged
    tracker.forget(g)
    tracker.forget(tmp_path / "unknown.jpg")
    clock.now += 2
    assert tracker.get_stable_files() == [f]


def test_directories_are_not_tracked(tmp_path: Path, tracker: StabilityTracker) -> None:
    tracker.track(tmp_path)
    assert tracker.pending_count == 0


def test_injected_stat(tmp_path: Path, clock: FakeClock) -> None:
    calls: list[Path] = []

    def fake_stat(path: Path) -> os.stat_result:
        calls.append(path)
        return os.stat_result((0o100644, 1, 1, 1, 0, 0, 42, 0, 0, 0))

    tracker = StabilityTracker(1.0, clock=clock, stat=fake_stat)
    tracker.track(tmp_path / "virtual.jpg")
    clock.now += 1
    assert tracker.get_stable_files() == [tmp_path / "virtual.jpg"]
    assert len(calls) == 2  # once when tracked, once fresh when due


def test_negative_period_rejected() -> None:
    with pytest.raises(ValueError, match="`stability_seconds` must be >= 0, got -1"):
        StabilityTracker(-1)


def test_thread_safety_smoke(tmp_path: Path, clock: FakeClock) -> None:
    tracker = StabilityTracker(0.0, clock=clock)
    files = [tmp_path / f"{i}.jpg" for i in range(50)]
    for f in files:
        _write(f, b"x", 1_000_000_000)
    found: list[Path] = []
    errors: list[BaseException] = []

    def feed() -> None:
        try:
            for _ in range(20):
                for f in files:
                    tracker.track(f)
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=feed) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        found.extend(tracker.get_stable_files())
    for t in threads:
        t.join()
    found.extend(tracker.get_stable_files())
    assert not errors
    assert set(found) == set(files)
    assert tracker.pending_count == 0


# ---------------------------------------------------------------- scan_folder


def _tree(root: Path) -> None:
    for rel in ["a.jpg", "b.png", "notes.txt", "c.jpg.part", "sub/d.jpg", "sub/deeper/e.jpg", "@eaDir/f.jpg",
                "sub/@eaDir/g.jpg", ".stversions/h.jpg", "sub/._i.jpg"]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_scan_flat(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert list(scan_folder(tmp_path, IgnoreRules(), recursive=False)) == [tmp_path / "a.jpg", tmp_path / "b.png"]


def test_scan_recursive_prunes_ignored_dirs(tmp_path: Path) -> None:
    _tree(tmp_path)
    got = {p.relative_to(tmp_path).as_posix() for p in scan_folder(tmp_path, IgnoreRules(), recursive=True)}
    assert got == {"a.jpg", "b.png", "sub/d.jpg", "sub/deeper/e.jpg"}


def test_scan_skips_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real.jpg").write_bytes(b"x")
    (tmp_path / "link.jpg").symlink_to(tmp_path / "real.jpg")
    (tmp_path / "loop").symlink_to(tmp_path)
    assert list(scan_folder(tmp_path, IgnoreRules(), recursive=True)) == [tmp_path / "real.jpg"]


def test_scan_missing_root_and_vanishing_files(tmp_path: Path) -> None:
    assert list(scan_folder(tmp_path / "gone", IgnoreRules(), recursive=True)) == []
    _tree(tmp_path)
    it = scan_folder(tmp_path, IgnoreRules(), recursive=True)
    assert next(it) == tmp_path / "a.jpg"
    for path in sorted(tmp_path.rglob("*"), reverse=True):  # the whole tree vanishes mid-scan
        path.unlink() if path.is_file() else path.rmdir()
    assert list(it) == [tmp_path / "b.png"]  # already listed; the ingest will find it gone


# ---------------------------------------------------------------- check_inbox


def test_check_inbox(tmp_path: Path) -> None:
    missing = tmp_path / "nas" / "in"
    ok, reason = check_inbox(missing, None)
    assert not ok and reason == f"inbox {missing} does not exist — is the share mounted?"
    inbox = tmp_path / "in"
    inbox.mkdir()
    assert check_inbox(inbox, None).ok
    state = check_inbox(inbox, ".glimpsed-inbox")
    assert not state.ok
    assert state.reason == f"sentinel {inbox / '.glimpsed-inbox'} missing — the share looks unmounted; intake paused"
    assert not sentinel_ok(inbox, ".glimpsed-inbox") and sentinel_ok(inbox, None)
    (inbox / ".glimpsed-inbox").touch()
    ok, reason = check_inbox(inbox, ".glimpsed-inbox")
    assert ok and "ready" in reason
    afile = tmp_path / "file"
    afile.touch()
    assert check_inbox(afile, None) == (False, f"inbox {afile} is not a directory")


# --------------------------------------------------------------- InboxWatcher


def _ignore(path: Path) -> None:
    """An ``on_path`` that does nothing."""


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


@pytest.mark.parametrize("mode", ["polling", "native"])
def test_watcher_sees_new_files(tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "in"
    (inbox / "sub").mkdir(parents=True)
    seen: list[Path] = []
    watcher = InboxWatcher(inbox, IgnoreRules(), recursive=True, mode=mode, poll_interval=0.1, on_path=seen.append)
    assert watcher.mode == mode and watcher.mode_reason
    assert watcher.start()
    try:
        assert watcher.is_alive()
        (inbox / "chair.jpg.part").write_bytes(b"x")
        (inbox / "notes.txt").write_bytes(b"x")
        (inbox / "chair.jpg").write_bytes(b"x")
        (inbox / "sub" / "table.png").write_bytes(b"x")
        assert _wait_for(lambda: {inbox / "chair.jpg", inbox / "sub" / "table.png"} <= set(seen))
        outside = tmp_path / "batch"
        outside.mkdir()
        (outside / "lamp.jpg").write_bytes(b"x")
        os.rename(outside, inbox / "batch")  # a folder moved in: its files arrive without events
        assert _wait_for(lambda: inbox / "batch" / "lamp.jpg" in seen)
        assert not {p.name for p in seen} & {"chair.jpg.part", "notes.txt"}
    finally:
        watcher.stop()
    assert not watcher.is_alive()
    watcher.stop()  # idempotent


@pytest.mark.parametrize("mode", ["polling", "native"])
def test_watcher_survives_the_inbox_vanishing(tmp_path: Path, mode: str) -> None:
    inbox = tmp_path / "in"
    inbox.mkdir()
    watcher = InboxWatcher(inbox, IgnoreRules(), recursive=False, mode=mode, poll_interval=0.1, on_path=_ignore)
    assert watcher.start()
    try:
        inbox.rmdir()
        assert _wait_for(lambda: not watcher.is_alive())
        inbox.mkdir()
        assert watcher.start()  # the daemon restarts it once the share is back
        assert watcher.is_alive()
    finally:
        watcher.stop()


def test_watcher_start_fails_softly_and_callback_errors_are_contained(tmp_path: Path) -> None:
    watcher = InboxWatcher(tmp_path / "missing", IgnoreRules(), False, "polling", 0.1, on_path=_ignore)
    assert watcher.start() is False
    assert not watcher.is_alive()

    def boom(path: Path) -> None:
        raise RuntimeError("callback failed")

    inbox = tmp_path / "in"
    inbox.mkdir()
    (inbox / "a.jpg").write_bytes(b"x")
    watcher = InboxWatcher(inbox, IgnoreRules(), False, "polling", 0.1, on_path=boom)
    watcher.hint(str(inbox / "a.jpg"), is_directory=False)  # logged, not raised


def test_watcher_rejects_bad_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`poll_interval` must be > 0, got 0"):
        InboxWatcher(tmp_path, IgnoreRules(), False, "polling", 0, on_path=_ignore)


class _ExhaustedInotify:
    """Stands in for watchdog's Observer when fs.inotify.max_user_watches is used up."""

    def schedule(self, *args: object, **kwargs: object) -> None:
        pass

    def start(self) -> None:
        raise OSError(errno.ENOSPC, "inotify watch limit reached")

    def stop(self) -> None:
        pass


def test_native_falls_back_to_polling_without_inotify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watcher_mod, "Observer", _ExhaustedInotify)
    seen: list[Path] = []
    watcher = InboxWatcher(tmp_path, IgnoreRules(), False, "native", 0.1, on_path=seen.append)
    assert watcher.start()
    try:
        assert watcher.mode == "polling" and "inotify watch limit reached" in watcher.mode_reason
        (tmp_path / "a.jpg").write_bytes(b"x")
        assert _wait_for(lambda: tmp_path / "a.jpg" in seen)
    finally:
        watcher.stop()
