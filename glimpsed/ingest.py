"""Taking an inbox file in: read it once, check it, keep a byte-exact copy and a clean PNG.

The inbox is often a NAS share, so the file is read exactly once into memory;
hashing, type sniffing, decoding and the copy all work on those bytes. Every
problem with the file itself is a :class:`~glimpsed.errors.RejectedFile` whose
reason and hint go to error.json; problems of the daemon's own disk (ENOSPC on
``dest_dir``) stay ``OSError``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np
import structlog
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from glimpsed.errors import IncompleteFile, RejectedFile

log = structlog.get_logger(__name__)

MiB: Final[int] = 1024 * 1024

# The only Pillow decoders ever tried: less attack surface than "anything Pillow reads".
DECODERS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "TIFF", "BMP")
# Pillow format name -> suffix of the byte-exact copy. MPO (the multi-picture
# JPEG of many phones and cameras) comes out of the JPEG decoder.
FORMAT_SUFFIXES: Final[dict[str, str]] = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "TIFF": ".tif",
    "BMP": ".bmp",
}
_ACCEPTED: Final[str] = "JPEG, PNG, WebP, TIFF or BMP"
_PIXELS_HINT: Final[str] = "Downscale it, or raise `ingest.max_pixels`"

# Leading bytes -> what a rejected file looks like, for the error message.
_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive or an Office document"),
    (b"GIF8", "a GIF image"),
    (b"8BPS", "a Photoshop document"),
    (b"\x89PNG", "a PNG with a damaged header"),
    (b"\xff\xd8\xff", "a JPEG with a damaged header"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"RIFF", "a RIFF file (WebP with a damaged header, or audio/video)"),
)
_SRGB: Final = ImageCms.createProfile("sRGB")
# Leading bytes of the accepted formats: such a file that does not open is cut off, not of another type.
_IMAGE_MAGIC: Final[tuple[bytes, ...]] = (b"\xff\xd8", b"\x89PNG", b"RIFF", b"II*\x00", b"MM\x00*", b"BM")
# The other formats of _MAGIC: whole or not, never a photo we take.
_FOREIGN_MAGIC: Final[tuple[bytes, ...]] = tuple(m for m, _ in _MAGIC if not m.startswith(_IMAGE_MAGIC))
_INCOMPLETE_HINT: Final[str] = ("If it was still being copied it is taken once complete; otherwise re-copy or"
                                " re-export it and open it in an image viewer to check")


class FileChanged(RejectedFile):
    """The inbox file changed or vanished while it was being taken in; try again later."""

    retryable: Final[bool] = True


@dataclass(frozen=True)
class IngestLimits:
    """What an inbox file may be (config section ``ingest``)."""

    max_bytes: int = 200 * MiB
    max_pixels: int = 100_000_000
    min_side: int = 64

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels", "min_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class IngestedImage:
    """An accepted inbox file.

    Attributes:
        sha256: Hex digest of the bytes read.
        bytes: Size of those bytes.
        format: Pillow's name of the real format, e.g. ``"JPEG"``, ``"PNG"``, ``"MPO"``.
        width: Width of ``image`` (after EXIF orientation).
        height: Height of ``image``.
        mode: Mode of ``image``: ``"RGB"`` or ``"RGBA"``.
        source_mode: Pillow mode of the source, e.g. ``"CMYK"``, ``"I;16"``, ``"P"``.
        original: Byte-exact copy, ``dest_dir/original.<suffix of the real format>``.
        image: ``dest_dir/image.png``: frame 0, upright, sRGB, 8-bit, no metadata.
        src_size: ``st_size`` of the inbox file before reading.
        src_mtime_ns: ``st_mtime_ns`` of the inbox file before reading.
    """

    sha256: str
    bytes: int
    format: str
    width: int
    height: int
    mode: str
    source_mode: str
    original: Path
    image: Path
    src_size: int
    src_mtime_ns: int


def _reject(src: Path, reason: str, hint: str) -> RejectedFile:
    return RejectedFile(str(src), reason, hint)


def _incomplete(src: Path, reason: str) -> IncompleteFile:
    return IncompleteFile(str(src), reason, _INCOMPLETE_HINT)


def _may_be_arriving(data: bytes) -> bool:
    """True when bytes that Pillow cannot identify could be the start of a photo still being written:
    zeros where a preallocating writer has not written yet, or an accepted format's header cut short."""
    if data[4:8] == b"ftyp" or data.startswith(_FOREIGN_MAGIC):
        return False  # HEIC/MP4 (ftyp), PDF, ZIP, GIF, PSD, gzip
    return data[:1] == b"\x00" or data[-64:] == bytes(len(data[-64:])) or data.startswith(_IMAGE_MAGIC)


