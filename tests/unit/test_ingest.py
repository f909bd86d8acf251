"""Tests for glimpsed.ingest: real files in tmp_path, built with Pillow."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from glimpsed import ingest as ingest_mod
from glimpsed.errors import IncompleteFile, RejectedFile
from glimpsed.ingest import FORMAT_SUFFIXES, FileChanged, IngestedImage, IngestLimits, ingest
from glimpsed.watcher import DEFAULT_EXTENSIONS


def _save(im: Image.Image, path: Path, fmt: str, **kwargs: object) -> Path:
    im.save(path, fmt, **kwargs)
    return path


def _gradient(w: int = 96, h: int = 80) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def _rejected(src: Path, dest: Path, limits: IngestLimits = IngestLimits()) -> RejectedFile:
    with pytest.raises(RejectedFile) as info:
        ingest(src, dest, limits)
    assert not dest.exists() or list(dest.iterdir()) == [], "a rejection left files behind"
    assert info.value.path == str(src) and info.value.reason and info.value.hint
    return info.value


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "work" / "job1" / "input"


def test_png(tmp_path: Path, dest: Path) -> None:
    src = _save(_gradient(), tmp_path / "chair.png", "PNG")
    got = ingest(src, dest)
    assert isinstance(got, IngestedImage)
    raw = src.read_bytes()
    assert got.sha256 == hashlib.sha256(raw).hexdigest()
    assert got.bytes == len(raw) == got.src_size
    assert got.src_mtime_ns == src.stat().st_mtime_ns
    assert (got.format, got.width, got.height, got.mode, got.source_mode) == ("PNG", 96, 80, "RGB", "RGB")
    assert got.original == dest / "original.png" and got.original.read_bytes() == raw
    assert got.image == dest / "image.png"
    with Image.open(got.image) as out:
        assert out.mode == "RGB" and np.array_equal(np.asarray(out), np.asarray(_gradient()))
    assert sorted(p.name for p in dest.iterdir()) == ["image.png", "original.png"]  # no temp files left


def test_jpeg_exif_orientation_6(tmp_path: Path, dest: Path) -> None:
    arr = np.zeros((80, 120, 3), np.uint8)
    arr[:, :60] = (255, 0, 0)  # left half red
    arr[:, 60:] = (0, 0, 255)  # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = _save(Image.fromarray(arr), tmp_path / "mug.jpg", "JPEG", exif=exif, icc_profile=icc, quality=95)
    got = ingest(src, dest)
    assert (got.format, got.width, got.height) == ("JPEG", 80, 120)
    assert got.original.name == "original.jpg" and got.original.read_bytes() == src.read_bytes()
    with Image.open(got.image) as out:
        assert out.size == (80, 120)
        assert "exif" not in out.info and "icc_profile" not in out.info  # metadata stripped
        pixels = np.asarray(out).astype(int)
    top, bottom = pixels[10, 40], pixels[110, 40]  # the old left edge is now at the top
    assert top[0] > 200 and top[2] < 60
    assert bottom[2] > 200 and bottom[0] < 60


def test_rgba_keeps_alpha(tmp_path: Path, dest: Path) -> None:
    rgba = _gradient().convert("RGBA")
    alpha = np.zeros((80, 96), np.uint8)
    alpha[20:60, 20:70] = 255
    rgba.putalpha(Image.fromarray(alpha))
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()  # goes through the ICC transform
    got = ingest(_save(rgba, tmp_path / "cutout.png", "PNG", icc_profile=icc), dest)
    assert got.mode == "RGBA"
    with Image.open(got.image) as out:
        assert out.mode == "RGBA" and np.array_equal(np.asarray(out)[..., 3], alpha)


def test_palette_with_transparency_becomes_rgba(tmp_path: Path, dest: Path) -> None:
    pal = Image.new("P", (64, 64), 0)
    pal.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)
    pal.paste(1, (16, 16, 48, 48))
    got = ingest(_save(pal, tmp_path / "icon.png", "PNG", transparency=0), dest)
    assert (got.mode, got.source_mode) == ("RGBA", "P")
    with Image.open(got.image) as out:
        px = np.asarray(out)
    assert px[0, 0, 3] == 0 and tuple(px[32, 32]) == (200, 30, 30, 255)


def test_palette_without_transparency_becomes_rgb(tmp_path: Path, dest: Path) -> None:
    got = ingest(_save(_gradient().convert("P"), tmp_path / "p.png", "PNG"), dest)
    assert (got.mode, got.source_mode) == ("RGB", "P")


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path, dest: Path) -> None:
    arr = np.tile(np.linspace(0, 65535, 128).astype(np.uint16), (64, 1))
    src = _save(Image.fromarray(arr), tmp_path / "depth.png", "PNG")
    got = ingest(src, dest)
    assert got.source_mode.startswith("I") and got.mode == "RGB"
    with Image.open(got.image) as out:
        row = np.asarray(out)[0, :, 0]
    assert row[0] == 0 and row[-1] == 255 and 120 <= row[64] <= 135  # scaled, not clipped at 255


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("L", "RGB"), ("LA", "RGBA"), ("1", "RGB"), ("I", "RGB"), ("F", "RGB"), ("LAB", "RGB"), ("YCbCr", "RGB")],
)
def test_tiff_modes_become_rgb_or_rgba(tmp_path: Path, dest: Path, mode: str, expected: str) -> None:
    arr = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    im = Image.fromarray(arr, "F") if mode == "F" else _gradient(64, 64).convert("L" if mode == "I" else mode)
    if mode == "I":
        im = Image.fromarray((np.asarray(im).astype(np.int32) * 257), "I")  # 16-bit values in a 32-bit image
    got = ingest(_save(im, tmp_path / "x.tif", "TIFF"), dest)
    assert (got.source_mode, got.mode) == (mode, expected)
    with Image.open(got.image) as out:
        px = np.asarray(out)
    if mode == "F":  # 0..1 floats scaled to 0..255
        assert px[0, 0, 0] == 0 and px[-1, -1, 0] == 255
    if mode == "I":  # 16-bit values scaled back, not clipped at 255
        grey = np.asarray(_gradient(64, 64).convert("L")).astype(int)
        assert np.abs(px[..., 0].astype(int) - grey).max() <= 1


def test_cmyk_becomes_rgb(tmp_path: Path, dest: Path) -> None:
    got = ingest(_save(_gradient().convert("CMYK"), tmp_path / "print.jpg", "JPEG"), dest)
    assert (got.mode, got.source_mode) == ("RGB", "CMYK")


def test_multi_frame_takes_frame_0(tmp_path: Path, dest: Path) -> None:
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    src = _save(red, tmp_path / "pages.tif", "TIFF", save_all=True, append_images=[blue])
    got = ingest(src, dest)
    assert got.format == "TIFF" and got.original.name == "original.tif"
    with Image.open(got.image) as out:
        assert out.getpixel((5, 5)) == (255, 0, 0)


def test_mpo_from_a_camera_is_a_jpeg(tmp_path: Path, dest: Path) -> None:
    left, right = _gradient(), _gradient().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    got = ingest(_save(left, tmp_path / "stereo.jpg", "MPO", save_all=True, append_images=[right]), dest)
    assert got.format == "MPO" and got.original.name == "original.jpg" and (got.width, got.height) == (96, 80)


def test_real_format_wins_over_extension(tmp_path: Path, dest: Path) -> None:
    got = ingest(_save(_gradient(), tmp_path / "looks_like.jpg", "PNG"), dest)
    assert got.format == "PNG" and got.original.name == "original.png"


def test_empty_file(tmp_path: Path, dest: Path) -> None:
    src = tmp_path / "empty.jpg"
    src.touch()
    assert _rejected(src, dest).reason == "the file is empty"


def test_truncated_jpeg(tmp_path: Path, dest: Path) -> None:
    whole = _save(_gradient(400, 300), tmp_path / "whole.jpg", "JPEG", quality=95).read_bytes()
    src = tmp_path / "cut.jpg"
    src.write_bytes(whole[: len(whole) // 2])
    err = _rejected(src, dest)
    assert err.reason.startswith("the image is truncated or corrupt: ") and "re-copy" in err.hint
    assert isinstance(err, IncompleteFile)  # maybe still being written: intake waits before judging it


def test_header_cut_short_is_incomplete_not_a_crash(tmp_path: Path, dest: Path) -> None:
    whole = _save(_gradient(400, 300), tmp_path / "whole.jpg", "JPEG", quality=95).read_bytes()
    src = tmp_path / "cut.jpg"
    src.write_bytes(whole[:100])  # Image.open itself raises OSError("Truncated File Read") on this
    err = _rejected(src, dest)
    assert isinstance(err, IncompleteFile) and "truncated" in err.reason


@pytest.mark.parametrize(
    ("content", "looks_like"),
    [(b"hello, this is not a photo\n", "starts with 'hello, this is n'"), (b"%PDF-1.7\n%\xe2\xe3", "a PDF document"),
     (b"GIF89a" + b"\0" * 32, "a GIF image"), (b"\0\0\0\x18ftypheic" + b"\0" * 32, "HEIC"),
     (b"\x01\x00\x02\x03\xfe" * 8, "starts with bytes 01 00 02 03")],
)
def test_not_an_image(tmp_path: Path, dest: Path, content: bytes, looks_like: str) -> None:
    src = tmp_path / "photo.jpg"
    src.write_bytes(content)
    err = _rejected(src, dest)
    assert err.reason.startswith("not an image Pillow can read (") and looks_like in err.reason
    assert "JPEG, PNG, WebP, TIFF or BMP" in err.hint and not isinstance(err, IncompleteFile)


@pytest.mark.parametrize("content", [b"\0" * 4096, b"\0\0\0\0\x01\x02" * 100, b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
                                     b"\xff\xd8\xff\xe0" + b"\x07" * 60 + b"\0" * 64])
def test_zero_filled_or_cut_header_may_still_be_arriving(tmp_path: Path, dest: Path, content: bytes) -> None:
    src = tmp_path / "photo.jpg"
    src.write_bytes(content)  # what a preallocating (SMB) writer leaves before the data arrives
    assert isinstance(_rejected(src, dest), IncompleteFile)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a huge size, then one tiny IDAT: a few hundred bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("size", "reason"),
    [
        # our own check, from the header
        ((12_000, 12_000), "the image is 12000x12000 = 144,000,000 pixels, over the limit of 100,000,000"),
        # Pillow's bomb check fires inside Image.open and must come out as a rejection too
        ((100_000, 100_000), "the image has too many pixels (Image size (10000000000 pixels) exceeds"),
    ],
)
def test_too_many_pixels_from_the_header(tmp_path: Path, dest: Path, size: tuple[int, int], reason: str) -> None:
    src = tmp_path / "bomb.png"
    src.write_bytes(_png_header_only(*size))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape either
        err = _rejected(src, dest)
    assert err.reason.startswith(reason)
    assert "ingest.max_pixels" in err.hint


def test_too_many_pixels_with_a_small_limit(tmp_path: Path, dest: Path) -> None:
    src = _save(_gradient(), tmp_path / "a.png", "PNG")
    err = _rejected(src, dest, IngestLimits(max_pixels=96 * 80 - 1))
    assert err.reason == "the image is 96x80 = 7,680 pixels, over the limit of 7,679"
    ingest(src, dest, IngestLimits(max_pixels=96 * 80))  # exactly at the limit is fine


def test_too_small(tmp_path: Path, dest: Path) -> None:
    src = _save(_gradient(200, 40), tmp_path / "strip.png", "PNG")
    err = _rejected(src, dest)
    assert err.reason == "the image is 200x40 pixels; its smaller side must be at least 64"


def test_too_many_bytes_is_not_read(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _save(_gradient(), tmp_path / "a.png", "PNG")
    monkeypatch.setattr(ingest_mod.os, "open", lambda *a, **k: pytest.fail("the file was opened"))
    err = _rejected(src, dest, IngestLimits(max_bytes=100))
    assert "over the limit of" in err.reason and "ingest.max_bytes" in err.hint


def test_file_growing_while_read_is_retryable(tmp_path: Path, dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _save(_gradient(), tmp_path / "a.png", "PNG")
    real_lstat = os.lstat
    calls: list[Path] = []

    def lstat_then_append(path: Path) -> os.stat_result:
        result = real_lstat(path)
        if not calls:
            with open(src, "ab") as f:  # the copy goes on after our first look
                f.write(b"more bytes")
        calls.append(path)
        return result

    monkeypatch.setattr(ingest_mod.os, "lstat", lstat_then_append)
    with pytest.raises(FileChanged) as info:
        ingest(src, dest)
    assert info.value.retryable and "changed while being read" in info.value.reason
    assert not dest.exists()


def test_vanished_and_symlinked_files(tmp_path: Path, dest: Path) -> None:
    with pytest.raises(FileChanged, match="disappeared"):
        ingest(tmp_path / "gone.jpg", dest)
    real = _save(_gradient(), tmp_path / "real.png", "PNG")
    link = tmp_path / "link.png"
    link.symlink_to(real)
    assert _rejected(link, dest).reason == "the file is a symbolic link"
    assert _rejected(tmp_path, dest).reason == "not a regular file"


def test_limits_validate() -> None:
    with pytest.raises(ValueError, match="`max_bytes` must be a positive integer, got 0"):
        IngestLimits(max_bytes=0)
    with pytest.raises(ValueError, match="`min_side`"):
        IngestLimits(min_side=True)


def test_accepted_formats_match_the_watcher_extensions() -> None:
    assert set(FORMAT_SUFFIXES.values()) <= set(DEFAULT_EXTENSIONS)


def test_reingest_overwrites_and_leaves_no_temp_files(tmp_path: Path, dest: Path) -> None:
    src = _save(_gradient(), tmp_path / "a.png", "PNG")
    ingest(src, dest)
    again = ingest(src, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["image.png", "original.png"]
    assert again.original.read_bytes() == src.read_bytes()


def test_webp_and_bmp(tmp_path: Path, dest: Path) -> None:
    for fmt, name in (("WEBP", "original.webp"), ("BMP", "original.bmp")):
        got = ingest(_save(_gradient(), tmp_path / f"x.{fmt.lower()}", fmt), dest / fmt)
        assert got.format == fmt and got.original.name == name and got.mode == "RGB"


def test_output_png_is_a_clean_reader_friendly_file(tmp_path: Path, dest: Path) -> None:
    got = ingest(_save(_gradient(), tmp_path / "a.png", "PNG", dpi=(300, 300)), dest)
    with Image.open(io.BytesIO(got.image.read_bytes())) as out:
        assert "dpi" not in out.info
