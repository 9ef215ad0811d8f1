"""The backend contract shared by every engine: the State and Backend protocols, the token check."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from ai_writer.models.config import ModelConfig

PREFILL_SEGMENT = 1024  # tokens per forward during a long prefill (or evaluation): bounds memory for any length


class State(Protocol):
    """A batch of states, one row per sequence. Every method returns a new value that shares no
    mutable memory with its input; a backend never modifies a state in place either."""

    @property
    def batch_size(self) -> int: ...

    def select(self, rows: list[int]) -> "State":
        """The given rows, in that order (rows may repeat)."""

    def repeat(self, n: int) -> "State":
        """n copies of a single-row state."""

    def joinable(self, other: "State") -> bool:
        """Whether `concat(other)` can join the two into one batch. Always for the RNN states; the
        window models' states only when their windows have the same length."""

    def concat(self, other: "State") -> "State":
        """One batch: this state's rows, then the other's. ValueError unless `joinable(other)`."""

    def clone(self) -> "State":
        """An equal copy."""


class Backend(Protocol):
    name: str  # e.g. "torch-cpu", "cuda"
    precision: str  # "fp32", "fp16", "bf16", "int8"
    config: ModelConfig

    def zero_state(self, batch_size: int) -> Any:
        """The state of `batch_size` empty sequences."""

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Feed a batch of equally long token rows (B, T); return the last position's logits (B, V)
        as float32 numpy, and the new state. The given state stays valid and unchanged."""


def check_tokens(token_ids: Sequence[Sequence[int]] | np.ndarray, batch_size: int, vocab_size: int) -> np.ndarray:
    """token_ids as an int64 (batch_size, T > 0) array of ids in 0..vocab_size-1; ValueError if not."""
    tokens = np.asarray(token_ids, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.shape[0] != batch_size:
        raise ValueError(f"token_ids must be (batch={batch_size}, T>0), got {tuple(tokens.shape)}")
    if tokens.size and (tokens.min() < 0 or tokens.max() >= vocab_size):
        raise ValueError(f"token ids must be in 0..{vocab_size - 1}")
    return tokens

