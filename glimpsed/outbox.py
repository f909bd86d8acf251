"""Publishing results and disposing of originals, so that readers never see half a result.

A result is built in `outbox/.staging-<job>/`, every file fsynced, `manifest.json` written
last, then the folder is renamed to `outbox/<subdir>/<name>/` in one step. Originals are
archived, kept or deleted only after that rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import structlog

from glimpsed import __version__
from glimpsed.config import OutboxConfig, file_mode
from glimpsed.errors import PublishError

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = 1
STAGING_PREFIX = ".staging-"

# Output kinds of the pipeline -> file name in the published folder ({name} = the photo's stem).
OUTPUT_NAMES = {
    "ply": "{name}.ply",
    "splat": "{name}.splat",
    "glb": "{name}.glb",
    "splat_glb": "{name}.splats.glb",
    "preview": "preview.png",
    "turntable": "turntable.webp",
}


def publish(*, outbox: Path, rel_dir: str, name: str, job_id: str, outputs: dict[str, Path],
            manifest: dict[str, Any], config: OutboxConfig, target: Path | None = None) -> Path:
    """Copy `outputs` into the outbox atomically and return the published folder.

    Args:
        outbox: the outbox root.
        rel_dir: subfolder of the inbox the photo came from ("" for the top), mirrored here.
        name: folder name wanted (the photo's stem); taken names get `-2`, `-3`...
        outputs: kind -> file produced by the pipeline.
        manifest: everything but `outputs`, which this function fills in with bytes and sha256.
        target: a folder already chosen for this job by an earlier, interrupted publish.

    Raises:
        PublishError: the outbox could not be written.
    """
    parent = outbox / rel_dir
    staging = outbox / f"{STAGING_PREFIX}{job_id}"
    fmode, dmode = file_mode(config.file_mode), file_mode(config.dir_mode, "outbox.dir_mode")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir()
        files = {}
        for kind, src in sorted(outputs.items()):
            filename = OUTPUT_NAMES.get(kind, f"{{name}}.{kind}").format(name=name)
            files[kind] = _copy_synced(Path(src), staging / filename, fmode, config.group)
        manifest = {**manifest, "schema": MANIFEST_SCHEMA, "job_id": job_id, "outputs": files,
                    "published_at": iso_utc(time.time()), "glimpsed_version": __version__}
        _write_synced(staging / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode(), fmode,
                      config.group)
        _chmod(staging, dmode, config.group)
        _fsync_dir(staging)
        final = target if target is not None and not target.exists() else _free_name(parent, name)
        os.rename(staging, final)
        _fsync_dir(parent)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PublishError(f"cannot publish job {job_id} into {parent}: {exc}") from exc
    return final


def reserve_target(outbox: Path, rel_dir: str, name: str) -> Path:
    """The folder a publish would use now (recorded in the store before renaming)."""
    return _free_name(outbox / rel_dir, name)


def already_published(folder: Path, job_id: str) -> bool:
    """True when `folder` holds a complete result of `job_id` (its manifest is written last)."""
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())["job_id"] == job_id
    except (OSError, ValueError, KeyError):
        return False


def clean_staging(outbox: Path) -> list[Path]:
    """Remove staging folders left by a crash; nobody reads them and they are never renamed later."""
    removed = []
    for path in outbox.glob(f"{STAGING_PREFIX}*"):
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def dispose_original(source: Path, policy: str, archive_root: Path, rel_dir: str, expected_size: int | None,
                     expected_mtime_ns: int | None, now: float | None = None) -> str:
    """Archive, keep or delete an inbox file after its result is published; return what was done.

    A file that changed since it was taken in is left alone: it will be picked up as new work.
    """
    try:
        st = source.stat()
    except FileNotFoundError:
        return "gone"
    if expected_size is not None and (st.st_size, st.st_mtime_ns) != (expected_size, expected_mtime_ns):
        return "changed since intake; left in the inbox"
    if policy == "keep":
        return "kept"
    if policy == "delete":
        source.unlink(missing_ok=True)
        return "deleted"
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    dest = move_aside(source, archive_root / day / rel_dir)
    return f"archived to {dest}"


def move_aside(source: Path, folder: Path) -> Path:
    """Move `source` into `folder` without overwriting anything there; works across filesystems."""
    folder.mkdir(parents=True, exist_ok=True)
    dest = _free_name(folder, source.stem, source.suffix)
    shutil.move(str(source), dest)
    return dest


def set_aside_failed(source: Path, folder: Path, payload: dict[str, Any]) -> Path:
    """Move a failed original into `folder` beside `<name>.error.json` (what went wrong, what to do)."""
    dest = move_aside(source, folder)
    _write_synced(dest.with_name(dest.name + ".error.json"), json.dumps(payload, indent=2, sort_keys=True).encode(),
                  0o644, None)
    return dest


def iso_utc(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (the manifest's and error.json's timestamps)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _free_name(parent: Path, stem: str, suffix: str = "") -> Path:
    candidate = parent / f"{stem}{suffix}"
    n = 2
    while candidate.exists():
        candidate = parent / f"{stem}-{n}{suffix}"
        n += 1
    return candidate


def _copy_synced(src: Path, dest: Path, mode: int, group: str | None) -> dict[str, Any]:
    h = hashlib.sha256()
    size = 0
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while chunk := fin.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    _chmod(dest, mode, group)
    return {"file": dest.name, "bytes": size, "sha256": h.hexdigest()}


def _write_synced(dest: Path, data: bytes, mode: int, group: str | None) -> None:
    tmp = dest.with_name(f".{dest.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    _chmod(dest, mode, group)


def _chmod(path: Path, mode: int, group: str | None) -> None:
    os.chmod(path, mode)
    if group is not None:
        shutil.chown(path, group=group)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
