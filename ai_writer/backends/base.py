"""The backend contract shared by every engine."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np

from ai_writer.models.config import ModelConfig


class State(Protocol):
    """A batch of recurrent states. Values are never modified in place by a backend."""

    @property
    def batch_size(self) -> int: ...

    def select(self, rows: list[int]) -> "State":
        """A new state of the given rows, in that order (rows may repeat)."""

    def repeat(self, n: int) -> "State":
        """n copies of a single-row state."""

    # Optional: `concat(other) -> State`, this state's rows then the other's. The server batches
    # separate requests together only when the backend's states have it.


class Backend(Protocol):
    name: str  # e.g. "torch-cpu", "cuda"
    precision: str  # "fp32", "fp16", "bf16", "int8"
    config: ModelConfig

    def zero_state(self, batch_size: int) -> Any:
        """The state of `batch_size` empty sequences."""

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """Feed a batch of equally long token rows (B, T); return the last position's logits (B, V)
        as float32 numpy, and the new state. The given state stays valid and unchanged."""
