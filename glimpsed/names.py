"""File names as the daemon meets them: bytes on disk, text in SQLite, logs and JSON, and a length limit.

An inbox on an SMB share can hold names that are not UTF-8 (``caf\\xe9.jpg``), names of 255 bytes, names
with newlines or a leading dash, and NFC/NFD twins. The daemon keeps three things apart:

- the **raw** name (``bytes``, :func:`raw`): the file's identity, used to find it again;
- the **display** name (:func:`display`): valid UTF-8 for SQLite, JSON and logs (bad bytes as ``\\xe9``);
- the **derived** names it creates itself (outbox folders and files, ``failed/``, ``archive/``), which
  must fit ``NAME_MAX`` with every suffix the daemon adds (:func:`fit_stem`).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path
from typing import Final

NAME_MAX: Final[int] = 255  # bytes per path component on ext4, xfs, btrfs, NFS and SMB
# What the daemon may add to a stem it derives a name from: "-NNNN" for a taken name plus the longest
# suffix it writes beside it (".splats.glb" in the outbox, ".jpeg.error.json" in failed/).
RESERVED_BYTES: Final[int] = 48


def raw(path: str | os.PathLike[str]) -> bytes:
    """The path's bytes, as the filesystem holds them (undoes Python's surrogateescape)."""
    return os.fsencode(path)


def from_raw(data: bytes) -> Path:
    """The path whose bytes are ``data``."""
    return Path(os.fsdecode(data))


def display(path: str | os.PathLike[str] | bytes) -> str:
    """Valid UTF-8 text for a path: undecodable bytes become ``\\xNN``. For SQLite, JSON and logs only."""
    if isinstance(path, bytes):
        data = path
    else:
        text = os.fspath(path)
        try:
            data = os.fsencode(text)
        except UnicodeEncodeError:  # a surrogate that no filesystem byte made
            data = text.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


def fit_stem(stem: str, budget: int = NAME_MAX - RESERVED_BYTES) -> str:
    """A stem for names the daemon creates: NFC, no control characters, at most ``budget`` UTF-8 bytes.

    A stem that had to be cut keeps its start and gains ``~`` plus 8 hex digits of the full stem's
    hash, so two long names that share a prefix stay apart. Undecodable bytes (surrogates) become
    ``\\xNN`` text, since outbox folders are read by people and web servers.
    """
    text = unicodedata.normalize("NFC", display(stem))
    text = "".join("_" if unicodedata.category(c) == "Cc" else c for c in text).strip() or "photo"
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    tag = "~" + hashlib.sha256(data).hexdigest()[:8]
    head = data[: budget - len(tag)].decode("utf-8", "ignore")  # never split a character
    return head + tag


def fit_name(name: str, reserve: int = 0) -> str:
    """A file name kept whole when it fits with ``reserve`` more bytes, else its stem shortened, suffix kept."""
    if len(os.fsencode(name)) + reserve <= NAME_MAX:
        return name
    path = Path(name)
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= 16 else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    return fit_stem(stem, NAME_MAX - reserve - len(os.fsencode(suffix))) + suffix
