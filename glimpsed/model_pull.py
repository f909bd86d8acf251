"""`glimpsed models pull | verify | list`: fetch the backends' model files whole and verified, check them later.

Where each model comes from, under which licence and what makes it whole is one table,
`ai_modules.models.MODELS`. A pull fetches every file of a model (snapshot folders too) into a
staging folder beside it (``.<name>.part``), checks each file's size and sha256 — against the
publisher's hash where the table has one, the Hugging Face hub's sha256 of each large file (its LFS
etag), and the lock file's record of an earlier verified pull — and only then renames the files into
place, configs last. An interrupted pull leaves only the staging folder, which the next pull
removes and starts again. The lock file, ``models.lock.json`` beside the models, records per
model the source, the repository revision fetched and every file's size and sha256: the revision
pins every later pull (also on another machine: copy the folder with its lock), and `verify`
re-hashes against it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_modules.fileio import atomic_path, sha256_file
from ai_modules.models import (BACKEND_MODELS, MODEL_BY_NAME, ModelSpec, Source, is_whole, missing_files,
                               model_inventory, required_files)

Progress = Callable[[str, int, int | None], None]
LOCK_FILE = "models.lock.json"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PullError(RuntimeError):
    """A model could not be fetched or did not verify (the message names the file and the cause)."""


class LicenceNotAccepted(PullError):
    """A model's licence places use restrictions and `--accept-licence` was not given."""


def names_for(target: str) -> tuple[str, ...]:
    """The model names `target` (a backend such as "syncdreamer", or one model name) stands for.

    Raises:
        PullError: unknown target (the message lists the known ones).
    """
    if target in BACKEND_MODELS:
        return BACKEND_MODELS[target]
    if target in MODEL_BY_NAME:
        return (target,)
    known = sorted(set(BACKEND_MODELS) | set(MODEL_BY_NAME))
    raise PullError(f"unknown model or backend {target!r}; known: {', '.join(known)}")


def restricted(targets: Sequence[str]) -> list[ModelSpec]:
    """The models of `targets` whose licence places use restrictions (pull needs them accepted)."""
    names = dict.fromkeys(n for t in targets for n in names_for(t))
    return [MODEL_BY_NAME[n] for n in names if MODEL_BY_NAME[n].licence.restricted]


# ---------------------------------------------------------------------------------------------- the lock file

def read_lock(models_dir: Path) -> dict[str, Any]:
    """``{"models": {name: {"source", "revision", "files": {path: {"bytes", "sha256"}}, "pulled"}}}``; empty
    when there is none.

    Raises:
        PullError: the lock file is there but unreadable (the message says to move it away).
    """
    path = Path(models_dir) / LOCK_FILE
    if not path.is_file():
        return {"models": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data.get("models"), dict):
            raise ValueError("no `models` object")
        return data
    except (OSError, ValueError, AttributeError) as exc:
        raise PullError(f"{path}: unreadable ({exc}); move it away and pull again to re-record the hashes") from exc


