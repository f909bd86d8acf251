"""glTF 2.0 binary (.glb) files: the Y-up frame, a GLB reader, and Gaussians as KHR_gaussian_splatting.

glTF frame
----------
glTF is Y up, and three.js / model-viewer put the default camera on +Z looking
toward -Z. We want the object upright (world +Z -> glTF +Y) with its front (world
+X, the photographed side) facing that camera (world +X -> glTF +Z), hence world
+Y -> glTF +X::

    [x_g]   [0 1 0] [X]
    [y_g] = [0 0 1] [Y]        det = +1 (a proper rotation; the same as the
    [z_g]   [1 0 0] [Z]                  PlayCanvas viewer frame of `functional.py`)

KHR_gaussian_splatting
----------------------
One mesh, one primitive in mode POINTS (0). Attributes, per the Khronos
extension README (KhronosGroup/glTF, extensions/2.0/Khronos/KHR_gaussian_splatting)::

    POSITION                                   VEC3 float, with min/max
    COLOR_0                                    VEC4 u8 normalized: clip(0.5 + SH_C0*dc) and sigmoid(opacity)
                                               (fallback colour for viewers without the extension)
    KHR_gaussian_splatting:ROTATION            VEC4 float, unit quaternion (x, y, z, w)
    KHR_gaussian_splatting:SCALE               VEC3 float, linear: exp(log_scales)
    KHR_gaussian_splatting:OPACITY             SCALAR float, sigmoid(opacity logit)
    KHR_gaussian_splatting:SH_DEGREE_0_COEF_0  VEC3 float, SH DC (r, g, b)
    KHR_gaussian_splatting:SH_DEGREE_l_COEF_n  VEC3 float, l = 1..d, n = 0..2l (order m = -l..l)

and on the primitive ``{"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
"sortingMethod": "cameraDistance", "projection": "perspective"}``.

Uncertain: early drafts of the extension stored SCALE in log space; the text
was changed to linear (KhronosGroup/glTF#2563) and splat-transform >= 2.x
writes linear, as we do. The Khronos glTF-Validator (npm 2.0.0-dev.3.10) does
not know the extension and flags every ``KHR_gaussian_splatting:*`` attribute
as MESH_PRIMITIVE_INVALID_ATTRIBUTE (KhronosGroup/glTF-Validator#252, open);
everything else validates without errors.

The file is written by hand (struct + numpy) because trimesh and other Python
glTF writers cannot write attributes of an extension on a POINTS primitive.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import torch

from ..errors import FormatError
from ..fileio import write_bytes
from ..gaussians import SH_C0, Gaussians
from .functional import to_file_frame

WORLD_TO_GLTF = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])

EXTENSION = "KHR_gaussian_splatting"
EXTENSION_PROPERTIES = {"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
                        "sortingMethod": "cameraDistance", "projection": "perspective"}

_MAGIC, _JSON, _BIN = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UBYTE, _ARRAY_BUFFER = 5126, 5121, 34962
_TYPES = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_COMPONENTS = {_FLOAT: np.dtype("<f4"), _UBYTE: np.dtype("u1"), 5123: np.dtype("<u2"), 5125: np.dtype("<u4")}


def sh_attribute_names(sh_degree: int) -> list[str]:
    """Names of the SH attributes up to `sh_degree` (0..3), in our `sh_rest` order after DC."""
    return [f"{EXTENSION}:SH_DEGREE_{deg}_COEF_{n}" for deg in range(sh_degree + 1) for n in range(2 * deg + 1)]


def glb_bytes(gltf: dict, binary: bytes) -> bytes:
    """Pack a glTF JSON document and its binary buffer as a GLB (chunks padded to 4 bytes)."""
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary = binary + b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<III", _MAGIC, 2, total), struct.pack("<II", len(text), _JSON), text,
                     struct.pack("<II", len(binary), _BIN), binary])


def read_glb(data: bytes | Path) -> tuple[dict, bytes]:
    """Split a GLB into its JSON document and binary chunk (empty when absent).

    Raises:
        FormatError: not a GLB 2.0, or chunk lengths that do not add up.
    """
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else bytes(data)
    if len(raw) < 20:
        raise FormatError(f"a GLB needs at least 20 bytes, got {len(raw)}")
    magic, version, total = struct.unpack_from("<III", raw, 0)
    if magic != _MAGIC or version != 2 or total != len(raw):
        raise FormatError(f"not a GLB 2.0 of {len(raw)} bytes (magic {magic:#x}, version {version}, length {total})")
    chunks, offset = {}, 12
    while offset < total:
        if offset + 8 > total:
            raise FormatError(f"GLB chunk header at byte {offset} runs past the end")
        length, kind = struct.unpack_from("<II", raw, offset)
        if offset + 8 + length > total or length % 4:
            raise FormatError(f"GLB chunk at byte {offset} has a bad length {length}")
        chunks.setdefault(kind, raw[offset + 8:offset + 8 + length])
        offset += 8 + length
    if _JSON not in chunks:
        raise FormatError("GLB has no JSON chunk")
    try:
        return json.loads(chunks[_JSON].decode("utf-8")), chunks.get(_BIN, b"")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"GLB JSON chunk is not valid UTF-8 JSON: {exc}") from exc


def accessor_array(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """Read accessor `index` (tightly packed or strided, not sparse) as [count, components] (normalized to 0..1)."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype, width = _COMPONENTS[acc["componentType"]], _TYPES[acc["type"]]
    stride = view.get("byteStride", dtype.itemsize * width)
    if acc["count"] == 0:
        return np.zeros((0, width), dtype)
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    rows = np.lib.stride_tricks.as_strided(
        np.frombuffer(binary, dtype=np.uint8, offset=start, count=(acc["count"] - 1) * stride + dtype.itemsize * width),
        shape=(acc["count"], dtype.itemsize * width), strides=(stride, 1))
    out = np.ascontiguousarray(rows).view(dtype).reshape(acc["count"], width)
    if acc.get("normalized") and acc["componentType"] == _UBYTE:
        return out.astype(np.float32) / 255.0
    return out


