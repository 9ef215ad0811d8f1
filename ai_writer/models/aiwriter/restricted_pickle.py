"""Reading PyTorch `.pth` files without torch and without running their pickle: RWKV checkpoints and the
original AI-Writer releases alike.

A `.pth` is a zip holding `data.pkl` (a pickle) and raw storages under `data/` (models/pth_archive.py
maps them). A pickle can import and call anything, and the 2022-02-15 release is a whole pickled
training module (`torch.save(model)`), which `torch.load(weights_only=True)` refuses. This reader
unpickles with an allow-list (conformance README §3):

- the tensor rebuild helpers (`_rebuild_tensor_v2`, and `_rebuild_tensor_v3` of a byte storage with
  a dtype), storage types, dtypes, `OrderedDict`, `set` resolve to our own inert functions that
  make read-only numpy views of the mapped storages;
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
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_writer.errors import ModelFileError
from ai_writer.models.pth_archive import NUMPY_CODES, PthArchive, StoredTensor, strided_view

MAX_EXTENT = 2**40  # no dimension, stride or offset of a real tensor comes near it
PLACEHOLDER_MODULES = re.compile(r"(src\.model|torch\.nn\.modules(\.\w+)*)")
STORAGE_DTYPES = {  # torch's storage classes -> the dtype of their elements (UntypedStorage: bytes)
    "FloatStorage": "float32", "HalfStorage": "float16", "DoubleStorage": "float64", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "UntypedStorage": "uint8",
}
TORCH_DTYPES = {  # the `torch.X` dtypes a `_rebuild_tensor_v3` may name, and their aliases
    **{name: name for name in NUMPY_CODES}, "float": "float32", "half": "float16", "double": "float64",
    "long": "int64", "int": "int32", "short": "int16",
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
    dtype: str  # one of STORAGE_DTYPES' values


@dataclass(frozen=True)
class _DType:
    name: str  # one of TORCH_DTYPES' values


@dataclass(frozen=True)
class _Storage:
    """A storage the pickle names (a persistent id): its elements' dtype and count, and the elements
    themselves, mapped, unless only the shapes are read."""

    dtype: str
    numel: int
    flat: StoredTensor | None
    byteorder: str = "<"


def _rebuild_tensor(storage, offset, size, stride, *rest):
    """torch._utils._rebuild_tensor_v2: a strided view of `storage` (a _Storage: a StoredTensor, or a
    TensorShape in a shapes-only read; a bare numpy array: its view), its geometry checked first."""
    if isinstance(storage, np.ndarray):
        _check_geometry(storage.size, offset, size, stride)
        return strided_view(storage, offset, size, stride)
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor without a storage")
    _check_geometry(storage.numel, offset, size, stride)
    if storage.flat is None:  # shapes-only read: the storage was never mapped
        return TensorShape(size)
    return storage.flat.view(offset, size, stride)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype, *rest):
    """torch._utils._rebuild_tensor_v3: a byte storage (UntypedStorage) read as elements of `dtype`."""
    if not (isinstance(storage, _Storage) and storage.dtype == "uint8" and isinstance(dtype, _DType)):
        raise pickle.UnpicklingError("a tensor without a byte storage and a dtype")
    itemsize = np.dtype(NUMPY_CODES[dtype.name]).itemsize
    flat = None if storage.flat is None else storage.flat.retyped(dtype.name, storage.byteorder)
    return _rebuild_tensor(_Storage(dtype.name, storage.numel // itemsize, flat), offset, size, stride)


def _check_geometry(numel: int, offset, size, stride) -> None:
    """A tensor's size, stride and offset (in elements) lie within a storage of `numel` elements."""
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= 16
            and all(type(n) is int for n in (offset, *size, *stride))):
        raise pickle.UnpicklingError("a tensor whose size, stride or offset is not whole numbers")
    if any(n < 0 for n in size + stride) or offset < 0:
        raise pickle.UnpicklingError("a tensor with a negative size or stride")
    if any(n > MAX_EXTENT for n in (offset, *size, *stride)):
        raise pickle.UnpicklingError("a tensor whose size, stride or offset is beyond any real tensor's")
    if math.prod(size) > numel:  # a weight never repeats its storage (stride 0): it would grow without bound
        raise pickle.UnpicklingError(f"a tensor of {math.prod(size)} elements on a storage of {numel}")
    if math.prod(n for n in size if n) > MAX_EXTENT:  # empty, but shaped beyond any real tensor
        raise pickle.UnpicklingError("an empty tensor shaped beyond any real tensor's")
    if math.prod(size) > 0:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= numel:
            raise pickle.UnpicklingError("a tensor reaches past the end of its storage")


def _rebuild_parameter(data, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, archive: PthArchive | None, source: str):
        super().__init__(io.BytesIO(data))
        self.archive = archive  # where the storages are mapped; None in a shapes-only read
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
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_tensor_v3
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module in ("torch", "torch.cuda", "torch.storage") and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        if module == "torch" and name in TORCH_DTYPES:
            return _DType(TORCH_DTYPES[name])
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
        dtype, key, numel = pid[1].dtype, str(pid[2]), pid[4]
        if type(numel) is not int or numel < 0:
            raise pickle.UnpicklingError("a storage whose size is not a whole number")
        if self.archive is None:
            return _Storage(dtype, numel, None)
        return _Storage(dtype, numel, self.archive.storage(key, dtype, numel), self.archive.byteorder)


def read_pth(path: str | Path, *, shapes_only: bool = False,
             stored: bool = False) -> dict[str, np.ndarray | TensorShape | StoredTensor]:
    """The named tensors of a `.pth` (a plain dict, or a pickled module's state dict), as new float32
    numpy arrays. With stored, as the file stores them (StoredTensor: read-only views of the mapped file,
    bfloat16 as its bits; nothing read yet); with shapes_only, only their shapes (no storage touched)."""
    path = Path(path)
    archive = PthArchive(path)
    _check_memo(archive.pickle, path)
    unpickler = _RestrictedUnpickler(archive.pickle, None if shapes_only else archive, str(path))
    try:
        root = unpickler.load()
    except ModelFileError:  # UnsafePickleError included
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError,
            RecursionError, OSError) as exc:
        raise ModelFileError(f"{path}: cannot read the checkpoint (truncated or corrupt?): "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None
    tensors = _named_tensors(root, path)
    if shapes_only or stored:
        return tensors
    return {key: value.to_numpy("float32") if value.is_float else value.array.astype(np.float32, order="C")
            for key, value in tensors.items()}


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


def _named_tensors(root, path: Path) -> dict:
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]
    if isinstance(root, _Placeholder):
        tensors: dict = OrderedDict()
        _walk_module(root, "", tensors, path, depth=0)
        return tensors
    if isinstance(root, dict) and root and all(isinstance(k, str) for k in root) and all(
            isinstance(v, (StoredTensor, TensorShape)) for v in root.values()):
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
            if not isinstance(value, (StoredTensor, TensorShape)):
                raise ModelFileError(f"{path}: {prefix}{name} is not a tensor")
            out[prefix + name] = value
    for name, child in (attributes.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _Placeholder):
            raise ModelFileError(f"{path}: sub-module {prefix}{name} is not a module")
        _walk_module(child, f"{prefix}{name}.", out, path, depth + 1)