def _write_lock(models_dir: Path, lock: dict[str, Any]) -> None:
    path = Path(models_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- pull

def pull(targets: str | Sequence[str], models_dir: Path, *, force: bool = False, accept_licence: bool = False,
         progress: Progress | None = None) -> list[Path]:
    """Fetch what `targets` need into `models_dir`; return each model's path.

    A model already whole on disk is kept unless `force`. Each model's sources are tried in order.

    Raises:
        LicenceNotAccepted: a model's licence has use restrictions and `accept_licence` is False.
        PullError: unknown target, a transfer that failed from every source, or a file that did not verify.
    """
    targets = [targets] if isinstance(targets, str) else list(targets)
    names = list(dict.fromkeys(n for t in targets for n in names_for(t)))
    refused = [] if accept_licence else restricted(names)
    if refused:
        raise LicenceNotAccepted("; ".join(f"{m.name} is under {m.licence.name} ({m.licence.url})" for m in refused)
                                 + ": read it, then pull again with --accept-licence")
    models_dir = Path(models_dir)
    lock = read_lock(models_dir)
    paths = []
    for name in names:
        spec = MODEL_BY_NAME[name]
        dest = models_dir / spec.path
        if is_whole(spec, dest) and not force:
            paths.append(dest)
            continue
        errors = []
        for source in spec.sources:
            try:
                entry = _fetch(spec, source, dest, lock["models"].get(name), progress)
                break
            except PullError as exc:
                errors.append(str(exc))
        else:
            raise PullError(f"{name}: " + " | then: ".join(errors))
        lock["models"][name] = entry
        _write_lock(models_dir, lock)
        paths.append(dest)
    return paths


def _fetch(spec: ModelSpec, source: Source, dest: Path, locked: dict[str, Any] | None,
           progress: Progress | None) -> dict[str, Any]:
    """Fetch one model from one source into a staging folder, verify every file, move them into place."""
    staging = dest.parent / f".{dest.name}.part"
    shutil.rmtree(staging, ignore_errors=True)                         # an interrupted pull starts again
    staging.mkdir(parents=True)
    try:
        same_source = locked is not None and locked.get("source") == source.describe()
        expected = locked.get("files", {}) if same_source else {}
        known = dict(spec.sha256)
        if source.kind == "url":
            fetched = {"": (_download_url(source, staging / dest.name, progress), None)}   # its checksum checked
            revision = None
        else:
            revision = source.revision or (locked.get("revision") if same_source else None)
            fetched, revision = _download_hf(source, staging, revision, progress)
        files = {}
        for local, (path, hub_sha) in fetched.items():
            digest = sha256_file(path)
            size = path.stat().st_size
            record = expected.get(local) or {}
            for what, want in (("the publisher's", known.get(local)), ("the hub's", hub_sha),
                               ("the lock file's", record.get("sha256"))):
                if want and digest != want:
                    raise PullError(f"{dest / local if local else dest}: sha256 {digest} does not match {what} "
                                    f"{want} (from {source.describe()})")
            if record.get("bytes") is not None and size != record["bytes"]:
                raise PullError(f"{dest / local if local else dest}: {size} bytes, the lock file says {record['bytes']}")
            files[local] = {"bytes": size, "sha256": digest}
        _move_into_place(spec, fetched, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not is_whole(spec, dest):
        raise PullError(f"{dest}: fetched from {source.describe()} but still incomplete (missing "
                        f"{', '.join(missing_files(spec, dest))})")
    return {"source": source.describe(), "revision": revision, "files": files,
            "pulled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _move_into_place(spec: ModelSpec, fetched: dict[str, tuple[Path, str | None]], dest: Path) -> None:
    """Rename the verified files to their places; configs last (their presence is what a reader looks for)."""
    if spec.kind == "file":
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched[""][0], dest)
        return
    for local in sorted(fetched, key=lambda f: (f.endswith(".json"), f)):
        target = dest / local
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(fetched[local][0], target)


def _download_url(source: Source, part: Path, progress: Progress | None) -> Path:
    """Stream a URL to `part`, check its length and the publisher's checksum."""
    algorithm, _, expected = source.checksum.partition(":")
    digest = hashlib.new(algorithm or "sha256")
    try:
        with urllib.request.urlopen(source.location, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(part.name, done, total)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise PullError(f"{part.name}: cannot fetch {source.location} ({exc})") from exc
    if total is not None and done != total:
        raise PullError(f"{part.name}: got {done} bytes from {source.location}, expected {total}")
    if expected and digest.hexdigest() != expected:
        raise PullError(f"{part.name}: {algorithm} {digest.hexdigest()} does not match the published {expected}")
    return part


def _download_hf(source: Source, staging: Path, revision: str | None, progress: Progress | None
                 ) -> tuple[dict[str, tuple[Path, str | None]], str | None]:
    """Every file of `source` at `revision` (None: the head, whose commit is returned) into `staging`, each checked
    against the size and, for large files, the sha256 the hub publishes."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    out: dict[str, tuple[Path, str | None]] = {}
    for remote, local in source.files:
        try:
            meta = get_hf_file_metadata(hf_hub_url(source.location, remote, repo_type=source.repo_type,
                                                   revision=revision))
            revision = revision or meta.commit_hash
            path = Path(hf_hub_download(source.location, remote, repo_type=source.repo_type, revision=revision,
                                        local_dir=staging, force_download=True))
        except Exception as exc:  # huggingface_hub raises many kinds (HTTP, offline, not found): one clear error
            raise PullError(f"cannot fetch {remote} from {source.describe()} at {revision or 'its head'} "
                            f"({type(exc).__name__}: {exc})") from exc
        size = path.stat().st_size
        if meta.size is not None and size != meta.size:
            raise PullError(f"{remote}: {size} bytes from {source.describe()}, the hub says {meta.size}")
        etag = (meta.etag or "").strip('"')
        out[local] = (path, etag if _SHA256.match(etag) else None)
        if progress is not None:
            progress(remote, size, size)
    return out, revision


# ---------------------------------------------------------------------------------------------- verify and list

@dataclass(frozen=True)
class Check:
    """What `verify` found for one model.

    Attributes:
        status: "ok", "corrupt" (a file's hash or size differs), "missing", or "unverified" (whole, but no
            hash was ever recorded for it: placed by hand).
        detail: which files, or why.
    """

    name: str
    path: Path
    status: str
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON-ready dict."""
        return {"name": self.name, "path": str(self.path), "status": self.status, "detail": self.detail}


def verify(models_dir: Path, names: Sequence[str] | None = None, *, rehash: bool = True) -> list[Check]:
    """Check each model on disk against the lock file and the publishers' hashes.

    `rehash` False compares sizes only (cheap enough for `models list`).
    """
    models_dir = Path(models_dir)
    lock = read_lock(models_dir)["models"]
    out = []
    for name in names or list(MODEL_BY_NAME):
        spec = MODEL_BY_NAME[name]
        dest = models_dir / spec.path
        if not is_whole(spec, dest):
            detail = f"missing {', '.join(missing_files(spec, dest))}" if spec.kind == "dir" and dest.is_dir() else ""
            out.append(Check(name, dest, "missing", detail))
            continue
        expected = {k: dict(v) for k, v in lock.get(name, {}).get("files", {}).items()}
        for local, sha in spec.sha256:
            expected.setdefault(local, {})["sha256"] = sha
        if not expected:
            out.append(Check(name, dest, "unverified", "no hash recorded (placed by hand); `glimpsed models pull "
                                                      f"--force {name}` fetches and records it"))
            continue
        bad = []
        for local, want in expected.items():
            path = dest / local if local else dest
            if not path.is_file():
                bad.append(f"{local or dest.name} missing")
            elif want.get("bytes") is not None and path.stat().st_size != want["bytes"]:
                bad.append(f"{local or dest.name} is {path.stat().st_size} bytes, not {want['bytes']}")
            elif rehash and want.get("sha256") and sha256_file(path) != want["sha256"]:
                bad.append(f"{local or dest.name} sha256 differs")
        out.append(Check(name, dest, "corrupt" if bad else "ok", "; ".join(bad)))
    return out


def inventory(models_dir: Path) -> list[dict[str, Any]]:
    """Per model: stage, backend, name, status (present / missing / corrupt by size), path, bytes on disk,
    licence, source, revision (the lock's pin, or "not pinned yet")."""
    models_dir = Path(models_dir)
    lock = read_lock(models_dir)["models"]
    checks = {c.name: c for c in verify(models_dir, rehash=False)}
    rows = []
    for status in model_inventory(models_dir):
        spec = MODEL_BY_NAME[status.name]
        check = checks[status.name]
        state = "present" if status.present else "missing"
        if check.status == "corrupt" and status.path == models_dir / spec.path:
            state = "corrupt"
        on_disk = sum(f.stat().st_size for f in (required_files(spec, status.path) if status.path else []) if f)
        entry = lock.get(status.name, {})
        rows.append({**status.to_dict(), "status": state, "detail": check.detail if state == "corrupt" else "",
                     "bytes": on_disk if status.present else None, "approx_bytes": spec.size,
                     "licence": spec.licence.id, "licence_name": spec.licence.name, "licence_url": spec.licence.url,
                     "restricted": spec.licence.restricted,
                     "sources": [s.describe() for s in spec.sources],
                     "revision": entry.get("revision") or next((s.revision for s in spec.sources if s.revision), None)
                     or ("not pinned yet: the first pull records it" if spec.sources[0].kind == "hf" else "-")})
    return rows