def gaussians_to_glb(g: Gaussians, path: Path, sh_degree: int | None = None) -> None:
    """Write Gaussians (world frame) as a KHR_gaussian_splatting .glb in the glTF frame, atomically.

    Args:
        g: N >= 1 finite Gaussians in the world frame (Z up).
        path: destination .glb.
        sh_degree: SH degree of the file, 0..3 (default: that of `g`; padded with zeros or cut).

    Raises:
        ValueError: empty, non-finite values, or a bad `sh_degree`.

    Example:
        >>> gaussians_to_glb(Gaussians.load_ply(Path("model.ply")), Path("model.glb"))  # doctest: +SKIP
    """
    write_bytes(Path(path), gaussians_glb_bytes(g, sh_degree))


def gaussians_glb_bytes(g: Gaussians, sh_degree: int | None = None) -> bytes:
    """The .glb content of `gaussians_to_glb` (same arguments and errors)."""
    degree = g.sh_degree if sh_degree is None else sh_degree
    if degree not in (0, 1, 2, 3):
        raise ValueError(f"`sh_degree` must be 0..3, got {sh_degree!r}")
    if g.num == 0:
        raise ValueError("`g` must hold at least one Gaussian, got 0")
    if bool(g.nonfinite_mask().any()):
        raise ValueError("`g` has non-finite values; call `Gaussians.sanitize()` first")
    f = to_file_frame(g.to("cpu").with_sh_degree(degree), WORLD_TO_GLTF)
    as_np = lambda t: t.detach().double().numpy()  # noqa: E731
    quats = as_np(f.quats)
    quats = quats / np.maximum(np.linalg.norm(quats, axis=1, keepdims=True), 1e-12)
    opacity = 1.0 / (1.0 + np.exp(-as_np(f.opacity_logits)))
    rgb = np.clip(0.5 + SH_C0 * as_np(f.sh_dc), 0.0, 1.0)
    sh = torch.cat([f.sh_dc[:, None], f.sh_rest], dim=1).detach().double().numpy()      # [N,(d+1)^2,3]
    attributes: list[tuple[str, np.ndarray]] = [
        ("POSITION", as_np(f.means)),
        ("COLOR_0", np.rint(np.concatenate([rgb, opacity[:, None]], axis=1) * 255.0).astype(np.uint8)),
        (f"{EXTENSION}:ROTATION", quats[:, [1, 2, 3, 0]]),
        (f"{EXTENSION}:SCALE", np.exp(as_np(f.log_scales))),
        (f"{EXTENSION}:OPACITY", opacity[:, None]),
    ] + [(name, sh[:, k]) for k, name in enumerate(sh_attribute_names(degree))]
    return _points_glb(attributes, {"KHR_gaussian_splatting": dict(EXTENSION_PROPERTIES)})


