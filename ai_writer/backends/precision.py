"""`--precision auto`: the most precise number format whose weights fit the memory this machine has free.

On the CPU backends the weights live in RAM, so their size decides what can run: a 1.5B model
needs about 6 GB in fp32, 2 GB in int8, 1.3 GB in int4. `choose_precision` asks the OS how much
memory is available (psutil) and takes, in order of precision, the first format that fits
comfortably (its need at most COMFORTABLE of what is free); when none does but a smaller one
fits at all, it takes that; when nothing fits, it says what would be needed, in one line,
instead of letting the OS kill the program. On GPUs (cuda, dml) the default stays fp16.

What a format needs is estimated from the model's shape (`weight_bytes`: the bytes each kind of
weight takes in that format, as export/weights.py stores them, or as torch holds them) plus what
the runtime needs beside the weights while loading (ONNX Runtime repacks the quantized matrices
once: measured in benchmarks/RESULTS.md, "Big models").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ai_writer.errors import BackendError
from ai_writer.export.forms import INT4_BLOCK, INT8_BLOCK, stored_form

AUTO_ORDER = {"cpu": ("fp32", "int8", "int4"), "torch-cpu": ("fp32", "bf16")}
COMFORTABLE = 0.8  # a format fits comfortably when it needs at most this share of the memory available
RUNTIME_BYTES = 300 * 2**20  # the runtime, the tokenizer and the states beside the weights
# peak memory while loading and writing, per byte of weights (measured on the 1.5B layouts: benchmarks/RESULTS.md,
# "Big models, session 7"): ONNX Runtime repacks the quantized matrices one after another
# (backends/rwkv_onnx.open_session), holding its packed copy and one matrix of the mapped file (1.0-1.1);
# a big float export is not repacked (backends/rwkv_onnx.worth_packing): its mapped file is all (0.96)
LOADING_FACTOR = {("cpu", "fp32"): 1.0, ("cpu", "int8"): 1.1, ("cpu", "int4"): 1.1,
                  ("torch-cpu", "fp32"): 1.5, ("torch-cpu", "bf16"): 1.1}
GB = 1e9


def available_memory() -> int:
    """Bytes of memory the OS can give this program now (free plus reclaimable caches)."""
    import psutil

    return int(psutil.virtual_memory().available)


def weight_bytes(config, precision: str, roles=("matrix", "head", "embedding", "lora", "vector")) -> int:
    """Bytes of the weights of a model of `config` (models.config.ModelConfig) stored in `precision`
    (of those weights whose role is in `roles`: export/weights.py names them)."""
    C, F, V, L = config.n_embd, config.ffn_dim, config.vocab_size, config.n_layer
    projections = 4 if config.version == 7 else 5  # RWKV-5.2/6 also have a gate
    matrices = L * (projections * C * C + 2 * C * F + (C * C if config.version != 7 else 0))  # FFN receptance
    lora = L * 2 * C * (config.dim_w + config.dim_a + config.dim_v + config.dim_g + 5 * config.dim_mix)
    vectors = L * 20 * C
    sizes = {"matrix": matrices, "head": V * C, "embedding": V * C, "lora": lora, "vector": vectors}
    return int(sum(count * _bytes_per_weight(precision, role) for role, count in sizes.items() if role in roles))


def _bytes_per_weight(precision: str, role: str) -> float:
    if precision in ("bf16", "fp16"):
        return 2.0
    form = stored_form(precision, role)
    if isinstance(form, int):
        return form / 8 + 4 / (INT8_BLOCK if form == 8 else INT4_BLOCK)  # the packed weight, a float32 scale a block
    return 2.0 if form == "float16" else 4.0


def need(config, precision: str, backend: str = "cpu") -> int:
    """Bytes of memory to load and run the model in `precision` on `backend`, at the peak."""
    return int(weight_bytes(config, precision) * LOADING_FACTOR.get((backend, precision), 1.8)) + RUNTIME_BYTES


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str


def choose_precision(backend: str, config, *, available: Callable[[], int] | None = None) -> PrecisionChoice:
    """The format `--precision auto` takes on `backend` for a model of `config`, and why, in words."""
    order = AUTO_ORDER.get(backend)
    if order is None:
        return PrecisionChoice("fp16", f"{backend} runs fp16 by default")
    free = (available or available_memory)()
    needs = {p: need(config, p, backend) for p in order}
    for p in order:
        if needs[p] <= COMFORTABLE * free:
            skipped = [f"{q} would need {needs[q] / GB:.1f} GB" for q in order[: order.index(p)]]
            why = f"{p} needs {needs[p] / GB:.1f} GB of {free / GB:.1f} GB available"
            return PrecisionChoice(p, "; ".join(skipped + [why]) if skipped else why)
    for p in reversed(order):
        if needs[p] <= free:
            return PrecisionChoice(p, f"{p} needs {needs[p] / GB:.1f} GB of {free / GB:.1f} GB available "
                                      "(tight: close other programs if writing slows)")
    smallest = order[-1]
    raise BackendError(f"not enough memory for this model: {smallest}, its smallest form on {backend}, needs "
                       f"{needs[smallest] / GB:.1f} GB and {free / GB:.1f} GB is available")


def check_fits(backend: str, precision: str, config, *, available: Callable[[], int] | None = None) -> None:
    """A precision asked for by name must fit at all: else one line says what it needs (never an OOM kill)."""
    if backend not in AUTO_ORDER:
        return
    required, free = need(config, precision, backend), (available or available_memory)()
    if required > free:
        smaller = [p for p in AUTO_ORDER[backend] if need(config, p, backend) <= free]
        hint = f"; {smaller[0]} fits (--precision {smaller[0]}, or leave --precision out)" if smaller else ""
        raise BackendError(f"not enough memory for this model in {precision}: it needs {required / GB:.1f} GB and "
                           f"{free / GB:.1f} GB is available{hint}")
