"""A corpus of inbox files for fault tests: broken, disguised and unusual-but-valid photos.

Every file is generated here, deterministically (seeded numpy, Pillow, hand-written
headers); nothing is downloaded or read from disk. Each :class:`Case` says what the
daemon must do with it:

* ``"done"``: a valid photo (an object on a plain background, or cut out by its
  alpha) that must go all the way through the pipeline;
* ``"rejected"``: :func:`glimpsed.ingest.ingest` must raise ``RejectedFile``, so the
  file ends in ``failed/`` with an error.json at intake;
* ``"failed"``: ingest accepts it, but the pipeline must fail it as bad input (the
  segment stage raises ``NoObjectFound``).

Every expectation was checked by really calling ``ingest`` (and, for ``done`` and
``failed``, the segment stage); see ``tests/faults/test_corpus.py``.

Example:
    >>> cases = write_corpus(Path("inbox"))          # doctest: +SKIP
    >>> bad, good = split(cases)                     # doctest: +SKIP
"""

from __future__ import annotations

import functools
import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from tests.integration.conftest import photo_array

EXPECTS: Final[tuple[str, ...]] = ("done", "rejected", "failed")


@dataclass(frozen=True)
class Case:
    """One inbox file and what must become of it.

    Attributes:
        name: Short unique id, e.g. ``"jpeg-cut100"``.
        filename: Plain ASCII file name for the inbox, unique, e.g. ``"bad-jpeg-cut100.jpg"``.
        data: The file's bytes.
        expect: ``"done"``, ``"rejected"`` or ``"failed"``.
        why: What the file is and why that outcome is right.
    """

    name: str
    filename: str
    data: bytes
    expect: str
    why: str

    def __repr__(self) -> str:  # keep pytest ids and failure messages short (no bytes dump)
        return f"Case({self.name!r}, {self.filename!r}, {len(self.data)} bytes, expect={self.expect!r})"


# --------------------------------------------------------------------------------------------
# Pixel sources
# --------------------------------------------------------------------------------------------

def ellipse_mask(size: tuple[int, int], fx: float = 0.22, fy: float = 0.33) -> np.ndarray:
    """[H,W] bool: a centred ellipse with radii `fx`*W and `fy`*H."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return ((xx - w * 0.5) / (w * fx)) ** 2 + ((yy - h * 0.52) / (h * fy)) ** 2 <= 1.0


def photo(seed: int = 0, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """:func:`photo_array` as an RGB Pillow image."""
    return Image.fromarray(photo_array(seed, size), "RGB")


def encode(im: Image.Image, fmt: str, **kwargs: object) -> bytes:
    """Pillow-encode `im` as `fmt` into bytes."""
    buf = io.BytesIO()
    im.save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(seed: int = 0, size: tuple[int, int] = (320, 240), **kwargs: object) -> bytes:
    """A valid JPEG photo (quality 92 unless given)."""
    kwargs.setdefault("quality", 92)
    return encode(photo(seed, size), "JPEG", **kwargs)


def png(seed: int = 0, size: tuple[int, int] = (320, 240), **kwargs: object) -> bytes:
    """A valid PNG photo."""
    return encode(photo(seed, size), "PNG", **kwargs)


# --------------------------------------------------------------------------------------------
# Hand-made containers
# --------------------------------------------------------------------------------------------

PNG_SIGNATURE: Final[bytes] = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk; `crc` overrides the correct CRC-32."""
    value = zlib.crc32(kind + payload) if crc is None else crc
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", value & 0xFFFFFFFF)


def ihdr(width: int, height: int, bit_depth: int = 8, colour_type: int = 2, interlace: int = 0) -> bytes:
    """The 13-byte IHDR payload."""
    return struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, interlace)


