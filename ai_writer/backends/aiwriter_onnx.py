"""The AI-Writer 2022-02-15 model as released for AMD/Intel cards: an `.onnx` run by ONNX Runtime.

The file takes int64 ids [1, ctx_len] and returns logits [1, ctx_len, vocab]. As the original
DirectML mode did, each step right-pads the window (the last ctx_len ids) with id 0 and reads the
row of the last real position; the model is causal, so the padding does not change it. The
graph keeps nothing between runs, so every character re-reads the whole window. Imports
onnxruntime and numpy only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ai_writer.backends.base import check_tokens
from ai_writer.backends.rwkv_onnx import open_session
from ai_writer.errors import ModelFileError

PRECISION_OF = {"tensor(float)": "fp32", "tensor(float16)": "fp16"}


@dataclass(frozen=True)
class OnnxWindowConfig:
    vocab_size: int
    ctx_len: int
    generation: ClassVar[str] = "2022-02-15-onnx"

    def describe(self) -> str:
        return (f"AI-Writer 2022-02-15 window model (ONNX), vocab {self.vocab_size}, ctx_len {self.ctx_len} "
                f"(re-reads the last {self.ctx_len} characters, padded, for each new one)")

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, **dataclasses.asdict(self)})


@dataclass(frozen=True)
class WindowIds:
    """The last <= ctx_len ids of each row: all a window model needs to go on."""

    ids: np.ndarray  # (B, n) int64

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def select(self, rows: list[int]) -> "WindowIds":
        return WindowIds(self.ids[list(rows)])

    def repeat(self, n: int) -> "WindowIds":
        return self.select([0] * n)

    def joinable(self, other: object) -> bool:
        """When both windows hold as many ids."""
        return isinstance(other, WindowIds) and self.ids.shape[1] == other.ids.shape[1]

    def concat(self, other: "WindowIds") -> "WindowIds":
        """One batch: this state's rows, then the other's."""
        if not self.joinable(other):
            raise ValueError("these window states cannot share a batch (windows of different lengths)")
        return WindowIds(np.concatenate([self.ids, other.ids]))

    def clone(self) -> "WindowIds":
        return WindowIds(self.ids.copy())


class WindowOnnxBackend:
    def __init__(self, path: str | os.PathLike, *, backend: str, providers: Sequence[str], threads: int | None = None):
        self.path = Path(path)
        self.name = backend  # "cpu" or "dml"
        self.session = open_session(self.path, backend=backend, providers=providers, threads=threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        form = "int64 ids [1, ctx_len] in, logits [1, ctx_len, vocab] out"
        if len(inputs) != 1 or len(outputs) != 1 or inputs[0].type != "tensor(int64)" \
                or len(inputs[0].shape) != 2 or len(outputs[0].shape) != 3:
            raise ModelFileError(f"{self.path}: neither an ai-writer export nor an AI-Writer 2022-02-15 model ({form})")
        ctx_len = inputs[0].shape[1]
        if not isinstance(ctx_len, int) or ctx_len < 1:
            raise ModelFileError(f"{self.path}: the input length must be fixed (ctx_len) for this model ({form})")
        if outputs[0].type not in PRECISION_OF:
            raise ModelFileError(f"{self.path}: logits of type {outputs[0].type} are not supported")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.fixed_batch = inputs[0].shape[0] == 1
        self.precision = PRECISION_OF[outputs[0].type]
        vocab = outputs[0].shape[2]
        if not isinstance(vocab, int):  # a dynamic vocabulary axis: one run tells it
            vocab = self._run(np.zeros((1, ctx_len), dtype=np.int64)).shape[2]
        self.config = OnnxWindowConfig(vocab_size=int(vocab), ctx_len=ctx_len)

    def providers(self) -> list[str]:
        return self.session.get_providers()

    def zero_state(self, batch_size: int) -> WindowIds:
        return WindowIds(np.zeros((batch_size, 0), dtype=np.int64))

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: WindowIds):
        tokens = check_tokens(token_ids, state.batch_size, self.config.vocab_size)
        L = self.config.ctx_len
        window = np.concatenate([state.ids, tokens], axis=1)[:, -L:]
        padded = np.zeros((window.shape[0], L), dtype=np.int64)
        padded[:, : window.shape[1]] = window
        last = window.shape[1] - 1
        if self.fixed_batch:
            logits = np.concatenate([self._run(padded[b : b + 1])[:, last] for b in range(padded.shape[0])])
        else:
            logits = self._run(padded)[:, last]
        return logits.astype(np.float32), WindowIds(window)

    def _run(self, ids: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: ids})[0]
