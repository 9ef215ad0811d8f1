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
from ai_writer.models.onnx_file import ONNX_FORMAT
from ai_writer.errors import ModelFileError
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer

STATE_INPUTS = ("att_shift", "wkv", "ffn_shift")
STATE_OUTPUTS = ("new_att_shift", "new_wkv", "new_ffn_shift")


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


def open_session(path: Path, *, backend: str, providers: Sequence[str], threads: int | None):
    """An ONNX Runtime session with the options chosen for ai-writer; a bad file is one line."""
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
    # MatMulNBits repacks its quantized weights when the session opens: on all threads, that is most of a
    # big model's start (benchmarks/RESULTS.md, big models: start).
    options.add_session_config_entry("session.prepack.enable_parallel", "1")
    if backend == "dml":  # DirectML needs these two (onnxruntime-directml's documented requirements)
        options.enable_mem_pattern = False
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own classes for a bad file: one line, never a traceback
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(f"{path}: cannot load the ONNX model: {first[:300]}") from None


class OnnxBackend:
    def __init__(self, path: str | os.PathLike, *, backend: str, providers: Sequence[str], threads: int | None = None):
        self.path = Path(path)
        self.name = backend  # "cpu" or "dml"
        self.session = open_session(self.path, backend=backend, providers=providers, threads=threads)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("ai_writer_format") != ONNX_FORMAT:
            raise ModelFileError(f"{self.path}: not an ai-writer ONNX export (export one with `ai-writer export onnx`)")
        self.config = ModelConfig.from_json(self.metadata.get("config", ""), str(self.path))
        self.precision = self.metadata.get("precision", "fp32")
        self.initial_wkv: np.ndarray | None = None
        self._check_io()

    def _check_io(self) -> None:
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        missing = ({"tokens", *STATE_INPUTS} - inputs) | ({"logits", *STATE_OUTPUTS} - outputs)
        if missing:
            raise ModelFileError(f"{self.path}: the ONNX graph lacks {', '.join(sorted(missing))}")

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
            feeds = {"tokens": tokens[:, start : start + PREFILL_SEGMENT], "att_shift": state.att_shift,
                     "wkv": state.wkv, "ffn_shift": state.ffn_shift}
            logits, *new = self.session.run(["logits", *STATE_OUTPUTS], feeds)
            state = OnnxState(*new)
        return logits, state