def png_rgb16(rgb16: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG ([H,W,3] uint16), written by hand (Pillow cannot write one)."""
    h, w, _ = rgb16.shape
    rows = rgb16.astype(">u2").reshape(h, w * 6 // 2).view(np.uint8).reshape(h, w * 6)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()  # filter 0 on every row
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr(w, h, 16, 2)) + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def replace_png_chunk(data: bytes, kind: bytes, payload: bytes, crc: int | None = None) -> bytes:
    """Replace the first chunk of type `kind` in a PNG."""
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        if data[pos + 4:pos + 8] == kind:
            return data[:pos] + png_chunk(kind, payload, crc) + data[pos + 12 + length:]
        pos += 12 + length
    raise ValueError(f"no {kind!r} chunk")


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, offset of the 0xFF, total length) of each header segment up to and including SOS."""
    out, pos = [], 2
    while pos < len(data):
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        out.append((marker, pos, 2 + length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def jpeg_scan_start(data: bytes) -> int:
    """Offset of the first entropy-coded byte (just after the SOS header)."""
    _, pos, total = jpeg_segments(data)[-1]
    return pos + total


def ftyp(brand: bytes, compatible: Iterable[bytes]) -> bytes:
    """An ISO-BMFF ``ftyp`` box (HEIC, MP4...)."""
    body = brand + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(body)) + b"ftyp" + body


def zip_bytes(files: dict[str, bytes]) -> bytes:
    """A real ZIP archive with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in files.items():
            zf.writestr(zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0)), payload)
    return buf.getvalue()


def pdf_bytes() -> bytes:
    """A minimal one-page PDF."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 320 240] >>"]
    out, offsets = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def psd_header(width: int = 320, height: int = 240) -> bytes:
    """A Photoshop file (8BPS v1, 3 channels, 8 bit, RGB, raw) with empty sections and the photo's planes."""
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, height, width, 8, 3)
    planes = photo_array(10, (width, height)).transpose(2, 0, 1).tobytes()
    return head + struct.pack(">III", 0, 0, 0) + struct.pack(">H", 0) + planes


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------

