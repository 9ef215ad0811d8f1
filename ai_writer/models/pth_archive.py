"""The zip container of a PyTorch `.pth`, read without torch: its pickle, and its storages memory-mapped.

`torch.save` writes a zip holding `NAME/data.pkl` (what the tensors are: names, shapes, strides;
read by models/aiwriter/restricted_pickle.py, which runs nothing from it), `NAME/byteorder`, and
one member `NAME/data/KEY` per storage: the raw elements, stored uncompressed (and 64-byte
aligned by torch 1.6 and later). So a storage is a read-only numpy view of the mapped file at its
member's data offset, found from the member's local header; nothing is copied until a tensor is
asked for in float32 or float16 (`StoredTensor.to_numpy`). bfloat16 has no numpy type: its
tensors are views of their uint16 bits, widened by a shift when read.

The legacy (before torch 1.6) non-zip format is refused: torch can load it and save it again.
"""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai_writer.errors import ModelFileError

NUMPY_CODES = {  # torch's dtype name -> the numpy type of its stored elements (bfloat16: its bits)
    "float32": "f4", "float16": "f2", "bfloat16": "u2", "float64": "f8",
    "int64": "i8", "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "bool": "b1",
    "uint16": "u2", "uint32": "u4", "uint64": "u8",
}
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")
MAX_PICKLE_BYTES = 64 * 2**20  # a checkpoint's data.pkl holds names and shapes only: kilobytes, never this
LEGACY_MAGIC = bytes.fromhex("80028a0a6cfc9c46f9206aa85019")  # pickle protocol 2, then torch's magic number
LOCAL_HEADER_BYTES = 30  # a zip member's local header: signature ... name length (at 26), extra length (at 28)


def is_legacy_torch_file(head: bytes) -> bool:
    """Whether a file's first 14 bytes are those of a checkpoint of torch before 1.6 (pickles, not a zip)."""
    return head.startswith(LEGACY_MAGIC)


def legacy_format_error(path: Path) -> ModelFileError:
    return ModelFileError(f"{path}: a PyTorch checkpoint in the legacy format of torch before 1.6, which "
                          "ai-writer does not read; load it with torch.load and save it again with torch.save")


