"""The ONNX Runtime backend: an exported RWKV-7, RWKV-6 or RWKV-5.2 graph (export/onnx.py) on CPU or DirectML.

It imports onnxruntime and numpy only, never torch, so the default CPU path starts fast. The
graph takes the whole recurrent state as inputs and returns the new one, so a state here is
three numpy arrays that nothing ever modifies in place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ai_writer.backends.base import PREFILL_SEGMENT, check_tokens
from ai_writer.models.config import ModelConfig
from ai_writer.models.onnx_file import ONNX_FORMAT, read_onnx_metadata, STATE_PARTS, layer_slice, state_names
from ai_writer.errors import ModelFileError
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer



@dataclass(frozen=True)
class OnnxState:
    """RWKV7State's layout as numpy arrays: att_shift (L,B,C), wkv (L,B,H,N,N), ffn_shift (L,B,C)."""

    att_shift: np.ndarray
    wkv: np.ndarray
    ffn_shift: np.ndarray

    @property
    def batch_size(self) -> int:
        return self.att_shift.shape[1]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.att_shift, self.wkv, self.ffn_shift

    def select(self, rows: list[int]) -> "OnnxState":
        index = np.asarray(rows, dtype=np.int64)
        return OnnxState(*(np.take(t, index, axis=1) for t in self.arrays()))

    def repeat(self, n: int) -> "OnnxState":
        return self.select([0] * n)

    def joinable(self, other: object) -> bool:
        """Always, for states of one model: same layers, widths and dtype."""
        return isinstance(other, OnnxState) and all(
            (a.shape[0], *a.shape[2:], a.dtype) == (b.shape[0], *b.shape[2:], b.dtype)
            for a, b in zip(self.arrays(), other.arrays()))

    def concat(self, other: "OnnxState") -> "OnnxState":
        """One batch: this state's rows, then the other's."""
        if not self.joinable(other):
            raise ValueError("these RWKV states are not of one model: they cannot share a batch")
        return OnnxState(*(np.concatenate([a, b], axis=1) for a, b in zip(self.arrays(), other.arrays())))

    def clone(self) -> "OnnxState":
        return OnnxState(*(a.copy() for a in self.arrays()))