def _rejected() -> list[Case]:
    rng = np.random.default_rng(20240601)
    jp = jpeg(seed=1)
    pn = encode(Image.fromarray(photo_array(2)), "PNG", compress_level=1)  # noisy backdrop: IDAT is most of the file
    scan = jpeg_scan_start(jp)
    cases: list[tuple[str, str, bytes, str]] = []

    def add(name: str, ext: str, data: bytes, why: str) -> None:
        cases.append((name, ext, data, why))

    # -- empty and tiny files
    add("empty", "jpg", b"", "0 bytes: a copy that never started")
    add("one-byte", "jpg", b"\xff", "1 byte")
    # -- JPEG
    add("jpeg-cut100", "jpg", jp[:100], "JPEG cut after 100 bytes, inside its headers")
    add("jpeg-cut50pct", "jpg", jp[:len(jp) // 2], "JPEG cut at 50 % of its bytes, inside the entropy-coded scan")
    add("jpeg-cut-at-sos", "jpg", jp[:scan], "JPEG with all headers but no scan data")
    soi_app0 = jp[:2] + jp[jpeg_segments(jp)[0][1]:jpeg_segments(jp)[0][1] + jpeg_segments(jp)[0][2]]
    add("jpeg-soi-app0", "jpg", soi_app0, "JPEG with only SOI and the JFIF APP0 segment")
    add("jpeg-soi-eoi", "jpg", b"\xff\xd8\xff\xd9", "JPEG with only SOI and EOI: no frame at all")
    add("jpeg-garbage-after-soi", "jpg", b"\xff\xd8\xff" + rng.integers(0, 256, 4000, np.uint8).tobytes(),
        "JPEG SOI marker followed by 4000 random bytes")
    add("jpeg-zero-head4k", "jpg", bytes(4096) + jp[4096:],
        "a JPEG whose first 4 KiB are zeros (preallocated by the copier, never filled)")
    sof = next((pos, total) for marker, pos, total in jpeg_segments(jp) if marker == 0xC0)
    bad_sof = bytearray(jp)
    bad_sof[sof[0] + 9] = 0  # number of components: 0
    add("jpeg-sof-zero-components", "jpg", bytes(bad_sof), "JPEG whose SOF0 header declares 0 colour components")
    dht = next(pos for marker, pos, _ in jpeg_segments(jp) if marker == 0xC4)
    bad_dht = bytearray(jp)
    bad_dht[dht + 5:dht + 21] = b"\xff" * 16  # code counts: far more codes than fit in 16 bits
    add("jpeg-bad-huffman", "jpg", bytes(bad_dht), "JPEG with a bogus Huffman table (DHT code counts all 255)")
    # -- PNG
    add("png-cut100", "png", pn[:100], "PNG cut after 100 bytes, inside the first IDAT")
    add("png-cut50pct", "png", pn[:len(pn) // 2], "PNG cut at 50 % of its bytes, inside the IDAT data")
    add("png-cut-in-ihdr", "png", pn[:20], "PNG cut after 20 bytes, inside the IHDR chunk")
    add("png-signature-only", "png", PNG_SIGNATURE, "only the 8-byte PNG signature")
    add("png-ihdr-bad-crc", "png", replace_png_chunk(pn, b"IHDR", ihdr(320, 240), crc=0x12345678),
        "PNG whose IHDR chunk has a wrong CRC")
    add("png-zero-width", "png", replace_png_chunk(pn, b"IHDR", ihdr(0, 240)),
        "PNG whose IHDR says the width is 0 (CRC correct)")
    add("png-no-idat", "png", PNG_SIGNATURE + png_chunk(b"IHDR", ihdr(320, 240)) + png_chunk(b"IEND", b""),
        "PNG with IHDR and IEND but no image data")
    bad_idat = bytearray(pn)
    idat = pn.index(b"IDAT")
    bad_idat[idat + 4 + 2:idat + 4 + 2 + 64] = bytes(range(64))  # right after the zlib header: invalid deflate
    add("png-corrupt-idat", "png", bytes(bad_idat), "PNG with a broken deflate stream in IDAT")
    bomb_raw = zlib.compress(bytes(1 + 50_000 // 8) * 16, 9)  # 16 rows of a 1-bit image; the rest is missing
    add("png-bomb-50000", "png",
        PNG_SIGNATURE + png_chunk(b"IHDR", ihdr(50_000, 50_000, 1, 0)) + png_chunk(b"IDAT", bomb_raw)
        + png_chunk(b"IEND", b""),
        "decompression bomb: a PNG of a few hundred bytes whose header claims 50000x50000 pixels")
    # -- WebP, TIFF, BMP
    wp = encode(photo(3), "WEBP", quality=80)
    add("webp-cut50pct", "webp", wp[:len(wp) // 2], "WebP cut at 50 % of its bytes")
    add("webp-riff-header-only", "webp", b"RIFF" + struct.pack("<I", 4) + b"WEBP", "WebP RIFF header with no chunks")
    tf = encode(photo(4), "TIFF")
    add("tiff-cut50pct", "tif", tf[:len(tf) // 2], "uncompressed TIFF cut at 50 % of its bytes (strip data missing)")
    add("tiff-garbage-ifd", "tif",
        b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 40) + rng.integers(0, 256, 480, np.uint8).tobytes(),
        "little-endian TIFF header pointing to an IFD of 40 random entries")
    add("tiff-ifd-out-of-file", "tif", b"MM\x00*" + struct.pack(">I", 0x7FFF0000) + bytes(64),
        "big-endian TIFF header whose first IFD offset points 2 GiB past the end of the file")
    bm = encode(photo(5), "BMP")
    add("bmp-cut50pct", "bmp", bm[:len(bm) // 2], "BMP cut at 50 % of its bytes (pixel rows missing)")
    add("bmp-cut-in-header", "bmp", bm[:30], "BMP cut after 30 bytes, inside its info header")
    huge = bytearray(bm)
    huge[18:26] = struct.pack("<ii", 100_000, 100_000)
    add("bmp-absurd-dims", "bmp", bytes(huge), "BMP header claiming 100000x100000 pixels on a 230 KB file")
    # -- too small
    add("tiny-32px", "png", encode(photo(6, (32, 32)), "PNG"), "a 32x32 image: smaller than ingest.min_side (64)")
    add("strip-1000x20", "jpg", jpeg(7, (1000, 20)), "a 1000x20 strip: its short side is below 64")
    # -- not images at all, or images of other kinds, named like photos
    add("text-as-jpg", "jpg", b"This is not a photo.\nJust some notes saved with the wrong name.\n" * 20,
        "a plain-text file named .jpg")
    add("html-as-png", "png",
        b"<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1></body></html>\n",
        "an HTML error page saved as .png (a failed download)")
    add("pdf-as-jpg", "jpg", pdf_bytes(), "a PDF document named .jpg")
    add("zip-as-png", "png", zip_bytes({"photo.jpg": jp, "readme.txt": b"photos\n"}), "a ZIP archive named .png")
    add("gif-as-jpg", "jpg", encode(photo(8).convert("P", palette=Image.Palette.ADAPTIVE), "GIF"),
        "a real GIF named .jpg (GIF is not one of the accepted decoders)")
    add("heic-as-jpg", "jpg", ftyp(b"heic", [b"mif1", b"heic"]) + rng.integers(0, 256, 2000, np.uint8).tobytes(),
        "a HEIC header (ftyp heic) named .jpg, as iPhones write")
    add("mp4-as-jpg", "jpg", ftyp(b"isom", [b"isom", b"iso2", b"avc1", b"mp41"]) + struct.pack(">I", 8) + b"free"
        + rng.integers(0, 256, 2000, np.uint8).tobytes(), "an MP4 header (ftyp isom) named .jpg")
    add("gzip-as-png", "png", gzip.compress(pn, mtime=0), "a gzip-compressed PNG named .png")
    add("zeros-64k", "jpg", bytes(65536), "64 KiB of zero bytes named .jpg (preallocated, never written)")
    add("random-bytes", "jpg", b"\xa7\x13" + rng.integers(0, 256, 20000, np.uint8).tobytes(),
        "20 KB of random bytes named .jpg")
    add("psd-as-png", "png", psd_header(), "a Photoshop (8BPS) file named .png")
    add("svg-as-png", "png",
        b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="320" height="240">'
        b'<ellipse cx="160" cy="125" rx="70" ry="80" fill="orange"/></svg>\n', "an SVG drawing named .png")
    add("elf-as-jpg", "jpg", b"\x7fELF\x02\x01\x01" + bytes(9) + rng.integers(0, 256, 3000, np.uint8).tobytes(),
        "an ELF executable header named .jpg")
    return [Case(name, f"bad-{name}.{ext}", data, "rejected", why) for name, ext, data, why in cases]


def _failed() -> list[Case]:
    size = (320, 240)
    w, h = size
    out: list[tuple[str, str, bytes, str]] = []
    grey = Image.new("RGB", size, (128, 128, 128))
    out.append(("uniform-grey", "jpg", encode(grey, "JPEG", quality=92),
                "a uniform grey photo: no object (segment: the whole frame is one colour)"))
    out.append(("uniform-black", "png", encode(Image.new("RGB", size, (0, 0, 0)), "PNG"),
                "an all-black frame, e.g. a lens cap photo: no object"))
    out.append(("uniform-grey-16bit", "png",
                encode(Image.fromarray(np.full((h, w), 30000, np.uint16)), "PNG"),
                "a uniform 16-bit greyscale PNG: no object"))
    out.append(("transparent-rgba", "png", encode(Image.new("RGBA", size, (255, 0, 0, 0)), "PNG"),
                "a fully transparent RGBA PNG: its alpha cuts everything away"))
    pal = Image.new("P", size, 0)
    pal.putpalette([255, 255, 255, 200, 90, 40] + [0] * 762)
    pal.paste(1, (100, 60, 220, 180))
    out.append(("transparent-palette", "png", encode(pal, "PNG", transparency=bytes([0, 0])),
                "a palette PNG whose every palette entry is fully transparent"))
    dot = np.full((h, w, 3), 205, np.uint8)
    dot[115:125, 155:165] = (200, 40, 40)
    out.append(("tiny-dot", "png", encode(Image.fromarray(dot), "PNG"),
                "a 10x10 red dot on grey (0.13 % of the frame): below segment.min_area_fraction (0.5 %)"))
    speck = np.zeros((h, w, 4), np.uint8)
    speck[..., :3] = photo_array(9)
    speck[119:123, 159:163, 3] = 255
    out.append(("alpha-speck", "png", encode(Image.fromarray(speck, "RGBA"), "PNG"),
                "an RGBA PNG whose alpha keeps only a 4x4 speck: the cutout is too small"))
    return [Case(name, f"fail-{name}.{ext}", data, "failed", why) for name, ext, data, why in out]


def _exif_rot6() -> bytes:
    # Stored landscape (320x240) with orientation 6: shown upright as a 240x320 portrait.
    im = photo(11)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", quality=92, exif=exif.tobytes())


def _alpha_cutout() -> bytes:
    rgba = np.zeros((240, 320, 4), np.uint8)
    rgba[..., :3] = photo_array(12)
    rgba[..., 3] = np.where(ellipse_mask((320, 240)), 255, 0)
    return encode(Image.fromarray(rgba, "RGBA"), "PNG")


def _palette_trns() -> bytes:
    rgb = photo(13).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    idx = np.asarray(rgb).copy()
    pal = rgb.getpalette()[: 64 * 3] + [255, 255, 255]  # index 64: transparent background
    idx[~ellipse_mask((320, 240))] = 64
    im = Image.fromarray(idx, "P")
    im.putpalette(pal)
    return encode(im, "PNG", transparency=64)


def _grey_jpeg() -> bytes:
    arr = photo_array(14).astype(np.float32)
    lum = arr @ np.array([0.299, 0.587, 0.114], np.float32)
    return encode(Image.fromarray(np.clip(lum, 0, 255).astype(np.uint8), "L"), "JPEG", quality=92)


def _png16_grey() -> bytes:
    arr = photo_array(15).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return encode(Image.fromarray(np.round(arr * 257.0).astype(np.uint16)), "PNG")


def _png16_rgb() -> bytes:
    return png_rgb16(photo_array(16).astype(np.uint16) * 257)


def _multiframe(fmt: str, **kwargs: object) -> bytes:
    first, second = photo(17), Image.new("RGB", (320, 240), (30, 160, 60))
    return encode(first, fmt, save_all=True, append_images=[second], **kwargs)


def _jpeg_corrupt_entropy() -> bytes:
    # Flip bits in a few bytes in the middle of the scan; 0xFF is avoided (no fake markers).
    # libjpeg resynchronises and decodes with a warning: Pillow reads it (some garbled blocks).
    jp = bytearray(jpeg(seed=18))
    start, end = jpeg_scan_start(bytes(jp)), len(jp) - 2
    for off in range(start + (end - start) // 2, start + (end - start) // 2 + 40, 4):
        if jp[off] not in (0x00, 0xFF) and jp[off] ^ 0x5A != 0xFF:
            jp[off] ^= 0x5A
    return bytes(jp)


def _good() -> list[Case]:
    cases = [
        ("baseline", "jpg", jpeg(seed=0), "the reference photo (same look as the integration tests' make_photo)"),
        ("png-rgb", "png", png(seed=19), "a plain 8-bit RGB PNG"),
        ("png-16bit-grey", "png", _png16_grey(), "a 16-bit greyscale PNG (mode I;16), scaled to 8 bit"),
        ("png-16bit-rgb", "png", _png16_rgb(), "a 16-bit-per-channel RGB PNG (hand-written)"),
        ("cmyk", "jpg", encode(photo(20).convert("CMYK"), "JPEG", quality=92), "a CMYK JPEG (Adobe, prepress)"),
        ("palette-trns", "png", _palette_trns(),
         "a palette PNG with a transparent index around the object (cut out by its tRNS alpha)"),
        ("grey", "jpg", _grey_jpeg(), "a greyscale (L) JPEG"),
        ("exif-rot6", "jpg", _exif_rot6(), "a JPEG with EXIF orientation 6 (stored sideways, shown upright)"),
        ("multiframe", "tif", _multiframe("TIFF"), "a two-page TIFF: page 1 is used, page 2 ignored"),
        ("animated", "webp", _multiframe("WEBP", duration=100, loop=0, lossless=True),
         "an animated two-frame WebP: frame 1 is used"),
        ("alpha-cutout", "png", _alpha_cutout(), "an RGBA PNG: the object on a transparent background"),
        ("progressive", "jpg", jpeg(seed=21, progressive=True), "a progressive JPEG"),
        ("interlaced", "png", _interlaced_png(), "an Adam7-interlaced PNG (hand-written)"),
        ("webp-lossy", "webp", encode(photo(23), "WEBP", quality=85), "a lossy WebP"),
        ("bmp", "bmp", encode(photo(24), "BMP"), "a 24-bit BMP"),
        ("tiff-lzw", "tif", encode(photo(25), "TIFF", compression="tiff_lzw"), "an LZW-compressed TIFF"),
        ("jpeg-trailing-garbage", "jpg", jpeg(seed=26) + b"\x00garbage after EOI" * 50,
         "a JPEG with junk after its EOI marker (some cameras and editors append data)"),
        ("jpeg-named-png", "png", jpeg(seed=27), "a JPEG named .png: the format is taken from the bytes"),
        ("png-missing-iend", "png", png(seed=29)[:-12],
         "a PNG without its IEND chunk (the last 12 bytes): all pixel data is there"),
        ("min-side-64", "png", png(seed=28, size=(96, 64)), "96x64: the short side exactly at ingest.min_side"),
        ("jpeg-corrupt-entropy", "jpg", _jpeg_corrupt_entropy(),
         "a JPEG with bytes flipped in the middle of its scan: libjpeg decodes it with a warning"),
    ]
    return [Case(name, f"ok-{name}.{ext}", data, "done", why) for name, ext, data, why in cases]


def _interlaced_png() -> bytes:
    # Pillow cannot write Adam7; re-use a hand-written PNG: the 7 passes of a 320x240 RGB image.
    arr = photo_array(22)
    h, w, _ = arr.shape
    passes = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        sub = arr[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        for row in sub:
            raw += b"\x00" + row.tobytes()
    return (PNG_SIGNATURE + png_chunk(b"IHDR", ihdr(w, h, 8, 2, interlace=1))
            + png_chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + png_chunk(b"IEND", b""))


@functools.cache
def build_corpus() -> tuple[Case, ...]:
    """All cases: rejected, then failed, then done. Deterministic; built once per process."""
    cases = (*_rejected(), *_failed(), *_good())
    names = [c.name for c in cases]
    files = [c.filename for c in cases]
    assert len(set(names)) == len(names) and len(set(f.lower() for f in files)) == len(files), "duplicate case"
    assert all(c.expect in EXPECTS and c.filename.isascii() for c in cases)
    return cases


CORPUS_BUILDERS: Final[tuple[Callable[[], list[Case]], ...]] = (_rejected, _failed, _good)


def split(cases: Iterable[Case] | None = None) -> tuple[list[Case], list[Case]]:
    """(bad, good): bad = expect "rejected" or "failed", good = expect "done"."""
    cases = build_corpus() if cases is None else tuple(cases)
    return [c for c in cases if c.expect != "done"], [c for c in cases if c.expect == "done"]


def bad_cases() -> list[Case]:
    """Cases the daemon must fail (at intake or in the pipeline)."""
    return split()[0]


def good_cases() -> list[Case]:
    """Cases the daemon must process."""
    return split()[1]


def __getattr__(name: str) -> list[Case]:
    # `BAD` / `GOOD` / `CORPUS` as lazy module attributes: importing the module builds nothing.
    if name == "BAD":
        return bad_cases()
    if name == "GOOD":
        return good_cases()
    if name == "CORPUS":
        return list(build_corpus())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_corpus(folder: Path, cases: Iterable[Case] | None = None) -> list[Case]:
    """Write every case (or the given ones) as ``folder/<filename>``; the folder is created if missing.

    Files are written to a hidden temporary name and renamed, so a watcher never sees half a file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = list(build_corpus() if cases is None else cases)
    for case in chosen:
        tmp = folder / f".{case.filename}.writing"
        tmp.write_bytes(case.data)
        tmp.replace(folder / case.filename)
    return chosen


def input_dir(case: Case, tmp_dir: Path) -> Path:
    """Where :func:`ingest_case` puts the job input of `case`: ``tmp_dir/work/<name>/input``."""
    return Path(tmp_dir) / "work" / case.name / "input"


def ingest_case(case: Case, tmp_dir: Path):  # -> glimpsed.ingest.IngestedImage
    """Write `case` into ``tmp_dir/inbox`` and ingest it (default limits) into :func:`input_dir`.

    Raises whatever ``ingest`` raises (``RejectedFile`` for a rejected file).
    """
    from glimpsed.ingest import IngestLimits, ingest

    inbox = Path(tmp_dir) / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    src = inbox / case.filename
    src.write_bytes(case.data)
    return ingest(src, input_dir(case, tmp_dir), IngestLimits())


def rejection(case: Case, tmp_dir: Path):  # -> glimpsed.errors.RejectedFile | None
    """The ``RejectedFile`` (or subclass, e.g. one for files that look cut off) that ``ingest()`` raises for
    `case`, or None when it accepts it.

    ``FileChanged`` (retry later) and any other exception propagate: a static corrupt file must never
    crash intake nor be retried forever.
    """
    from glimpsed.errors import RejectedFile
    from glimpsed.ingest import FileChanged

    try:
        ingest_case(case, tmp_dir)
    except FileChanged:
        raise
    except RejectedFile as exc:
        return exc
    return None


def check_case(case: Case, tmp_dir: Path) -> str:
    """Return "rejected" if ``ingest()`` raises ``RejectedFile`` for `case`, else "accepted".

    Any other exception from ``ingest`` (and ``FileChanged``) propagates.
    """
    return "accepted" if rejection(case, tmp_dir) is None else "rejected"


def segment_image(path: Path):  # -> ai_modules.segment.SegmentOutputs
    """Run only the segment stage (embedded `alpha_grabcut`, default settings) on an ingested image.png.

    Raises ``ai_modules.errors.NoObjectFound`` when there is no usable object.
    """
    from ai_modules.segment import SegmentInputs, SegmentStage
    from ai_modules.settings import SegmentSettings

    stage = SegmentStage(SegmentSettings(backend="alpha_grabcut"))
    stage.load("cpu")
    return stage.run(SegmentInputs(path=Path(path)))
