"""Read tensors from PyTorch zip archives without running code from the file.

Two readers:

* `read_torch_checkpoint(path)`: `torch.load(weights_only=True, mmap=True)` (PyTorch's restricted
  unpickler), falling back to `read_zip_archive` when the file names classes that the restricted
  unpickler refuses (e.g. a Lightning checkpoint's hyper-parameters).
* `read_zip_archive(path)`: our own restricted unpickler for `torch.save` zip files *and*
  TorchScript archives (OpenAI's `ViT-L-14.pt` is one). It never imports or calls anything the
  pickle names: tensor reconstruction, `OrderedDict` and dtypes are rebuilt by our own code;
  classes from the modules a checkpoint plausibly holds (TorchScript's `__torch__`, Lightning,
  omegaconf, argparse, pathlib, numpy, typing, collections) become inert `Opaque` records; any
  other name (`os.system`, `builtins.eval`, ...) makes the file refused with a FormatError.
  TorchScript's `code/` is never read or compiled: `torch.jit.load` has no safe mode (a
  TorchScript file is a program, pytorch/pytorch#143403), so it is not used.
"""

from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import FormatError

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


class Opaque:
    """Inert stand-in for any class or function a pickle names; keeps only its constructor args and state."""

    qualname = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"Opaque({self.qualname})"


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild_tensor_v2(storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...],
                       requires_grad: bool = False, backward_hooks: Any = None, metadata: Any = None) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise FormatError("a tensor in the archive does not point at a storage record")
    return torch.as_strided(storage, tuple(size), tuple(stride), int(offset))


def _rebuild_parameter(data: Any, requires_grad: bool = False, backward_hooks: Any = None, *state: Any) -> Any:
    return data


def _identity_list(data: Any, *args: Any) -> Any:
    return data


# (module, name) -> the object our unpickler returns; everything else becomes an Opaque subclass.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    # TorchScript list helpers: they only tag a list with its element type.
    ("torch.jit._pickle", "build_intlist"): _identity_list,
    ("torch.jit._pickle", "build_doublelist"): _identity_list,
    ("torch.jit._pickle", "build_boollist"): _identity_list,
    ("torch.jit._pickle", "build_tensorlist"): _identity_list,
    ("torch.jit._pickle", "restore_type_tag"): _identity_list,
}


# Names read as inert records (never imported): module prefixes a checkpoint's metadata plausibly uses.
_OPAQUE_PREFIXES = ("__torch__.", "torch.", "omegaconf.", "argparse.", "pathlib.", "pytorch_lightning.",
                    "lightning_fabric.", "lightning.", "typing.", "numpy.", "collections.", "copyreg._reconstructor",
                    "builtins.set", "builtins.frozenset", "builtins.slice", "builtins.complex", "builtins.object",
                    "builtins.bytearray", "_codecs.encode")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        qualname = f"{module}.{name}"
        if not qualname.startswith(_OPAQUE_PREFIXES):
            raise FormatError(f"refusing to unpickle `{qualname}`: a weights file should only hold tensors and "
                              "plain metadata (the file may be malicious; re-download it or use a .safetensors copy)")
        return type(name, (Opaque,), {"qualname": qualname})

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise FormatError(f"unsupported persistent record {pid!r:.80}")
        storage_type, key = pid[1], str(pid[2])
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else storage_type
        if not isinstance(dtype, torch.dtype):
            raise FormatError(f"storage {key} has an unknown type {storage_type!r:.80}")
        if key not in self._storages:
            try:
                raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
            except KeyError as exc:
                raise FormatError(f"storage record data/{key} is missing from the archive") from exc
            self._storages[key] = (torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype))
        return self._storages[key]


def _archive_prefix(archive: zipfile.ZipFile) -> str:
    names = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(names) != 1:
        raise FormatError(f"expected one <name>/data.pkl record in the archive, found {len(names)}")
    byteorder = names[0][: -len("data.pkl")] + "byteorder"
    if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
        raise FormatError("the archive was written on a big-endian machine; re-save it on a little-endian one")
    return names[0][: -len("data.pkl")]


def read_zip_archive(path: str | Path) -> Any:
    """Unpickle `<name>/data.pkl` of a zip archive, building tensors and inert `Opaque` records only.

    Raises:
        FormatError: not a zip archive, or records missing.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise FormatError(f"{path} is not a PyTorch zip archive (a legacy pickle file cannot be read safely)")
    with zipfile.ZipFile(path) as archive:
        prefix = _archive_prefix(archive)
        with archive.open(prefix + "data.pkl") as f:
            try:
                return _RestrictedUnpickler(f, archive, prefix).load()
            except FormatError:
                raise
            except Exception as exc:   # a damaged pickle: report the file, keep the cause
                raise FormatError(f"{path}: cannot read data.pkl: {type(exc).__name__}: {exc}") from exc


def module_tensors(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Flatten a TorchScript module object (nested `Opaque` records with attribute dicts) to a state dict."""
    out: dict[str, torch.Tensor] = {}
    state = obj.state if isinstance(obj, Opaque) else obj
    if isinstance(state, dict):
        for name, value in state.items():
            if not isinstance(name, str):
                continue
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
            elif isinstance(value, (Opaque, dict)):
                out.update(module_tensors(value, f"{prefix}{name}."))
    return out


def read_torch_checkpoint(path: str | Path) -> Any:
    """Load a `torch.save` file safely: PyTorch's weights-only unpickler, else our restricted reader.

    Raises:
        FormatError: the file is neither (e.g. a legacy pickle with classes, or damaged).
    """
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        pass            # names a class the weights-only unpickler refuses: read it with inert stand-ins
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc).lower():
            raise FormatError(f"{path}: {exc}") from exc
        try:            # a legacy (non-zip) file cannot be memory-mapped
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc2:
            raise FormatError(f"{path} cannot be read as a weights-only checkpoint: {exc2}") from exc2
    return read_zip_archive(path)