def open_session(path: Path, *, backend: str, providers: Sequence[str], threads: int | None, prepack: bool = True):
    """An ONNX Runtime session with the options chosen for ai-writer; a bad file is one line.

    `prepack=False` keeps ONNX Runtime from copying the matrices into its packed layout when the
    session opens: they are read from the memory-mapped file as they are (see `worth_packing`).
    Packed, they are packed one matrix after another (ONNX Runtime's default): on all threads at
    once (`session.prepack.enable_parallel`) it keeps the pages of every matrix it read from the
    mapped file as well, so the peak grows by the export's size (1.5B int8: 3.0 GB against 1.85 GB,
    more than rwkv.cpp's 2.3 GB; int4 1.86 against 1.22) for a first character 0.1-0.6 s sooner
    (benchmarks/RESULTS.md, "Big models, session 8")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    # Spin-waiting threads answer fastest when the cores are free, and halve the speed when
    # another program is busy (benchmarks/RESULTS.md, thread choice). By default the threads
    # sleep when idle; threads asked for explicitly (--threads) spin, as their cores are meant
    # for this.
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads is not None else "0")
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if backend == "dml":  # DirectML needs these two (onnxruntime-directml's documented requirements)
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own classes for a bad file: one line, never a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: cannot load the ONNX model: {first[:300]}") from None


PACKED_FLOAT_LIMIT = 512 * 2**20  # bytes of float weights ONNX Runtime may copy into its packed layout
BATCH_AT_ONCE = 4  # rows of one token a big float export reads in one call (fewer: one a call)


def worth_packing(path: Path) -> bool:
    """Whether the session should let ONNX Runtime pack the export's matrices when it opens. Quantized
    weights must be packed (unpacked, MatMulNBits is many times slower). Float matrices packed decode
    ~15 % faster, but packing holds a second copy of the weights and takes seconds: for the 1.5B layout
    in fp32 it took 10-12 s and 11.2 GB against 0.3 s and 5.8 GB of mapped file unpacked, which decodes
    5-8 % slower (benchmarks/RESULTS.md, "Big models, session 6"). So only small float exports are packed."""
    if read_onnx_metadata(path).get("precision", "fp32") not in ("fp32", "fp16"):
        return True
    data = path.with_name(path.name + ".data")
    return not data.is_file() or data.stat().st_size <= PACKED_FLOAT_LIMIT


class OnnxBackend:
    def __init__(self, path: str | os.PathLike, *, backend: str, providers: Sequence[str], threads: int | None = None):
        self.path = Path(path)
        self.name = backend  # "cpu" or "dml"
        packed = worth_packing(self.path)
        self.session = open_session(self.path, backend=backend, providers=providers, threads=threads, prepack=packed)
        # unpacked float matrices pack themselves at every call of more than one row (see rows_at_a_time)
        self.repacks_batches = backend == "cpu" and not packed
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("ai_writer_format") != ONNX_FORMAT:
            raise ModelFileError(f"{self.path}: not an ai-writer ONNX export (export one with `ai-writer export onnx`)")
        self.config = ModelConfig.from_json(self.metadata.get("config", ""), str(self.path))
        self.precision = self.metadata.get("precision", "fp32")
        self.initial_wkv: np.ndarray | None = None
        L = self.config.n_layer  # (part, input name, output name, the layer's slice), once: read every step
        self._layer_io = [(k, name, new_name, layer_slice(part, i)) for k, part in enumerate(STATE_PARTS)
                          for i, (name, new_name) in enumerate(zip(state_names(part, L), state_names(part, L, "new_")))]
        self._check_io()

    def _check_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        missing = (({"tokens"} | {io[1] for io in self._layer_io}) - inputs) | (
            ({"logits"} | {io[2] for io in self._layer_io}) - outputs)
        if missing:
            shown = sorted(missing)
            raise ModelFileError(f"{self.path}: the ONNX graph lacks {', '.join(shown[:4])}"
                                 + (f" and {len(shown) - 4} more (an export of an older ai-writer?)" if len(shown) > 4 else ""))

    def tokenizer(self) -> CharTokenizer | None:
        """The vocabulary stored in the export's metadata (None when it has none)."""
        if "vocab" not in self.metadata:
            return None
        tokenizer = CharTokenizer.from_json_text(
            self.metadata["vocab"], str(self.path), unknown_char=self.metadata.get("unknown_char", UNKNOWN_CHAR),
            punctuation=self.metadata.get("punctuation"),
        )
        if tokenizer.vocab_size != self.config.vocab_size:
            raise ModelFileError(
                f"{self.path}: its vocabulary has {tokenizer.vocab_size} characters but the model has "
                f"{self.config.vocab_size} rows"
            )
        return tokenizer

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def zero_state(self, batch_size: int) -> OnnxState:
        """The state of `batch_size` empty texts: zeros, or a state file's tuned start (start_from)."""
        c = self.config
        wkv = np.zeros((c.n_layer, batch_size, c.n_head, c.head_size, c.head_size), dtype=np.float32)
        if self.initial_wkv is not None:
            wkv[:] = self.initial_wkv[:, None]
        return OnnxState(
            att_shift=np.zeros((c.n_layer, batch_size, c.n_embd), dtype=np.float32),
            wkv=wkv,
            ffn_shift=np.zeros((c.n_layer, batch_size, c.n_embd), dtype=np.float32),
        )

    def start_from(self, wkv: np.ndarray) -> None:
        """Start every text from this wkv state, (L, H, N, N) in the engine's layout (models/state_file.py)."""
        self.initial_wkv = np.asarray(wkv, dtype=np.float32)

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: OnnxState):
        tokens = check_tokens(token_ids, state.batch_size, self.config.vocab_size)
        logits = None
        for start in range(0, tokens.shape[1], PREFILL_SEGMENT):
            logits, state = self._run(np.ascontiguousarray(tokens[:, start : start + PREFILL_SEGMENT]), state)
        return logits, state

    def rows_at_a_time(self, tokens: np.ndarray) -> list[slice]:
        """The rows of `tokens` that one call of the graph reads: all of them, but for a few rows of one token
        each on a big float export. Its matrices are not packed when the session opens (worth_packing), so
        ONNX Runtime packs them at each call of more than one row: on the RWKV-7 1.5B layout in fp32 a step
        of 2 rows took 3.2x one row's, 3 rows 3.3x, 4 rows 3.5x, 8 rows 3.7x (benchmarks/batch_decode.py;
        benchmarks/RESULTS.md, "Writing several texts at once"). Fewer than BATCH_AT_ONCE rows are read one
        row a call instead: n rows cost n steps of one."""
        rows, length = tokens.shape
        if self.repacks_batches and length == 1 and 1 < rows < BATCH_AT_ONCE:
            return [slice(r, r + 1) for r in range(rows)]
        return [slice(0, rows)]

    def _run(self, tokens: np.ndarray, state: OnnxState) -> tuple[np.ndarray, OnnxState]:
        """One call of the graph (or one a row: rows_at_a_time). Each layer's slice of the stacked state arrays
        is bound as that layer's input, and each new layer state is written by ONNX Runtime straight into
        its slice of new stacked arrays: the state is never split, joined or copied around the call."""
        new = OnnxState(*(np.empty(a.shape, dtype=np.float32) for a in state.arrays()))
        logits = np.empty((tokens.shape[0], self.config.vocab_size), dtype=np.float32)
        given = [np.ascontiguousarray(a, dtype=np.float32) for a in state.arrays()]  # alive until the run ends
        made = new.arrays()
        for rows in self.rows_at_a_time(tokens):
            binding = self.session.io_binding()
            binding.bind_cpu_input("tokens", tokens[rows])
            _bind(binding.bind_output, "logits", logits[rows])
            for k, name, new_name, layer in self._layer_io:  # the batch is the axis after the layers'
                _bind(binding.bind_input, name, given[k][layer, rows])
                _bind(binding.bind_output, new_name, made[k][layer, rows])
            self.session.run_with_iobinding(binding)
        return logits, new


def _bind(bind, name: str, array: np.ndarray) -> None:
    """Bind a C-contiguous float32 array's memory (a slice of a state, the logits) to a graph input or output."""
    assert array.flags.c_contiguous, name  # a view ONNX Runtime reads or writes as one block
    bind(name, "cpu", 0, np.float32, list(array.shape), array.ctypes.data)
