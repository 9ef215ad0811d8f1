"""Reading PyTorch `.pth` files without running their pickle: the original AI-Writer releases.

A `.pth` is a zip holding `data.pkl` (a pickle) and raw storages under `data/`. A pickle can
import and call anything, and the 2022-02-15 release is a whole pickled training module
(`torch.save(model)`), which `torch.load(weights_only=True)` refuses. This reader unpickles with
an allow-list (conformance README §3):

- the tensor rebuild helpers, storage types, `OrderedDict`, `set` resolve to our own inert
  functions that build numpy arrays from the raw storage bytes;
- the original classes (`src.model.*`) and `torch.nn.modules.*` resolve to placeholder classes
  that only keep the attribute dict they are given;
- any other global (`os.system`, `builtins.eval`, ...) stops the read with UnsafePickleError.

Nothing from the file is ever called, and torch is not imported. The state dict of a pickled
module is rebuilt by walking the placeholders' `_parameters`, `_buffers` and `_modules` in the
order `state_dict()` uses.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_writer.errors import ModelFileError

MAX_EXTENT = 2**40  # no dimension, stride or offset of a real tensor comes near it
MAX_PICKLE_BYTES = 64 * 2**20  # a checkpoint's data.pkl holds names and shapes only: kilobytes, never this
PLACEHOLDER_MODULES = re.compile(r"(src\.model|torch\.nn\.modules(\.\w+)*)")
STORAGE_DTYPES = {
    "FloatStorage": "f4", "HalfStorage": "f2", "DoubleStorage": "f8", "BFloat16Storage": "bf16",
    "LongStorage": "i8", "IntStorage": "i4", "ShortStorage": "i2", "CharStorage": "i1",
    "ByteStorage": "u1", "BoolStorage": "b1",
}


class UnsafePickleError(ModelFileError):
    """The pickle references something other than tensors and the known inert classes."""

    def __init__(self, message: str, global_name: str, saw_legacy_class: bool):
        super().__init__(message)
        self.global_name = global_name
        self.saw_legacy_class = saw_legacy_class  # an original AI-Writer class came before it


@dataclass(frozen=True)
class TensorShape:
    """What a tensor becomes when only the shapes are read (no storage bytes touched)."""

    shape: tuple[int, ...]


class _Placeholder:
    """Stands for a pickled class: keeps the attributes it is given, does nothing else."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items() if isinstance(k, str)})


@dataclass(frozen=True)
class _StorageType:
    dtype: str  # a key of STORAGE_DTYPES' values


