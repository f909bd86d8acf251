"""Small file helpers: atomic writes (standard library only)."""

from __future__ import annotations

import hashlib

import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import FormatError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it to `path`.

    A crash or an exception leaves no file at `path` (the temporary is removed).

    Example:
        >>> with atomic_path(Path("out.npy")) as tmp:   # doctest: +SKIP
        ...     tmp.write_text("hello")
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))      # mode follows the umask
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def map_files(directory: Path, names: dict[str, str]) -> dict[str, Path]:
    """Resolve ``kind -> file name`` inside `directory`, checking that each file exists.

    Raises:
        FormatError: a file is missing.
    """
    paths = {k: Path(directory) / v for k, v in names.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FormatError(f"missing artifact(s): {', '.join(missing)}")
    return paths


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
