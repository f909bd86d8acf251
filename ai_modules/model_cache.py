"""A learned backend's loaded model, kept between jobs, and the identity of the files it came from.

A `ModelCache` holds one loaded model under a key: the identity of its files (path, bytes,
mtime — a replaced or newly pulled file has another), the device and the precision. A job on a
warm worker asks for the same key and gets the loaded model without reading a file; a changed
file, device or precision loads afresh and drops the old model first.

File hashes (sha256, for the manifest) are expensive for multi-GB checkpoints, so each is computed
once per file version and remembered in ``.glimpsed-hashes.json`` beside the models (a lock file
of `models pull` takes precedence where it records one).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .fileio import sha256_file, write_json

T = TypeVar("T")
log = logging.getLogger(__name__)
HASHES_FILE = ".glimpsed-hashes.json"


@dataclass(frozen=True)
class FileIdentity:
    """One model file as it is on disk now (a snapshot folder is one identity per file in it)."""

    path: str
    bytes: int
    mtime_ns: int


def identify(paths: Iterable[Path]) -> tuple[FileIdentity, ...]:
    """The identities of the given files, and of every file under the given folders (sorted; stat only)."""
    out = []
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            st = f.stat()
            out.append(FileIdentity(str(f), st.st_size, st.st_mtime_ns))
    return tuple(out)


class ModelCache(Generic[T]):
    """One loaded model of one backend, under the key it was loaded with.

    Attributes:
        owner: the backend's name (for logs).
        loads: how many times `get` had to load (tests count it).
        last_load_s: seconds the last load took; 0.0 after a `get` that found the model warm.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.loads = 0
        self.last_load_s = 0.0
        self._key: Hashable = None
        self._value: T | None = None

    @property
    def value(self) -> T | None:
        """The loaded model, or None."""
        return self._value

    @property
    def key(self) -> Hashable:
        """The key the model was loaded with (None when empty)."""
        return self._key

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The model for `key`: the cached one when the key matches, else `load()` (the old one dropped first)."""
        if self._value is not None and key == self._key:
            self.last_load_s = 0.0
            return self._value
        self.clear()
        start = time.perf_counter()
        value = load()
        self.last_load_s = round(time.perf_counter() - start, 3)
        self.loads += 1
        self._key, self._value = key, value
        log.info("%s: model loaded in %.2f s", self.owner, self.last_load_s)
        return value

    def replace(self, value: T) -> None:
        """Swap the cached object for one built from it (e.g. the same weights placed another way), same key."""
        self._value = value

    def clear(self) -> T | None:
        """Forget the model (the caller frees its memory); returns it."""
        value, self._key, self._value = self._value, None, None
        return value


class HashBook:
    """sha256 of model files, computed once per file version (path, bytes, mtime) and kept on disk.

    `prefetch` hashes in a background thread (hashlib releases the GIL), so a cold job's multi-GB hashes
    overlap its GPU work instead of adding to it; `sha256` waits for a prefetched one.
    """

    def __init__(self, models_dir: Path | None) -> None:
        self.path = None if models_dir is None else Path(models_dir) / HASHES_FILE
        self._lock = threading.Lock()
        self._book: dict[str, dict[str, Any]] | None = None
        self._pending: dict[FileIdentity, Future[str]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def prefetch(self, identities: Iterable[FileIdentity]) -> None:
        """Start hashing the files not in the book yet, one at a time in the background."""
        for identity in identities:
            if identity in self._pending or self._known(identity) is not None:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-hash")
            self._pending[identity] = self._pool.submit(self._compute, identity)

    def sha256(self, identity: FileIdentity) -> str:
        """The file's sha256 (from the book when its bytes and mtime still match, else computed and recorded)."""
        known = self._known(identity)
        if known is not None:
            return known
        pending = self._pending.pop(identity, None)
        return pending.result() if pending is not None else self._compute(identity)

    def _known(self, identity: FileIdentity) -> str | None:
        with self._lock:
            entry = self._load().get(identity.path)
            if entry and entry.get("bytes") == identity.bytes and entry.get("mtime_ns") == identity.mtime_ns:
                return str(entry["sha256"])
        return None

    def _compute(self, identity: FileIdentity) -> str:
        digest = sha256_file(Path(identity.path))
        with self._lock:
            self._load()[identity.path] = {"bytes": identity.bytes, "mtime_ns": identity.mtime_ns, "sha256": digest}
            self._save()
        return digest

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._book is None:
            self._book = {}
            if self.path is not None and self.path.is_file():
                try:
                    self._book = dict(json.loads(self.path.read_text()))
                except (OSError, ValueError) as exc:
                    log.warning("ignoring unreadable %s (%s)", self.path, exc)
        return self._book

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            write_json(self.path, self._book)
        except OSError as exc:  # a read-only models folder: the hashes are then kept in memory only
            log.info("cannot record model hashes in %s (%s)", self.path, exc)
