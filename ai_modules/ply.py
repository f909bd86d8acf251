"""The Inria 3DGS .ply layout: binary little-endian float32 records.

One record per Gaussian, in this order::

    x y z  nx ny nz  f_dc_0..2  f_rest_0..f_rest_{3K-1}  opacity  scale_0..2  rot_0..3

with K = (d+1)^2 - 1 for SH degree d, normals zero, ``f_rest`` channel-major
(all K coefficients of red, then green, then blue), ``opacity`` a logit,
``scale_*`` natural-log scales and ``rot_*`` a quaternion (w, x, y, z). At degree 3
a record is 62 floats = 248 bytes.

This module works on numpy arrays; `ai_modules.gaussians.Gaussians` wraps it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import FormatError
from .fileio import atomic_path

_MAX_HEADER = 65536
_FLOAT_TYPES = ("float", "float32")


def property_names(sh_degree: int) -> list[str]:
    """Return the property names of a record at `sh_degree` (0..3), in file order."""
    k = (sh_degree + 1) ** 2 - 1
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
            + [f"f_rest_{i}" for i in range(3 * k)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def header(num: int, sh_degree: int) -> bytes:
    """Return the ASCII header (ending with ``end_header\\n``) for `num` records."""
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {num}"]
    lines += [f"property float {name}" for name in property_names(sh_degree)]
    lines.append("end_header")
    return ("\n".join(lines) + "\n").encode("ascii")


def write(path: Path, records: np.ndarray, sh_degree: int) -> None:
    """Write a [N, 14 + 3*(d+1)^2] float32 array as a .ply, atomically.

    Raises:
        ValueError: wrong width, or a non-finite value (they must never reach a file).
    """
    records = np.ascontiguousarray(records, dtype="<f4")
    width = len(property_names(sh_degree))
    if records.ndim != 2 or records.shape[1] != width:
        raise ValueError(f"`records` must be [N, {width}] for SH degree {sh_degree}, got {list(records.shape)}")
    bad = int((~np.isfinite(records)).any(axis=1).sum())
    if bad:
        raise ValueError(f"{bad} Gaussians have non-finite values; call `Gaussians.sanitize()` first")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(header(records.shape[0], sh_degree))
        f.write(records.tobytes())


def read(path: Path) -> tuple[np.ndarray, int]:
    """Read a .ply in exactly the layout above.

    Returns:
        records: [N, 14 + 3*(d+1)^2] float32.
        sh_degree: d, found from the number of ``f_rest`` properties.

    Raises:
        FormatError: not this layout (other format, other properties or order,
            extra elements) or a byte size that differs from header + N * record.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    end = head.find(b"end_header\n")
    if end < 0:
        raise FormatError(f"{path}: no `end_header` line in the first {_MAX_HEADER} bytes; not a .ply file")
    header_len = end + len(b"end_header\n")
    try:
        lines = head[:end].decode("ascii").split("\n")[:-1]
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: the .ply header is not ASCII") from exc
    lines = [ln.strip() for ln in lines if not ln.startswith(("comment", "obj_info"))]
    num, names = _parse_header(path, lines)
    sh_degree = _degree(path, names)
    width = len(names)
    expected = header_len + num * width * 4
    actual = path.stat().st_size
    if actual != expected:
        raise FormatError(f"{path}: expected {expected} bytes (header {header_len} + {num} x {width * 4}), "
                          f"got {actual}; the file is truncated or has trailing data")
    data = np.fromfile(path, dtype="<f4", offset=header_len).reshape(num, width)
    return data.astype(np.float32), sh_degree


def _parse_header(path: Path, lines: list[str]) -> tuple[int, list[str]]:
    if len(lines) < 3 or lines[0] != "ply":
        raise FormatError(f"{path}: does not start with `ply`")
    if lines[1] != "format binary_little_endian 1.0":
        raise FormatError(f"{path}: format must be `binary_little_endian 1.0`, got `{lines[1]}`")
    parts = lines[2].split()
    if len(parts) != 3 or parts[:2] != ["element", "vertex"] or not parts[2].isdigit():
        raise FormatError(f"{path}: third header line must be `element vertex <N>`, got `{lines[2]}`")
    names = []
    for ln in lines[3:]:
        p = ln.split()
        if len(p) != 3 or p[0] != "property" or p[1] not in _FLOAT_TYPES:
            raise FormatError(f"{path}: expected only `property float <name>` lines after the vertex element, "
                              f"got `{ln}`")
        names.append(p[2])
    return int(parts[2]), names


def _degree(path: Path, names: list[str]) -> int:
    for d in range(4):
        if names == property_names(d):
            return d
    raise FormatError(f"{path}: properties are not the Inria 3DGS layout of SH degree 0..3 "
                      f"(got {len(names)} properties starting {names[:4]})")
