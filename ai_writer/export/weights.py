"""How an export stores each weight, written straight to the external-data file as it comes.

The graph builders hand every weight to a `WeightWriter` one at a time (prepared from one
source tensor, then dropped); the writer converts or quantizes it, appends its bytes to
`NAME.onnx.data` and returns a TensorProto that only points there. The model proto thus holds
no weights, and the export's memory is bounded by the largest tensor, whatever the model's size.

What each kind of weight becomes, per precision, is export/forms.py's table.

MatMulNBits stores a (K, N) weight by output column in blocks of `block` inputs, each with one
float32 scale, unsigned with the operator's default zero point (128 for 8 bits, 8 for 4 bits);
4-bit values are packed two to a byte, the first in the low nibble.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from onnx import TensorProto, numpy_helper

from ai_writer.export import forms


INLINE_BYTES = 65536  # smaller tensors stay inside the .onnx file
ALIGN = 65536  # external tensors start at multiples of this (page- and Windows-mapping-aligned)
QUANTIZE_COLUMNS = 4096  # output columns quantized at a time


@dataclass(frozen=True)
class Quantized:
    """A MatMul weight stored for MatMulNBits: the names of its packed blocks and scales."""

    blocks: str
    scales: str
    k: int
    n: int
    bits: int
    block: int


class WeightWriter:
    """Appends weights to one external-data file; keeps only the (data-less) TensorProtos."""

    def __init__(self, data: BinaryIO | None, location: str, precision: str):
        """`data`: the open external-data file named `location` beside the .onnx; None keeps every
        weight inside the model proto (models built in memory, for measurements)."""
        self.data, self.location, self.precision = data, location, precision
        self.initializers: list[TensorProto] = []
        self.quantized: dict[str, Quantized] = {}
        self.dtypes: dict[str, str] = {}  # the float dtype each float weight was stored in
        self.nbytes = 0  # weight bytes written

    def add(self, name: str, array: np.ndarray, role: str) -> None:
        """Store weight `name` (float32, as the graph reads it: a matrix as (K, N)) in its form for `role`."""
        form = forms.stored_form(self.precision, role)
        if isinstance(form, int) and array.ndim == 2:
            k, n = array.shape
            block = forms.block_for(k, forms.INT8_BLOCK if form == 8 else forms.INT4_BLOCK)
            if block is not None:
                blocks, scales = quantize_blocks(array, block, form)
                self._store(blocks, name + f".q{form}")
                self._store(scales, name + ".scales")
                self.quantized[name] = Quantized(name + f".q{form}", name + ".scales", k, n, form, block)
                return
        if isinstance(form, int):
            form = "float32"  # a batched (3-D) weight, or a width no block divides: kept float
        self.dtypes[name] = form
        self._store(np.ascontiguousarray(array, dtype=form), name)

    def add_constant(self, name: str, array: np.ndarray) -> None:
        """A small constant of the graph, stored as given."""
        self._store(np.ascontiguousarray(array), name)

    def _store(self, array: np.ndarray, name: str) -> None:
        if self.data is None or array.nbytes < INLINE_BYTES:
            self.initializers.append(numpy_helper.from_array(array, name))
            return
        offset = _align(self.data)
        self.data.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        tensor = TensorProto(name=name, data_type=numpy_helper.helper.np_dtype_to_tensor_dtype(array.dtype),
                             dims=array.shape, data_location=TensorProto.EXTERNAL)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(array.nbytes))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self.initializers.append(tensor)
        self.nbytes += array.nbytes


def _align(data: BinaryIO) -> int:
    offset = data.tell()
    padding = -offset % ALIGN
    if padding:
        data.write(b"\0" * padding)
    return offset + padding


def quantize_blocks(weight: np.ndarray, block: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A (K, N) float matrix as MatMulNBits stores it: uint8 blocks (N, K/block, block * bits / 8) and
    float32 scales (N * K/block,). Symmetric: q = round(w / scale) in [-(2^(bits-1) - 1), 2^(bits-1) - 1]
    with scale = max |w| / (2^(bits-1) - 1) per block, stored as q + 2^(bits-1). Done QUANTIZE_COLUMNS
    output columns at a time, so the temporaries stay small for any matrix."""
    k, n = weight.shape
    top = 2 ** (bits - 1) - 1
    blocks = np.empty((n, k // block, block * bits // 8), dtype=np.uint8)
    scales = np.empty((n, k // block), dtype=np.float32)
    for start in range(0, n, QUANTIZE_COLUMNS):
        end = min(n, start + QUANTIZE_COLUMNS)
        columns = np.ascontiguousarray(weight[:, start:end].T, dtype=np.float32).reshape(end - start, k // block, block)
        scale = np.abs(columns).max(axis=2) / np.float32(top)  # (columns, K/block)
        scale[scale == 0] = 1  # an all-zero block: any scale gives q = 0
        q = (np.clip(np.rint(columns / scale[..., None]), -top, top) + (top + 1)).astype(np.uint8)
        blocks[start:end] = q if bits == 8 else q[..., 0::2] | (q[..., 1::2] << 4)  # 4 bits: low nibble first
        scales[start:end] = scale
    return blocks, scales.reshape(-1)


def write_model(model, out: Path) -> None:
    """The model proto (weights already in the data file) to `out`."""
    with open(out, "wb") as f:
        f.write(model.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