def _points_glb(attributes: list[tuple[str, np.ndarray]], extensions: dict) -> bytes:
    views, accessors, chunks, offset = [], [], [], 0
    for i, (name, values) in enumerate(attributes):
        data = values.astype(np.uint8 if values.dtype == np.uint8 else "<f4")
        blob = np.ascontiguousarray(data).tobytes()
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": _ARRAY_BUFFER})
        acc = {"bufferView": i, "componentType": _UBYTE if data.dtype == np.uint8 else _FLOAT,
               "count": int(data.shape[0]), "type": {1: "SCALAR", 3: "VEC3", 4: "VEC4"}[data.shape[1]]}
        if data.dtype == np.uint8:
            acc["normalized"] = True
        if name == "POSITION":
            acc["min"] = [float(v) for v in data.min(axis=0)]
            acc["max"] = [float(v) for v in data.max(axis=0)]
        accessors.append(acc)
        chunks.append(blob + b"\0" * (-len(blob) % 4))
        offset += len(chunks[-1])
    primitive = {"attributes": {name: i for i, (name, _) in enumerate(attributes)}, "mode": 0,
                 "extensions": extensions}
    gltf = {"asset": {"version": "2.0", "generator": "glimpsed ai_modules.export.gltf"},
            "extensionsUsed": sorted(extensions), "scene": 0, "scenes": [{"nodes": [0]}],
            "nodes": [{"mesh": 0}], "meshes": [{"primitives": [primitive]}],
            "buffers": [{"byteLength": offset}], "bufferViews": views, "accessors": accessors}
    return glb_bytes(gltf, b"".join(chunks))


def glb_to_gaussians(path: Path) -> Gaussians:
    """Read a KHR_gaussian_splatting .glb written by `gaussians_to_glb` back into the world frame.

    Opacities of exactly 0 or 1 come back as logits of -/+ 16.6 (clamped), quaternions as unit (w, x, y, z).

    Raises:
        FormatError: not such a file (no splat primitive, missing attributes, partial SH bands).
    """
    gltf, binary = read_glb(Path(path))
    try:
        prim = gltf["meshes"][0]["primitives"][0]
    except (KeyError, IndexError) as exc:
        raise FormatError(f"{path}: no mesh primitive") from exc
    attrs = prim.get("attributes", {})
    if EXTENSION not in prim.get("extensions", {}) or prim.get("mode") != 0:
        raise FormatError(f"{path}: the first primitive is not a {EXTENSION} POINTS primitive")
    complete = [d for d in range(4) if all(a in attrs for a in sh_attribute_names(d))]
    base = ["POSITION", f"{EXTENSION}:ROTATION", f"{EXTENSION}:SCALE", f"{EXTENSION}:OPACITY"]
    if not complete or any(a not in attrs for a in base):
        raise FormatError(f"{path}: missing {EXTENSION} attributes (have {sorted(attrs)})")
    degree = complete[-1]
    partial = [a for a in attrs if a.startswith(f"{EXTENSION}:SH_") and a not in sh_attribute_names(degree)]
    if partial:
        raise FormatError(f"{path}: SH degree {degree + 1} is only partly defined (have {sorted(partial)})")
    get = lambda name: torch.from_numpy(accessor_array(gltf, binary, attrs[name]).astype(np.float32))  # noqa: E731
    sh = torch.stack([get(a) for a in sh_attribute_names(degree)], dim=1)                  # [N,(d+1)^2,3]
    opacity = get(f"{EXTENSION}:OPACITY")[:, 0].double().clamp(1e-7, 1 - 1e-7)
    f = Gaussians(means=get("POSITION"), quats=get(f"{EXTENSION}:ROTATION")[:, [3, 0, 1, 2]],
                  log_scales=torch.log(get(f"{EXTENSION}:SCALE")),
                  opacity_logits=torch.log(opacity / (1 - opacity)).float(),
                  sh_dc=sh[:, 0].contiguous(), sh_rest=sh[:, 1:].contiguous())
    return to_file_frame(f, WORLD_TO_GLTF.T)