def _rebuild_tensor(storage, offset, size, stride, *rest):
    if not isinstance(storage, (TensorShape, np.ndarray)):
        raise pickle.UnpicklingError("a tensor without a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= 16
            and all(type(n) is int for n in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor whose size, stride or offset is not whole numbers")
    if any(n < 0 for n in size + stride) or offset < 0:
        raise pickle.UnpicklingError("a tensor with a negative size or stride")
    if any(n > MAX_EXTENT for n in (offset, *size, *stride)):
        raise pickle.UnpicklingError("a tensor whose size, stride or offset is beyond any real tensor's")
    numel = storage.shape[0] if isinstance(storage, TensorShape) else storage.size
    if math.prod(size) > numel:  # a weight never repeats its storage (stride 0): it would grow without bound
        raise pickle.UnpicklingError(f"a tensor of {math.prod(size)} elements on a storage of {numel}")
    if math.prod(n for n in size if n) > MAX_EXTENT:  # empty, but shaped beyond any real tensor
        raise pickle.UnpicklingError("an empty tensor shaped beyond any real tensor's")
    if isinstance(storage, TensorShape):  # shapes-only read: the storage was never loaded
        return TensorShape(size)
    if size and min(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise pickle.UnpicklingError("a tensor reaches past the end of its storage")
    view = np.lib.stride_tricks.as_strided(storage[offset:] if storage.size else storage, size,
                                           tuple(s * storage.itemsize for s in stride))
    return view


def _rebuild_parameter(data, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages, source: str):
        super().__init__(io.BytesIO(data))
        self.storages = storages  # key -> np.ndarray, or None for a shapes-only read
        self.source = source
        self.placeholders: dict[tuple[str, str], type] = {}
        self.saw_legacy_class = False

    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset"):
            return set if name == "set" else frozenset
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module in ("torch", "torch.cuda") and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if PLACEHOLDER_MODULES.fullmatch(module) and name.isidentifier():
            self.saw_legacy_class = self.saw_legacy_class or module == "src.model"
            key = (module, name)
            if key not in self.placeholders:
                self.placeholders[key] = type(name, (_Placeholder,), {"__module__": "inert." + module})
            return self.placeholders[key]
        raise UnsafePickleError(
            f"{self.source}: refused to load: its pickle wants to import {module}.{name} "
            "(only tensors and the original AI-Writer classes are allowed; nothing was run)",
            f"{module}.{name}", self.saw_legacy_class,
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:60]}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("a storage whose size is not a whole number")
        if self.storages is None:
            return TensorShape((numel,))
        return self.storages(key, storage_type.dtype, numel)


def read_pth(path: str | Path, *, shapes_only: bool = False) -> dict[str, np.ndarray | TensorShape]:
    """The named tensors of a `.pth` (a plain dict, or a pickled module's state dict), as float32
    numpy arrays; with shapes_only, only their shapes (reads data.pkl, no storage bytes)."""
    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(f"{path}: not a PyTorch checkpoint, or a truncated or corrupt one (not a zip archive: {exc})") from None
    with archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelFileError(f"{path}: not a PyTorch checkpoint (no single data.pkl in the archive)")
        folder = pickles[0][: -len("data.pkl")]
        order = archive.read(folder + "byteorder").decode().strip() if folder + "byteorder" in names else "little"
        if order not in ("little", "big"):
            raise ModelFileError(f"{path}: unknown byte order {order[:20]!r}")
        endian = "<" if order == "little" else ">"
        loaded: dict[str, np.ndarray] = {}

        def storage(key: str, dtype: str, numel: int) -> np.ndarray:
            if key not in loaded:
                loaded[key] = _read_storage(archive, f"{folder}data/{key}", dtype, endian, numel, path)
            return loaded[key]

        pickled = archive.read(pickles[0]) if archive.getinfo(pickles[0]).file_size <= MAX_PICKLE_BYTES else None
        if pickled is None:
            raise ModelFileError(f"{path}: its data.pkl is over {MAX_PICKLE_BYTES // 2**20} MB: not a checkpoint's")
        _check_memo(pickled, path)
        unpickler = _RestrictedUnpickler(pickled, None if shapes_only else storage, str(path))
        try:
            root = unpickler.load()
        except ModelFileError:  # UnsafePickleError included
            raise
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
                RecursionError, zipfile.BadZipFile, OSError) as exc:
            raise ModelFileError(f"{path}: cannot read the checkpoint (truncated or corrupt?): "
                                 f"{type(exc).__name__}: {str(exc)[:200]}") from None
    tensors = _named_tensors(root, path)
    if shapes_only:
        return tensors
    return {key: _as_float32(value) for key, value in tensors.items()}


def _check_memo(data: bytes, path: Path) -> None:
    """Read the pickle's instructions (pickletools: nothing is built) and refuse a memo index a pickler never
    writes: the C unpickler grows its memo to an index it is given, so one 4-byte index would take gigabytes."""
    puts = 0
    try:
        for opcode, argument, _ in pickletools.genops(data):
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                if not isinstance(argument, int) or argument > puts:
                    raise ModelFileError(f"{path}: cannot read the checkpoint (corrupt?): its pickle stores a "
                                         f"value at {str(argument)[:20]} after {puts} values")
                puts += 1
            elif opcode.name == "MEMOIZE":
                puts += 1
    except ModelFileError:
        raise
    except (ValueError, OverflowError, IndexError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read the checkpoint (truncated or corrupt?): "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None


def _read_storage(archive, name, dtype, endian, numel, path) -> np.ndarray:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{path}: the checkpoint lacks its storage {name}") from None
    itemsize = 2 if dtype == "bf16" else np.dtype(dtype).itemsize
    if info.file_size != numel * itemsize:
        raise ModelFileError(f"{path}: storage {name} holds {info.file_size} bytes, expected {numel * itemsize}")
    # Before allocating: the bytes must be in the file. PyTorch stores storages uncompressed; a deflated one
    # could claim gigabytes in a few kilobytes.
    if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
        raise ModelFileError(f"{path}: storage {name} is compressed; PyTorch checkpoints store tensors as they are")
    if info.header_offset + info.file_size > Path(path).stat().st_size:
        raise ModelFileError(f"{path}: storage {name} reaches past the end of the file (truncated?)")
    raw = np.empty(info.file_size, dtype=np.uint8)
    try:
        with archive.open(info) as f:
            got = f.readinto(memoryview(raw))
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ModelFileError(f"{path}: cannot read storage {name} (truncated or corrupt?): {exc}") from None
    if got != info.file_size:
        raise ModelFileError(f"{path}: storage {name} is truncated")
    if dtype == "bf16":  # bfloat16 is the top half of a float32
        halves = raw.view(endian + "u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    return raw.view(endian + dtype)


def _named_tensors(root, path: Path) -> dict:
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]
    if isinstance(root, _Placeholder):
        tensors: dict = OrderedDict()
        _walk_module(root, "", tensors, path, depth=0)
        return tensors
    if isinstance(root, dict) and root and all(isinstance(k, str) for k in root) and all(
            isinstance(v, (np.ndarray, TensorShape)) for v in root.values()):
        return dict(root)
    raise ModelFileError(f"{path}: not a checkpoint of named tensors")


def _walk_module(module: _Placeholder, prefix: str, out: dict, path: Path, depth: int) -> None:
    """The keys `state_dict()` would give: own parameters, persistent buffers, then sub-modules."""
    if depth > 64:
        raise ModelFileError(f"{path}: the pickled module is nested too deeply")
    attributes = vars(module)
    skip = attributes.get("_non_persistent_buffers_set") or set()
    for group in ("_parameters", "_buffers"):
        for name, value in (attributes.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skip):
                continue
            if not isinstance(value, (np.ndarray, TensorShape)):
                raise ModelFileError(f"{path}: {prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in (attributes.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Placeholder):
            raise ModelFileError(f"{path}: sub-module {prefix}{name} is not a module")
        _walk_module(child, f"{prefix}{name}.", out, path, depth + 1)


def _as_float32(value: np.ndarray) -> np.ndarray:
    if value.dtype == np.float32 and value.flags.c_contiguous and value.dtype.isnative:
        return value
    return np.ascontiguousarray(value, dtype=np.float32)