@dataclass(frozen=True)
class StoredTensor:
    """A tensor as the file stores it: a read-only numpy view of the mapped file, never a copy."""

    array: np.ndarray  # in the stored byte order; bfloat16 as its uint16 bits
    dtype: str  # torch's name: "float32", "bfloat16", "int64", ... (a key of NUMPY_CODES)
    begin: int  # the file offset of its first element: with array.strides, the bytes it spans
    mapped: mmap.mmap | None = None  # the map it views (None: an array not backed by a file)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def span(self) -> tuple[int, int]:
        """The file's bytes [begin, end) that hold its elements."""
        if self.array.size == 0:
            return self.begin, self.begin
        last = sum((n - 1) * s for n, s in zip(self.array.shape, self.array.strides))
        return self.begin, self.begin + last + self.array.itemsize

    def to_numpy(self, dtype: str = "float32") -> np.ndarray:
        """A new, C-ordered array of the values in float32 or float16 (bfloat16 widened exactly); the
        caller owns it. Only this tensor is read: a model's footprint is its largest tensor."""
        if dtype not in ("float32", "float16"):
            raise ValueError(f"to_numpy gives float32 or float16, not {dtype}")
        if self.dtype == "bfloat16":  # the top half of a float32: shifted in place, one array at a time
            bits = self.array.astype(np.uint32, order="C")
            np.left_shift(bits, 16, out=bits)
            widened = bits.view(np.float32)
            return widened if dtype == "float32" else widened.astype(np.float16)
        return self.array.astype(dtype, order="C")  # astype copies: a read-only view never leaks out

    def view(self, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> StoredTensor:
        """Elements [offset...] of this flat storage seen with torch's size and stride (in elements),
        as checked by the caller: a strided, read-only view."""
        array = strided_view(self.array, offset, size, stride)
        return StoredTensor(array, self.dtype, self.begin + offset * self.array.itemsize, self.mapped)

    def retyped(self, dtype: str, byteorder: str) -> StoredTensor:
        """This flat byte storage (torch's UntypedStorage) read as elements of `dtype`."""
        code = byteorder + NUMPY_CODES[dtype]
        usable = self.array.size - self.array.size % np.dtype(code).itemsize
        return StoredTensor(self.array[:usable].view(code), dtype, self.begin, self.mapped)


def strided_view(array: np.ndarray, offset: int, size: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    """`array[offset:]` seen with `size` and `stride` (in elements): the caller checked that it fits."""
    start = array[offset:] if array.size else array
    return np.lib.stride_tricks.as_strided(start, size, tuple(s * array.itemsize for s in stride), writeable=False)


class PthArchive:
    """An open `.pth` zip: its pickle's bytes, its byte order, and its storages as views of one read-only map."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                if is_legacy_torch_file(f.read(len(LEGACY_MAGIC))):
                    raise legacy_format_error(self.path)
                f.seek(0)
                self.size = os.fstat(f.fileno()).st_size
                with zipfile.ZipFile(f) as archive:
                    self._members = {info.filename: info for info in archive.infolist()}
                    self.pickle_name, self.folder = self._find_pickle()
                    self.pickle = self._read_small(archive, self.pickle_name)
                    self.byteorder = self._byteorder(archive)
                self.mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError, NotImplementedError, RuntimeError,
                zlib.error) as exc:
            raise ModelFileError(f"{self.path}: not a PyTorch checkpoint, or a truncated or corrupt one "
                                 f"(not a zip archive: {exc})") from None
        except OSError as exc:
            raise ModelFileError(f"{self.path}: cannot read the file ({exc.strerror or exc})") from None
        self._storages: dict[str, StoredTensor] = {}

    def storage(self, key: str, dtype: str, numel: int) -> StoredTensor:
        """Storage `key` of `numel` elements of `dtype`, a flat read-only view of the map (one per key)."""
        if key in self._storages:
            known = self._storages[key]
            if known.dtype != dtype or known.array.size != numel:
                raise ModelFileError(f"{self.path}: storage {key[:40]!r} is read as two different types")
            return known
        name = f"{self.folder}data/{key}"
        info = self._members.get(name)
        if info is None:
            raise ModelFileError(f"{self.path}: the checkpoint lacks its storage {name[:80]}")
        code = self.byteorder + NUMPY_CODES[dtype]
        itemsize = np.dtype(code).itemsize
        if info.file_size != numel * itemsize:
            raise ModelFileError(f"{self.path}: storage {name} holds {info.file_size} bytes, expected "
                                 f"{numel * itemsize}")
        begin = self._data_offset(info)
        array = np.frombuffer(self.mapped, dtype=code, count=numel, offset=begin) if numel else np.empty(0, code)
        self._storages[key] = StoredTensor(array, dtype, begin, self.mapped)
        return self._storages[key]

    def _find_pickle(self) -> tuple[str, str]:
        pickles = [n for n in self._members if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ModelFileError(f"{self.path}: not a PyTorch checkpoint (no single data.pkl in the archive)")
        return pickles[0], pickles[0][: -len("data.pkl")]

    def _read_small(self, archive: zipfile.ZipFile, name: str) -> bytes:
        if self._members[name].file_size > MAX_PICKLE_BYTES:
            raise ModelFileError(f"{self.path}: its data.pkl is over {MAX_PICKLE_BYTES // 2**20} MB: "
                                 "not a checkpoint's")
        return archive.read(name)

    def _byteorder(self, archive: zipfile.ZipFile) -> str:
        name = self.folder + "byteorder"
        if name not in self._members:
            return "<"  # torch before 1.10 wrote none: little-endian
        order = self._read_small(archive, name).decode("ascii", "replace").strip()
        if order not in ("little", "big"):
            raise ModelFileError(f"{self.path}: unknown byte order {order[:20]!r}")
        return "<" if order == "little" else ">"

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where the member's bytes start: after its local header, whose name and extra field (torch's
        alignment padding) may differ in length from the central directory's. Stored, never compressed:
        a deflated storage could claim gigabytes in a few kilobytes, and could not be mapped."""
        name = info.filename
        if info.compress_type != zipfile.ZIP_STORED or info.compress_size != info.file_size:
            raise ModelFileError(f"{self.path}: storage {name} is compressed; PyTorch checkpoints store "
                                 "tensors as they are")
        if info.flag_bits & 0x1:
            raise ModelFileError(f"{self.path}: storage {name} is encrypted")
        start = info.header_offset
        if start + LOCAL_HEADER_BYTES > self.size:
            raise ModelFileError(f"{self.path}: storage {name} reaches past the end of the file (truncated?)")
        if self.mapped[start:start + 4] != b"PK\x03\x04":
            raise ModelFileError(f"{self.path}: storage {name} has no local zip header (corrupt?)")
        name_length, extra_length = struct.unpack_from("<HH", self.mapped, start + 26)
        begin = start + LOCAL_HEADER_BYTES + name_length + extra_length
        if begin + info.file_size > self.size:
            raise ModelFileError(f"{self.path}: storage {name} reaches past the end of the file (truncated?)")
        return begin
