"""How an export stores each weight, per precision: the table, torch- and onnx-free.

| role | fp32 | fp16 (DirectML) | int8 | int4 |
|---|---|---|---|---|
| `matrix`: projections, FFN | float32 | float16 | MatMulNBits 8-bit | MatMulNBits 4-bit |
| `head` | float32 | float16 | MatMulNBits 8-bit | MatMulNBits 4-bit |
| `embedding` (gathered per token) | float32 | float16 | float16 | float16 |
| `lora` (low-rank) | float32 | float16 | MatMulNBits 8-bit | MatMulNBits 8-bit |
| `vector` | float32 | float16 | float32 | float32 |

Blocks of 256 inputs (int8) or 128 (int4) share a scale (or the largest smaller power of two that
divides a matrix's inputs): chosen by measured speed and accuracy (benchmarks/RESULTS.md, "Block sizes").
export/weights.py writes weights in these forms; backends/precision.py counts their bytes.
"""

from __future__ import annotations

ROLES = ("matrix", "head", "embedding", "lora", "vector")
INT8_BLOCK = 256  # inputs per scale, 8-bit weights (benchmarks/RESULTS.md, "Block sizes")
INT4_BLOCK = 128  # inputs per scale, 4-bit weights (ibid.)
INT4_HEAD_BITS = 4  # the head of an int4 export (ibid.)
INT4_LORA_BITS = 8  # the low-rank matrices of an int4 export; 0: float32 (ibid.)
INT8_LORA_BITS = 8  # and of an int8 export: float32 they were 11 % of its decode step on the RWKV-7 1.5B layout


def stored_form(precision: str, role: str) -> str | int:
    """np dtype name ("float32", "float16") or a bit width (8, 4) for a weight of `role`."""
    if precision == "fp16":
        return "float16"
    if role == "embedding" and precision in ("int8", "int4"):
        return "float16"
    if role == "matrix" and precision in ("int8", "int4"):
        return 8 if precision == "int8" else 4
    if role == "lora" and precision in ("int8", "int4"):
        bits = INT8_LORA_BITS if precision == "int8" else INT4_LORA_BITS
        if bits:
            return bits
    if role == "head" and precision in ("int8", "int4"):
        return 8 if precision == "int8" else INT4_HEAD_BITS
    return "float32"


def block_for(k: int, preferred: int) -> int | None:
    """The block size for a matrix of `k` inputs: `preferred`, or the largest smaller power of two (down to 16,
    MatMulNBits' least) that divides k; None when none does."""
    block = preferred
    while block >= 16:
        if k % block == 0:
            return block
        block //= 2
    return None
