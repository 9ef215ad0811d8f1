"""The original AI-Writer models on torch (CPU or NVIDIA), behind the engine contract.

Generation B (`_new_`) is an RNN: its state is the recurrent state. Generation A (2022-02-15)
is a window model: its "state" is the window itself, the last ctx_len ids of each row, plus
while the window has not slid yet the cache of the positions already read
(models/aiwriter/window.py), so that a new character costs one position. Once the text is
longer than the window, every new character re-reads the whole window, as the original did.
Two window states share a batch only when their windows have the same length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ai_writer.backends.base import check_tokens
from ai_writer.models.aiwriter.window import AConfig, AIWriterA, WindowCache
from ai_writer.models.aiwriter.rnn import AIWriterB, BConfig, BState


@dataclass(frozen=True)
class WindowState:
    """The window of a batch: the last <= ctx_len ids of each row, and the cache of its positions
    (None when empty, or once the window has slid: then every step re-reads it)."""

    ids: np.ndarray  # (B, n) int64
    cache: WindowCache | None

    @property
    def batch_size(self) -> int:
        return self.ids.shape[0]

    def select(self, rows: list[int]) -> "WindowState":
        return WindowState(self.ids[list(rows)], None if self.cache is None else self.cache.select(list(rows)))

    def repeat(self, n: int) -> "WindowState":
        return self.select([0] * n)

    def joinable(self, other: object) -> bool:
        """When both windows hold as many ids, and both have a cache (of that length) or neither has."""
        return (isinstance(other, WindowState) and self.ids.shape[1] == other.ids.shape[1]
                and _cached(self) == _cached(other))

    def concat(self, other: "WindowState") -> "WindowState":
        """One batch: this state's rows, then the other's."""
        if not self.joinable(other):
            raise ValueError("these window states cannot share a batch (windows of different lengths)")
        cache = None if self.cache is None else self.cache.concat(other.cache)
        return WindowState(np.concatenate([self.ids, other.ids]), cache)

    def clone(self) -> "WindowState":
        return self.select(list(range(self.batch_size)))


def _cached(state: WindowState) -> int | None:
    return None if state.cache is None else state.cache.length


class _TorchLegacy:
    def __init__(self, device: str):
        self.name = "cuda" if device.startswith("cuda") else "torch-cpu"
        self.precision = "fp32"
        self.device = torch.device(device)


class WindowTorchBackend(_TorchLegacy):
    """Generation A on torch."""

    def __init__(self, config: AConfig, tensors, device: str = "cpu"):
        super().__init__(device)
        self.config = config
        self.model = AIWriterA(config, tensors, device=device)

    def zero_state(self, batch_size: int) -> WindowState:
        return WindowState(np.zeros((batch_size, 0), dtype=np.int64), None)

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: WindowState):
        tokens = check_tokens(token_ids, state.batch_size, self.config.vocab_size)
        L, n = self.config.ctx_len, state.ids.shape[1]
        window = np.concatenate([state.ids, tokens], axis=1)[:, -L:]
        with torch.inference_mode():
            if n + tokens.shape[1] <= L:  # the window has not slid: read only the new positions
                logits, cache = self.model.forward(torch.as_tensor(tokens, device=self.device), state.cache)
            else:  # it slid: every position moved, read the whole window again
                logits, cache = self.model.forward(torch.as_tensor(window, device=self.device), None,
                                                   keep_cache=False)
        return logits.float().cpu().numpy(), WindowState(window, cache)


class RnnTorchBackend(_TorchLegacy):
    """Generation B on torch."""

    def __init__(self, config: BConfig, tensors, device: str = "cpu"):
        super().__init__(device)
        self.config = config
        self.model = AIWriterB(config, tensors, device=device)

    def zero_state(self, batch_size: int) -> BState:
        return self.model.zero_state(batch_size)

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: BState):
        tokens = check_tokens(token_ids, state.batch_size, self.config.vocab_size)
        with torch.inference_mode():
            logits, state = self.model.forward(torch.as_tensor(tokens, device=self.device), state)
        return logits.float().cpu().numpy(), state
