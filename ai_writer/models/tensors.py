"""A model file's tensors, read one at a time from a memory-mapped file: what a streaming export needs.

`open_tensors(path)` reads only the header (the safetensors JSON, or the `.pth` pickle through
the restricted unpickler, models/aiwriter/restricted_pickle.py, which runs nothing from it);
`source.read(key)` then returns one tensor as a fresh float32 array, of which nothing is kept, and
the mapped pages it was read from are handed back to the OS. So a 3 GB bf16 checkpoint is never
held in memory whole, let alone in float32: the largest single tensor is the bound.

Both are read with numpy alone (F32, F16 and BF16 payloads; bf16 is widened by a shift), so a
model exports on a machine without torch.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ai_writer.errors import ModelFileError
from ai_writer.models.aiwriter.restricted_pickle import read_pth

SAFETENSORS_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8"}  # bf16: its bits, widened on reading
FLOAT_NAMES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit


@dataclass
class TensorSource:
    path: Path
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]  # "float32", "float16", "bfloat16", or the stored name of a non-float type
    metadata: dict[str, str] = field(default_factory=dict)  # a safetensors header's __metadata__
    _read: Callable[[str], np.ndarray] | None = field(default=None, repr=False)
    _keep: Any = field(default=None, repr=False)  # what must stay open while tensors are read

    def read(self, key: str) -> np.ndarray:
        """Tensor `key` as a new float32 array (the caller owns it; the source keeps nothing)."""
        return self._read(key)

    def is_float(self, key: str) -> bool:
        return self.dtypes[key] in ("float32", "float16", "bfloat16", "float64")

    def nbytes(self, key: str) -> int:
        return math.prod(self.shapes[key]) * 4  # as float32


def open_tensors(path: str | os.PathLike, kind: str) -> TensorSource:
    """The tensors of a `safetensors` or `pth` file (models/formats.py kinds), read lazily."""
    path = Path(path)
    if kind == "safetensors":
        return _open_safetensors(path)
    if kind == "pth":
        return _open_pth(path)
    raise ModelFileError(f"{path}: a {kind} file has no RWKV tensors to read")


def _open_safetensors(path: Path) -> TensorSource:
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror})") from None
    try:
        size = os.fstat(f.fileno()).st_size
        raw = f.read(8)
        if len(raw) < 8:
            raise ValueError("the file is shorter than its header")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > min(MAX_HEADER_BYTES, size - 8):
            raise ValueError(f"a header of {header_len} bytes in a file of {size}")
        header = json.loads(f.read(header_len))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise ValueError("its __metadata__ is not an object of strings")
        start = 8 + header_len
        shapes, dtypes, spans, stored_as = {}, {}, {}, {}
        for key, entry in header.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or \
                    not all(type(n) is int for n in entry["shape"]) or not isinstance(entry.get("dtype"), str):
                raise ValueError(f"tensor {str(key)[:60]!r} has no valid shape and dtype")
            shape, dtype, (begin, end) = tuple(entry["shape"]), entry["dtype"], entry["data_offsets"]
            if any(n < 0 for n in shape) or not (type(begin) is int and type(end) is int) \
                    or not 0 <= begin <= end <= size - start:
                raise ValueError(f"tensor {str(key)[:60]!r} lies outside the file")
            width = np.dtype(SAFETENSORS_DTYPES[dtype]).itemsize if dtype in SAFETENSORS_DTYPES else None
            if width is not None and math.prod(shape) * width != end - begin:  # Python ints: no overflow to 0
                raise ValueError(f"tensor {key!r} has {end - begin} bytes for shape {list(shape)}")
            shapes[key], spans[key], stored_as[key] = shape, (start + begin, start + end), SAFETENSORS_DTYPES.get(dtype)
            dtypes[key] = FLOAT_NAMES.get(dtype, dtype)
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, struct.error, RecursionError) as exc:
        f.close()
        raise ModelFileError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {exc}") from None

    def read(key: str) -> np.ndarray:
        begin, end = spans[key]
        dtype = stored_as[key]
        if dtype is None:
            raise ModelFileError(f"{path}: tensor {key!r} is {dtypes[key]}, not floating point")
        stored = np.frombuffer(mapped, dtype=dtype, count=(end - begin) // np.dtype(dtype).itemsize, offset=begin)
        if dtypes[key] == "bfloat16":  # shifted in place: one float32 array, not two
            bits = stored.astype(np.uint32)
            np.left_shift(bits, 16, out=bits)
            array = bits.view(np.float32).reshape(shapes[key])
        else:
            array = stored.astype(np.float32).reshape(shapes[key])
        del stored
        _release(mapped, begin, end)
        return array

    return TensorSource(path, shapes, dtypes, {str(k): str(v) for k, v in metadata.items()}, read, (f, mapped))


def _release(mapped, begin: int, end: int) -> None:
    """Tell the OS the mapped pages of a tensor already read are not needed again: they leave this process's
    memory (they are the file's, so nothing is lost), and an export's footprint stays one tensor, not the file."""
    if not isinstance(mapped, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED"):
        return  # Windows: the OS trims mapped file pages itself
    start = begin - begin % mmap.PAGESIZE
    if end > start:
        mapped.madvise(mmap.MADV_DONTNEED, start, end - start)


def _open_pth(path: Path) -> TensorSource:
    """A `.pth` through the restricted unpickler: its storages memory-mapped, each tensor widened when read."""
    tensors = read_pth(path, stored=True)
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}
    dtypes = {key: t.dtype for key, t in tensors.items()}

    def read(key: str) -> np.ndarray:
        tensor = tensors[key]
        if not tensor.is_float:
            raise ModelFileError(f"{path}: tensor {key!r} is {tensor.dtype}, not floating point")
        array = tensor.to_numpy("float32")
        _release(tensor.mapped, *tensor.span)
        return array

    return TensorSource(path, shapes, dtypes, {}, read, tensors)
