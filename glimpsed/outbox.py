"""Publishing results and disposing of originals, so that readers never see half a result.

A result is built in `outbox/.staging-<job>/`, every file fsynced, `manifest.json` written
last, then the folder is renamed to `outbox/<subdir>/<name>/` in one step. Originals are
archived, kept or deleted only after that rename.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable, NamedTuple

import structlog

from glimpsed import __version__
from glimpsed.config import OutboxConfig, file_mode
from glimpsed.errors import OutboxUnavailable, PublishError
from glimpsed.names import fit_name, fit_stem

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


# errno values of a full disk: the machine's fault, never the job's (the outbox's or the work folder's).
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# errno values that say "the outbox's filesystem is away or full", not "this job's files are wrong".
UNAVAILABLE_ERRNOS = DISK_FULL_ERRNOS | {errno.EROFS, errno.ENOTCONN, errno.ESTALE, errno.EIO, errno.ETIMEDOUT,
                                         errno.EHOSTDOWN, errno.EHOSTUNREACH, errno.ENETDOWN, errno.ENETUNREACH,
                                         errno.ECONNRESET, errno.ECONNABORTED, errno.ENODEV}


class OutboxState(NamedTuple):
    """Whether results can be published now (``ok``) and, either way, why (``reason``)."""

    ok: bool
    reason: str


def check_outbox(outbox: Path, sentinel: str | None) -> OutboxState:
    """Say whether the outbox can take results. It is never created here: a missing outbox on a NAS is
    an unmounted share, and publishing into the bare mount point would hide the results."""
    try:
        if not outbox.is_dir():
            return OutboxState(False, f"outbox {outbox} does not exist — is the share mounted? Results wait until"
                                      f" it is back (mkdir -p {outbox} if it was removed on purpose)")
        if sentinel is not None and not os.path.lexists(outbox / sentinel):
            return OutboxState(False, f"outbox sentinel {outbox / sentinel} missing — the share looks unmounted;"
                                      " results wait until it is back")
        if not os.access(outbox, os.W_OK | os.X_OK):
            return OutboxState(False, f"outbox {outbox} is not writable by the daemon's user — check its permissions")
    except OSError as exc:
        return OutboxState(False, f"outbox {outbox} cannot be reached: {exc}")
    return OutboxState(True, f"outbox {outbox} is ready")


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
        OutboxUnavailable: the outbox is missing, its sentinel is gone, it is full or unreachable.
        PublishError: the outbox could not be written for another reason.
    """
    parent = outbox / rel_dir
    staging = outbox / f"{STAGING_PREFIX}{job_id}"
    name = fit_stem(name)
    fmode, dmode = file_mode(config.file_mode), file_mode(config.dir_mode, "outbox.dir_mode")
    state = check_outbox(outbox, config.sentinel)
    if not state.ok:
        raise OutboxUnavailable(state.reason)
    try:
        _makedirs(outbox, rel_dir, dmode, config.group)
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
        if exc.errno in UNAVAILABLE_ERRNOS:
            raise OutboxUnavailable(f"outbox {outbox} cannot take results: {exc.strerror} ({exc.filename}); free"
                                    " space or bring the share back — the job waits") from exc
        raise PublishError(f"cannot publish job {job_id} into {parent}: {exc}") from exc
    return final


def reserve_target(outbox: Path, rel_dir: str, name: str) -> Path:
    """The folder a publish would use now (recorded in the store before renaming)."""
    return _free_name(outbox / rel_dir, fit_stem(name))


def already_published(folder: Path, job_id: str) -> bool:
    """True when `folder` holds a complete result of `job_id` (its manifest is written last)."""
    try:
        return json.loads((folder / MANIFEST_NAME).read_text())["job_id"] == job_id
    except (OSError, ValueError, KeyError):
        return False


def clean_staging(outbox: Path, in_use: Callable[[str], bool]) -> list[Path]:
    """Remove staging folders left by a crash. A staging folder belongs to its job: one whose job is still
    running under a live worker (`in_use(job_id)`, e.g. of another instance or a `submit`) is left alone."""
    removed = []
    try:
        found = list(outbox.glob(f"{STAGING_PREFIX}*"))
    except OSError:
        return removed
    for path in found:
        if in_use(path.name[len(STAGING_PREFIX):]):
            continue
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
    try:
        dest = move_aside(source, archive_root / day / rel_dir)
    except FileNotFoundError:
        return "gone"  # someone else moved it meanwhile
    return f"archived to {dest}"


ERROR_SUFFIX = ".error.json"


def move_aside(source: Path, folder: Path, reserve: int = 0) -> Path:
    """Move `source` into `folder` without overwriting anything there; works across filesystems.

    The name is kept byte for byte when it fits `NAME_MAX` with `reserve` bytes to spare (for
    `.error.json`) and a `-N` for a taken name; a longer one is shortened (see :func:`fit_name`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = Path(fit_name(source.name, reserve + 6))
    dest = _free_name(folder, name.stem, name.suffix)
    shutil.move(str(source), dest)
    return dest


def set_aside_failed(source: Path, folder: Path, payload: dict[str, Any]) -> Path:
    """Move a failed original into `folder` beside `<name>.error.json` (what went wrong, what to do)."""
    dest = move_aside(source, folder, reserve=len(ERROR_SUFFIX))
    _write_synced(error_file(dest), json.dumps(payload, indent=2, sort_keys=True).encode(), 0o644, None)
    return dest


def error_file(aside: Path) -> Path:
    """The `<name>.error.json` beside an original in `failed/`."""
    return aside.with_name(aside.name + ERROR_SUFFIX)


def iso_utc(ts: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC (the manifest's and error.json's timestamps)."""
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _free_name(parent: Path, stem: str, suffix: str = "") -> Path:
    candidate = parent / f"{stem}{suffix}"
    n = 2
    while os.path.lexists(candidate):
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
    tmp = dest.with_name(f".tmp-{uuid.uuid4().hex[:12]}")  # short: `dest`'s own name may be NAME_MAX long
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, dest)
    _chmod(dest, mode, group)


def _makedirs(root: Path, rel_dir: str, mode: int, group: str | None) -> None:
    """Create the subfolders below `root` with `outbox.dir_mode` (not the umask: the unit's is 0027)."""
    folder = root
    for part in Path(rel_dir).parts:
        folder = folder / part
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        _chmod(folder, mode, group)


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
