"""Finding inbox files safely: ignore rules, the stability gate, scanning and watching.

Events are hints only. The daemon scans at startup, watches, and rescans on a
timer; every path found either way goes through :class:`StabilityTracker`
before it is ingested. No GPU, database or AI imports here.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Final, NamedTuple

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from glimpsed import fsinfo

log = structlog.get_logger(__name__)

# (fnmatch pattern on the file name, why such files are skipped). Matched
# case-insensitively, first hit wins, so specific patterns come before ".*".
_DEFAULT_RULES: Final[tuple[tuple[str, str], ...]] = (
    (".syncthing.*.tmp", "Syncthing temporary file"),  # Syncthing, Linux/macOS
    ("~syncthing~*.tmp", "Syncthing temporary file"),  # Syncthing on Windows
    (".*.~*", "Nextcloud/ownCloud partial upload"),  # Nextcloud client: .name.~1a2b
    (".DS_Store", "macOS Finder metadata"),  # macOS
    ("._*", "macOS AppleDouble resource fork"),  # macOS on SMB/FAT/exFAT
    (".*", "hidden file (also rsync's in-progress .name.XXXXXX)"),  # dotfiles; rsync temp names
    ("*.part", "temporary file of a download"),  # Firefox, wget, KDE, qBittorrent
    ("*.crdownload", "temporary file of a download"),  # Chrome, Edge
    ("*.download", "temporary file of a download"),  # Safari
    ("*.partial", "rclone/browser partial transfer"),  # rclone --partial-suffix, IE/Edge legacy
    ("*.filepart", "WinSCP partial transfer"),  # WinSCP
    ("*.!ut", "uTorrent incomplete file"),  # uTorrent/BitTorrent
    ("*.tmp", "temporary file"),  # many Windows programs, SMB copy tools
    ("*.swp", "editor swap file"),  # vim
    ("~$*", "Microsoft Office lock file"),  # Office owner files
    ("Thumbs.db", "Windows thumbnail cache"),  # Windows Explorer
    ("desktop.ini", "Windows folder settings"),  # Windows Explorer
)
DEFAULT_IGNORE_PATTERNS: Final[tuple[str, ...]] = tuple(p for p, _ in _DEFAULT_RULES)

# Directory names (fnmatch, case-insensitive) never descended into. The hidden
# ones are also caught by ".*" at the end; they are listed for the record.
DEFAULT_IGNORE_DIRS: Final[tuple[str, ...]] = (
    "@eaDir",  # Synology thumbnails and index data
    "#recycle",  # Synology recycle bin
    "#snapshot",  # Synology snapshot browsing
    ".stfolder",  # Syncthing folder marker
    ".stversions",  # Syncthing file versions
    "__MACOSX",  # resource forks unpacked from macOS zip archives
    ".Trash-*",  # freedesktop trash on removable and network drives
    "$RECYCLE.BIN",  # Windows recycle bin
    "System Volume Information",  # Windows
    "lost+found",  # ext2/3/4 fsck
    ".*",  # any hidden folder: .git, .cache, app sync state
)

# Suffixes of the formats Pillow reads without plugins (no .heic: needs pillow-heif).
DEFAULT_EXTENSIONS: Final[frozenset[str]] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp"})


def _compile(pattern: str, what: str) -> re.Pattern[str]:
    if not isinstance(pattern, str) or not pattern or "/" in pattern:
        raise ValueError(f"`{what}` entries must be non-empty file names without '/', got {pattern!r}")
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE)


class IgnoreRules:
    """Which inbox files are skipped, and why. User rules are added to the defaults.

    Args:
        extra_patterns: fnmatch patterns on file names, added to :data:`DEFAULT_IGNORE_PATTERNS`.
        extra_dirs: fnmatch patterns on directory names, added to :data:`DEFAULT_IGNORE_DIRS`.
        extensions: Accepted suffixes, each starting with ``"."``; compared case-insensitively.
        sentinel: Name of the mount sentinel file in the inbox, never treated as input.

    Raises:
        ValueError: A pattern is empty or contains "/", or a suffix lacks the leading dot.
    """

    def __init__(
        self,
        extra_patterns: Iterable[str] = (),
        extra_dirs: Iterable[str] = (),
        extensions: Iterable[str] = DEFAULT_EXTENSIONS,
        sentinel: str | None = None,
    ) -> None:
        rules = [*_DEFAULT_RULES, *((p, "matches a `watch.ignore` pattern") for p in extra_patterns)]
        self._patterns = [(p, _compile(p, "extra_patterns"), why) for p, why in rules]
        self._dirs = [(d, _compile(d, "extra_dirs")) for d in (*DEFAULT_IGNORE_DIRS, *extra_dirs)]
        exts = tuple(extensions)
        bad = [e for e in exts if not isinstance(e, str) or not e.startswith(".") or len(e) < 2]
        if bad:
            raise ValueError(f"`extensions` must be suffixes such as '.jpg', got {bad!r}")
        self.extensions: frozenset[str] = frozenset(e.lower() for e in exts)
        self.sentinel = sentinel

    @property
    def patterns(self) -> tuple[str, ...]:
        """The effective file-name patterns, defaults first."""
        return tuple(p for p, _, _ in self._patterns)

    @property
    def dirs(self) -> tuple[str, ...]:
        """The effective directory-name patterns, defaults first."""
        return tuple(d for d, _ in self._dirs)

    def is_ignored_dir(self, name: str) -> bool:
        """True when a directory with this name (a single component) is never entered."""
        return any(rx.match(name) for _, rx in self._dirs)

    def match(self, rel_path: str | PurePath) -> str | None:
        """Say why a path relative to the inbox is ignored.

        Returns:
            The reason, e.g. ``"temporary file of a download (*.part)"``, or None
            when the file is a candidate for ingest.
        """
        parts = PurePath(rel_path).parts
        if not parts:
            return "empty path"
        name = parts[-1]
        if self.sentinel is not None and name == self.sentinel:
            return "the inbox mount sentinel"
        for part in parts[:-1]:
            if self.is_ignored_dir(part):
                return f"inside the ignored folder {part!r}"
        for pattern, rx, why in self._patterns:
            if rx.match(name):
                return f"{why} ({pattern})"
        suffix = PurePath(name).suffix.lower()
        if suffix not in self.extensions:
            accepted = ", ".join(sorted(self.extensions))
            return f"not an accepted image type ({suffix or 'no extension'}); accepted: {accepted}"
        return None


@dataclass
class _Seen:
    signature: tuple[int, int]  # (st_size, st_mtime_ns)
    since: float  # clock() when this signature was first seen
    not_before: float = 0.0  # clock() before which the file is not reported (a deferred look), unless it changes


class StabilityTracker:
    """Decide when an inbox file has finished arriving. The only I/O is ``stat``.

    A file is *stable* when its size and its mtime (ns) have not changed for
    ``stability_seconds`` of the injected clock, and a fresh stat taken when
    that time is up still agrees. Why both: chunked copies (cp, rsync, NAS sync
    jobs) grow the size; Windows Explorer over SMB sets the final size first and
    then fills the data, so only the mtime moves; scanners and editors that
    reopen a file to append pages or rewrite it move one or the other and so
    restart the clock. A file renamed into place keeps its old mtime and is
    stable after one full period from when it was first seen. A file that
    vanishes (deleted, moved away, renamed to its final name) is dropped; its
    new name arrives as a new path. A zero-byte file is reported once stable;
    ingest rejects it. Returned files are no longer tracked. On NFS the client
    caches attributes (``acregmax``, up to 60 s), so ``stat`` can hide growth:
    keep ``stability_seconds`` above it; ingest's before/after check (``open``
    revalidates attributes) is the second line.

    Thread-safe: watchdog calls :meth:`track` from its thread while the daemon
    loop calls :meth:`get_stable_files`. Stats run outside the lock, so a hung
    share blocks only the caller.

    Args:
        stability_seconds: How long size and mtime must stay unchanged.
        clock: Monotonic seconds; injected so tests need no sleeps.
        stat: ``os.stat``-like function; injected for tests.
    """

    def __init__(
        self,
        stability_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        stat: Callable[[Path], os.stat_result] = os.stat,
    ) -> None:
        if stability_seconds < 0:
            raise ValueError(f"`stability_seconds` must be >= 0, got {stability_seconds!r}")
        self._seconds = stability_seconds
        self._clock = clock
        self._stat = stat
        self._lock = threading.Lock()
        self._seen: dict[Path, _Seen] = {}

    def _signature(self, path: Path) -> tuple[int, int] | None:
        try:
            st = self._stat(path)
        except OSError:
            return None
        if not stat_module.S_ISREG(st.st_mode):
            return None
        return st.st_size, st.st_mtime_ns

    def track(self, path: str | os.PathLike[str], not_before: float | None = None) -> None:
        """Record a path, or restart its clock if its size or mtime changed.

        With `not_before` (a time of the tracker's clock) an unchanged file is reported no earlier than
        then: intake looks again later at a file that seemed cut off. A change clears it.
        """
        path = Path(path).absolute()
        signature = self._signature(path)
        now = self._clock()
        with self._lock:
            if signature is None:
                self._seen.pop(path, None)
                return
            seen = self._seen.get(path)
            if seen is None or seen.signature != signature:
                self._seen[path] = _Seen(signature, now, not_before or 0.0)
            elif not_before is not None:
                seen.not_before = not_before

    def forget(self, path: str | os.PathLike[str]) -> None:
        """Stop tracking a path (no error when it is not tracked)."""
        with self._lock:
            self._seen.pop(Path(path).absolute(), None)

    def is_tracking(self, path: str | os.PathLike[str]) -> bool:
        """True while a path waits to become stable."""
        with self._lock:
            return Path(path).absolute() in self._seen

    @property
    def pending_count(self) -> int:
        """How many paths wait to become stable."""
        with self._lock:
            return len(self._seen)

    def get_stable_files(self) -> list[Path]:
        """Return the files that became stable (absolute paths), oldest first, and stop tracking them."""
        now = self._clock()
        with self._lock:
            due = [(p, s) for p, s in self._seen.items() if now - s.since >= self._seconds and now >= s.not_before]
        stable: list[Path] = []
        for path, seen in due:
            signature = self._signature(path)
            with self._lock:
                if self._seen.get(path) is not seen:
                    continue  # re-tracked with a new signature meanwhile
                if signature is None:
                    del self._seen[path]
                    log.debug("tracked_file_vanished", path=str(path))
                elif signature != seen.signature:
                    self._seen[path] = _Seen(signature, now)
                else:
                    del self._seen[path]
                    stable.append(path)
        return stable


IgnoredFn = Callable[[Path, str], None]


def _report(on_ignored: IgnoredFn | None, path: Path, reason: str) -> None:
    """Pass an ignored entry on, unless it is meant to be invisible (hidden files, the sentinel)."""
    if on_ignored is not None and not reason.startswith(("hidden file", "the inbox mount sentinel")):
        on_ignored(path, reason)


def scan_folder(root: Path, rules: IgnoreRules, recursive: bool,
                on_ignored: IgnoredFn | None = None) -> Iterator[Path]:
    """Yield the candidate files under ``root``, sorted per directory.

    Regular files only. Symlinks (to files or directories) are skipped: an inbox
    on a share is writable by many, and a link would let a dropper make the
    daemon read any file its own user can see; it also rules out directory loops.
    Ignored directories are pruned. Entries that vanish or cannot be read
    mid-scan are logged and skipped, never raised. ``on_ignored(path, reason)``
    hears of each entry a user may have meant as input and that is skipped (a
    link, a FIFO, a folder while not recursive, a GIF, a temp name), so
    ``glimpsed status`` can say why it stays.
    """
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.warning("scan_dir_failed", path=str(directory), error=str(exc))
            continue
        subdirs: list[Path] = []
        for entry in entries:
            try:
                if entry.is_symlink():
                    log.debug("symlink_skipped", path=entry.path)
                    _report(on_ignored, Path(entry.path), "a symbolic link; copy the photo itself into the inbox")
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if rules.is_ignored_dir(entry.name):
                        continue
                    if recursive:
                        subdirs.append(Path(entry.path))
                    else:
                        _report(on_ignored, Path(entry.path), "a folder; set watch.recursive: true to take photos"
                                                              " from subfolders")
                    continue
                if not entry.is_file(follow_symlinks=False):
                    _report(on_ignored, Path(entry.path), "not a regular file (a FIFO, socket or device)")
                    continue
            except OSError as exc:
                log.debug("scan_entry_failed", path=entry.path, error=str(exc))
                continue
            path = Path(entry.path)
            reason = rules.match(path.relative_to(root))
            if reason is None:
                yield path
            else:
                log.debug("file_ignored", path=entry.path, reason=reason)
                _report(on_ignored, path, reason)
        stack.extend(reversed(subdirs))


class InboxState(NamedTuple):
    """Whether intake may run (``ok``) and, either way, why (``reason``)."""

    ok: bool
    reason: str


def sentinel_ok(inbox: Path, sentinel: str | None) -> bool:
    """True when no sentinel is configured or ``inbox/sentinel`` exists."""
    return sentinel is None or os.path.lexists(Path(inbox) / sentinel)


def check_inbox(inbox: Path, sentinel: str | None) -> InboxState:
    """Say whether the inbox can be read now. An unmounted share is never an empty inbox.

    Args:
        inbox: The inbox folder.
        sentinel: File name that must exist in the inbox (created on the share
            itself, so it disappears with an unmount), or None.

    Returns:
        ``InboxState(ok, reason)``; unpacks as ``(ok, reason)``.
    """
    inbox = Path(inbox)
    try:
        if not inbox.is_dir():
            if inbox.exists():
                return InboxState(False, f"inbox {inbox} is not a directory")
            return InboxState(False, f"inbox {inbox} does not exist — is the share mounted?")
        if not os.access(inbox, os.R_OK | os.X_OK):
            return InboxState(False, f"inbox {inbox} is not readable by the daemon's user — check its permissions")
        if sentinel is not None and not sentinel_ok(inbox, sentinel):
            return InboxState(False, f"sentinel {inbox / sentinel} missing — the share looks unmounted; intake paused")
    except OSError as exc:
        return InboxState(False, f"inbox {inbox} cannot be read: {exc}")
    return InboxState(True, f"inbox {inbox} is ready" + (f" (sentinel {sentinel} present)" if sentinel else ""))


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: InboxWatcher) -> None:
        self._watcher = watcher

    def on_created(self, event: FileSystemEvent) -> None:
        self._watcher.hint(os.fsdecode(event.src_path), is_directory=event.is_directory)

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.dest_path:
            self._watcher.hint(os.fsdecode(event.dest_path), is_directory=event.is_directory)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:  # a directory's mtime moves with every file in it
            self._watcher.hint(os.fsdecode(event.src_path), is_directory=False)

    on_closed = on_modified

    def on_deleted(self, event: FileSystemEvent) -> None:
        if event.is_directory and Path(os.fsdecode(event.src_path)) == self._watcher.inbox:
            self._watcher.mark_vanished()


class InboxWatcher:
    """Watch the inbox with watchdog and pass candidate paths to ``on_path``.

    Args:
        inbox: The inbox folder.
        rules: Ignore rules applied to every path (relative to ``inbox``).
        recursive: Watch sub-folders too.
        mode: ``"auto"``, ``"native"`` or ``"polling"``; see :func:`fsinfo.choose_watch_mode`.
        poll_interval: Seconds between snapshots in polling mode.
        on_path: Called from watchdog's thread with each created, modified,
            closed or moved-in file that passes the rules. Exceptions are logged.
        on_ignored: Called with each such path that the rules skip, and why.
    """

    def __init__(
        self,
        inbox: Path,
        rules: IgnoreRules,
        recursive: bool,
        mode: str,
        poll_interval: float,
        on_path: Callable[[Path], None],
        on_ignored: IgnoredFn | None = None,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"`poll_interval` must be > 0, got {poll_interval!r}")
        self.inbox = Path(inbox).absolute()
        self._rules, self._recursive, self._on_path, self._on_ignored = rules, recursive, on_path, on_ignored
        self._poll_interval = poll_interval
        self.mode, self.mode_reason = fsinfo.choose_watch_mode(self.inbox, mode)
        self._observer: BaseObserver | None = None
        self._failed = False

    def hint(self, raw: str, *, is_directory: bool) -> None:
        """Handle one watchdog event path (also callable directly, e.g. from tests)."""
        path = Path(raw)
        try:
            rel = path.relative_to(self.inbox)
        except ValueError:
            return
        if is_directory:
            if self._recursive and rel.parts and not any(map(self._rules.is_ignored_dir, rel.parts)):
                for found in scan_folder(path, self._rules, recursive=True):
                    self.hint(str(found), is_directory=False)  # a folder moved in brings no file events
            return
        reason = self._rules.match(rel) or ("a symbolic link; copy the photo itself into the inbox"
                                            if path.is_symlink() else None)
        if reason is not None:
            _report(self._on_ignored, path, reason)
            return
        try:
            self._on_path(path)
        except Exception:  # a failing callback must not kill watchdog's thread
            log.exception("on_path_failed", path=str(path))

    def mark_vanished(self) -> None:
        """Record that the inbox itself was deleted or unmounted; :meth:`is_alive` turns False."""
        self._failed = True
        log.warning("inbox_vanished", inbox=str(self.inbox))

    def start(self) -> bool:
        """Start watching. Returns False (and logs why) when the observer cannot start."""
        if self.is_alive():
            return True
        self.stop()
        self._failed = False
        try:
            self._observer = self._start_observer()
        except OSError as exc:
            if self.mode != "native" or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                log.error("watcher_start_failed", inbox=str(self.inbox), mode=self.mode, error=str(exc))
                return False
            self.mode = "polling"
            self.mode_reason = f"native events unavailable ({exc}; raise the fs.inotify sysctl limits): polling"
            return self.start()
        log.info("watcher_started", inbox=str(self.inbox), mode=self.mode, reason=self.mode_reason)
        return True

    def _start_observer(self) -> BaseObserver:
        polling = self.mode == "polling"
        observer: BaseObserver = PollingObserver(timeout=self._poll_interval) if polling else Observer()
        observer.schedule(_Handler(self), str(self.inbox), recursive=self._recursive)
        try:
            observer.start()
        except OSError:
            observer.stop()
            raise
        return observer

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching and join watchdog's threads (idempotent)."""
        observer, self._observer = self._observer, None
        if observer is None:
            return
        observer.stop()
        if observer.is_alive():
            observer.join(timeout)
        log.info("watcher_stopped", inbox=str(self.inbox))

    def is_alive(self) -> bool:
        """False once the inbox vanished or watchdog stopped; the daemon then restarts it."""
        observer = self._observer
        if observer is None or self._failed or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in list(observer.emitters))
