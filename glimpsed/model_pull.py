"""`glimpsed models pull`: fetch the learned backends' model files into `paths.models`, verified.

Where each file comes from is data (`REMOTES`): a plain URL with its published checksum
(rembg's md5s, CLIP's sha256 in its URL), or a Hugging Face repository, whose server
publishes each large file's sha256 (its LFS etag): single files are checked against it. A file
is written to ``<name>.part`` and renamed into place only once its size and hash match, so a
broken transfer never leaves a file that `auto` would take for a model.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ai_modules.fileio import sha256_file
from ai_modules.models import BACKEND_MODELS, model_status

Progress = Callable[[str, int, int | None], None]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class PullError(RuntimeError):
    """A model could not be fetched or did not verify (the message names the file and the cause)."""


@dataclass(frozen=True)
class Remote:
    """Where one planned model comes from.

    Attributes:
        kind: "url" (one file), "hf_file" (one file of a Hugging Face repo) or "hf_snapshot" (a repo folder).
        location: the URL, or the repo id.
        filename: the file in the repo ("hf_file").
        allow: the files of a snapshot to fetch ("hf_snapshot"; glob patterns).
        checksum: "md5:<hex>" or "sha256:<hex>" for a "url" file.
    """

    kind: str
    location: str
    filename: str = ""
    allow: tuple[str, ...] = ()
    checksum: str = ""


_CLIP_SHA256 = "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
REMOTES: dict[str, Remote] = {
    "isnet-general-use": Remote("url", "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"
                                       "isnet-general-use.onnx", checksum="md5:fc16ebd8b0c10d971d3513d564d01e29"),
    "u2net": Remote("url", "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx",
                    checksum="md5:60024c5c889badc19c04ad937298a77b"),
    "syncdreamer-pretrain": Remote("hf_file", "camenduru/SyncDreamer", "syncdreamer-pretrain.ckpt"),
    "clip-vit-l-14": Remote("url", f"https://openaipublic.azureedge.net/clip/models/{_CLIP_SHA256}/ViT-L-14.pt",
                            checksum=f"sha256:{_CLIP_SHA256}"),
    "dpt-hybrid-midas": Remote("hf_snapshot", "Intel/dpt-hybrid-midas", allow=("*.json", "*.safetensors")),
    "sdxl-base": Remote("hf_snapshot", "stabilityai/stable-diffusion-xl-base-1.0", allow=(
        "model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*", "unet/config.json",
        "text_encoder/config.json", "text_encoder/model.fp16.safetensors", "text_encoder_2/config.json",
        "text_encoder_2/model.fp16.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.fp16.safetensors")),
    "sdxl-lightning-4step-unet": Remote("hf_file", "ByteDance/SDXL-Lightning", "sdxl_lightning_4step_unet.safetensors"),
    "controlnet-depth-sdxl": Remote("hf_snapshot", "diffusers/controlnet-depth-sdxl-1.0",
                                    allow=("config.json", "diffusion_pytorch_model.fp16.safetensors")),
    "dinov2": Remote("hf_snapshot", "timm/vit_small_patch14_dinov2.lvd142m",
                     allow=("config.json", "model.safetensors")),
}


def names_for(target: str) -> tuple[str, ...]:
    """The planned model names `target` (a backend such as "syncdreamer", or one model name) stands for.

    Raises:
        PullError: unknown target (the message lists the known ones).
    """
    if target in BACKEND_MODELS:
        return BACKEND_MODELS[target]
    if target in REMOTES:
        return (target,)
    known = sorted(set(BACKEND_MODELS) | set(REMOTES))
    raise PullError(f"unknown model or backend {target!r}; known: {', '.join(known)}")


def pull(target: str, models_dir: Path, *, force: bool = False, progress: Progress | None = None) -> list[Path]:
    """Fetch what `target` needs into `models_dir` (present files are kept unless `force`); return the paths.

    Raises:
        PullError: unknown target, a transfer that failed, or a file that did not verify.
    """
    paths = []
    for name in names_for(target):
        status = model_status(name, models_dir)
        dest = Path(status.path)
        if status.present and not force:
            paths.append(dest)
            continue
        remote = REMOTES[name]
        if remote.kind == "url":
            _download_url(remote.location, dest, remote.checksum, progress)
        elif remote.kind == "hf_file":
            _download_hf_file(remote, dest)
        else:
            _download_hf_snapshot(remote, dest)
        if not model_status(name, models_dir).present:
            raise PullError(f"{dest}: fetched from {remote.location} but still incomplete (missing "
                            f"{'its marker file' if status.kind == 'dir' else 'content'})")
        paths.append(dest)
    return paths


def _download_url(url: str, dest: Path, checksum: str, progress: Progress | None) -> None:
    """Stream `url` to ``dest.part``, check its length and checksum, then rename it to `dest`."""
    algorithm, _, expected = checksum.partition(":")
    digest = hashlib.new(algorithm or "sha256")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length else None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(dest.name, done, total)
            out.flush()
            os.fsync(out.fileno())
        if total is not None and done != total:
            raise PullError(f"{dest}: got {done} bytes from {url}, expected {total}")
        if expected and digest.hexdigest() != expected:
            raise PullError(f"{dest}: {algorithm} {digest.hexdigest()} does not match the published {expected}")
        part.replace(dest)
    except OSError as exc:
        raise PullError(f"{dest}: cannot fetch {url} ({exc})") from exc
    finally:
        part.unlink(missing_ok=True)


def _download_hf_file(remote: Remote, dest: Path) -> None:
    """One file of a Hugging Face repo, checked against the sha256 the hub publishes for it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        meta = get_hf_file_metadata(hf_hub_url(remote.location, remote.filename))
        fetched = Path(hf_hub_download(remote.location, remote.filename, local_dir=dest.parent))
    except Exception as exc:  # huggingface_hub raises many kinds (HTTP, offline, not found): one clear error
        raise PullError(f"{dest}: cannot fetch {remote.filename} from huggingface.co/{remote.location} "
                        f"({type(exc).__name__}: {exc})") from exc
    etag = (meta.etag or "").strip('"')
    if _SHA256.match(etag):
        actual = sha256_file(fetched)
        if actual != etag:
            fetched.unlink(missing_ok=True)
            raise PullError(f"{dest}: sha256 {actual} does not match the hub's {etag}")
    if meta.size is not None and fetched.stat().st_size != meta.size:
        raise PullError(f"{dest}: {fetched.stat().st_size} bytes, the hub says {meta.size}")
    if fetched != dest:
        shutil.move(fetched, dest)


def _download_hf_snapshot(remote: Remote, dest: Path) -> None:
    """The allowed files of a Hugging Face repo into `dest` (huggingface_hub checks each file's size)."""
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(remote.location, local_dir=dest, allow_patterns=list(remote.allow))
    except Exception as exc:  # as above: one clear error naming the repo and the folder
        raise PullError(f"{dest}: cannot fetch huggingface.co/{remote.location} ({type(exc).__name__}: {exc})"
                        ) from exc