def _changed(src: Path, reason: str) -> FileChanged:
    return FileChanged(str(src), reason, "It is probably still being copied; it is tried again once it stops changing")


def _read_once(src: Path, limits: IngestLimits) -> tuple[bytes, os.stat_result]:
    try:
        before = os.lstat(src)
    except FileNotFoundError:
        raise _changed(src, "the file disappeared before it could be read") from None
    except OSError as exc:
        raise _reject(src, f"the file cannot be examined: {exc.strerror}", "Check the share and access rights") from exc
    if stat.S_ISLNK(before.st_mode):
        raise _reject(src, "the file is a symbolic link", "Copy the photo itself into the inbox")
    if not stat.S_ISREG(before.st_mode):
        raise _reject(src, "not a regular file", "Put only image files into the inbox")
    if before.st_size == 0:
        raise _incomplete(src, "the file is empty")
    if before.st_size > limits.max_bytes:
        raise _reject(
            src,
            f"the file is {before.st_size / MiB:.1f} MiB, over the limit of {limits.max_bytes / MiB:.1f} MiB",
            "Shrink or re-export it, or raise `ingest.max_bytes`",
        )
    try:
        fd = os.open(src, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read(limits.max_bytes + 1)
        after = os.lstat(src)
    except FileNotFoundError:
        raise _changed(src, "the file disappeared while being read") from None
    except PermissionError as exc:
        raise _reject(src, "the file cannot be read: permission denied", "Give the daemon's user read access") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _reject(src, "the file is a symbolic link", "Copy the photo itself into the inbox") from exc
        raise _changed(src, f"the file could not be read ({exc.strerror})") from exc
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or len(data) != before.st_size:
        sizes = {before.st_size, after.st_size, len(data)}
        detail = f"size {before.st_size} -> {max(sizes - {before.st_size})} bytes" if len(sizes) > 1 else "modified"
        raise _changed(src, f"the file changed while being read ({detail})")
    return data, before


def _looks_like(data: bytes) -> str:
    for magic, what in _MAGIC:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"avif", b"avis"):
            return "a HEIC/HEIF/AVIF image (set the phone to 'Most Compatible' or export as JPEG)"
        return "an MP4/MOV video"
    head = data[:16]
    if all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        return f"starts with {head.decode('ascii')!r}"
    return f"starts with bytes {head[:8].hex(' ')}"


def _open(src: Path, data: bytes, limits: IngestLimits) -> Image.Image:
    """Identify the format from the bytes and check the header's size; nothing is decoded yet."""
    # Pillow's process-wide bomb check must not undercut ``max_pixels`` (its default, 89.5 MP, is
    # below ours); we only ever raise it, and check the header size ourselves before decoding.
    if Image.MAX_IMAGE_PIXELS is not None and limits.max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=list(DECODERS))
    except Image.DecompressionBombError as exc:
        raise _reject(src, f"the image has too many pixels ({exc})", _PIXELS_HINT) from exc
    except UnidentifiedImageError as exc:
        reason = f"not an image Pillow can read ({_looks_like(data)})"
        if _may_be_arriving(data):
            raise _incomplete(src, reason) from exc
        raise _reject(src, reason, f"Save or export it as {_ACCEPTED}") from exc
    except Exception as exc:  # a header cut short: OSError ("Truncated File Read"), SyntaxError, struct.error...
        raise _incomplete(src, f"the image header is truncated or corrupt: {exc}") from exc
    width, height = im.size
    if width * height > limits.max_pixels:
        raise _reject(
            src,
            f"the image is {width}x{height} = {width * height:,} pixels, over the limit of {limits.max_pixels:,}",
            _PIXELS_HINT,
        )
    if min(width, height) < limits.min_side:
        raise _reject(
            src,
            f"the image is {width}x{height} pixels; its smaller side must be at least {limits.min_side}",
            "Use a larger photo of the object",
        )
    return im


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer or float grey -> "L", scaled (Pillow's convert clips at 255)."""
    arr = np.nan_to_num(np.asarray(im).astype(np.float32))
    if im.mode.startswith("I;16"):
        full = 65535.0
    else:  # "I" or "F": guess the range from the data
        peak = float(arr.max(initial=0.0))
        full = next(r for r in (1.0, 255.0, 65535.0, max(peak, 1.0)) if peak <= r)
    return Image.fromarray(np.clip(arr * (255.0 / full) + 0.5, 0, 255).astype(np.uint8))


def _normalise(im: Image.Image) -> Image.Image:
    """Upright, 8-bit RGB or RGBA, sRGB where an ICC profile says otherwise, no metadata."""
    icc = im.info.get("icc_profile")
    upright = ImageOps.exif_transpose(im)  # a copy; None only with in_place=True
    im = upright if upright is not None else im
    if im.mode.startswith("I") or im.mode == "F":
        im = _to_8bit(im)
    target = "RGBA" if im.has_transparency_data else "RGB"  # alpha band, tRNS, palette transparency
    if icc and im.mode in ("RGB", "RGBA", "CMYK"):
        try:
            profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            mode = "RGB" if im.mode == "CMYK" else im.mode
            im = ImageCms.profileToProfile(im, profile, _SRGB, outputMode=mode) or im  # None only with inPlace
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            log.info("icc_profile_ignored", error=str(exc))
    if im.mode != target:
        im = im.convert(target)
    im.info = {}
    return im


def _write_temp(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write and fsync a temp file beside ``path``; the caller renames it."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported here (Windows); the renames are still atomic
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def ingest(src: Path, dest_dir: Path, limits: IngestLimits = IngestLimits()) -> IngestedImage:
    """Take one inbox file in.

    Order: stat; reject empty or too large files without reading; read once;
    stat again (a change means :class:`FileChanged`); sha256; identify the
    format from the bytes (never the extension); check pixels and the smaller
    side from the header, before decoding; decode frame 0 (later frames of
    animated or multi-picture files are ignored); write ``original.<ext>`` and
    ``image.png`` via temp names, fsync and rename. On any rejection nothing is
    written to ``dest_dir``. The inbox file is left where it is.

    Args:
        src: The inbox file.
        dest_dir: The job's input folder; created if missing.
        limits: Size limits.

    Returns:
        What was taken in and where the two files are.

    Raises:
        FileChanged: The file changed or vanished while being read (retry later).
        RejectedFile: The file cannot become a job; reason and hint say why.
        OSError: ``dest_dir`` cannot be written.

    Example:
        >>> got = ingest(Path("inbox/chair.jpg"), Path("work/42/input"))  # doctest: +SKIP
        >>> got.image.name, got.mode
        ('image.png', 'RGB')
    """
    src, dest_dir = Path(src), Path(dest_dir)
    data, before = _read_once(src, limits)
    digest = hashlib.sha256(data).hexdigest()
    im = _open(src, data, limits)
    fmt, source_mode, frames = im.format or "?", im.mode, getattr(im, "n_frames", 1)
    try:
        im.seek(0)
        im.load()
    except Image.DecompressionBombError as exc:
        raise _reject(src, f"the image has too many pixels ({exc})", _PIXELS_HINT) from exc
    except MemoryError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, struct.error, zlib.error...
        raise _incomplete(src, f"the image is truncated or corrupt: {exc}") from exc
    try:
        out = _normalise(im)
    except (ValueError, OSError) as exc:
        reason = f"its colour mode {source_mode} cannot be converted to RGB: {exc}"
        raise _reject(src, reason, "Re-export it as 8-bit RGB") from exc
    if frames > 1:
        log.info("extra_frames_ignored", path=str(src), frames=frames, format=fmt)
    dest_dir.mkdir(parents=True, exist_ok=True)
    original = dest_dir / f"original{FORMAT_SUFFIXES.get(fmt, '.bin')}"
    image = dest_dir / "image.png"
    temps: list[Path] = []
    try:
        temps.append(_write_temp(original, lambda f: f.write(data)))
        temps.append(_write_temp(image, lambda f: out.save(f, "PNG", compress_level=1)))  # a work file: speed over size
        for tmp, final in zip(temps, (original, image), strict=True):
            os.replace(tmp, final)
        _fsync_dir(dest_dir)
    except BaseException:
        for path in (*temps, original, image):
            path.unlink(missing_ok=True)
        raise
    return IngestedImage(
        sha256=digest,
        bytes=len(data),
        format=fmt,
        width=out.width,
        height=out.height,
        mode=out.mode,
        source_mode=source_mode,
        original=original,
        image=image,
        src_size=before.st_size,
        src_mtime_ns=before.st_mtime_ns,
    )
