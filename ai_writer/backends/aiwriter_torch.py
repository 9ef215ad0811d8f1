"""The original AI-Writer models on torch (CPU or NVIDIA), behind the engine contract.

Generation B (`_new_`) is an RNN: its state is the recurrent state. Generation A (2022-02-15)
is a window model: its "state" is the window itself, the last ctx_len ids of each row, plus
while the window has not slid yet the cache of the positions already read (aiwriter_a.py), so
that a new character costs one position. Once the text is longer than the window, every new
character re-reads the whole window, as the original did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ai_writer.models.aiwriter.window import AConfig, AIWriterA, WindowCache
from ai_writer.models.aiwriter.rnn import AIWriterB, BConfig, BState


def _tokens(token_ids, batch_size: int, vocab_size: int) -> np.ndarray:
    tokens = np.asarray(token_ids, dtype=np.int64)
    if tokens.ndim != 2 or tokens.shape[1] == 0 or tokens.shape[0] != batch_size:
        raise ValueError(f"token_ids must be (batch={batch_size}, T>0), got {tuple(tokens.shape)}")
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"token ids must be in 0..{vocab_size - 1}")
    return tokens


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
        tokens = _tokens(token_ids, state.batch_size, self.config.vocab_size)
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
        tokens = _tokens(token_ids, state.batch_size, self.config.vocab_size)
        with torch.inference_mode():
            logits, state = self.model.forward(torch.as_tensor(tokens, device=self.device), state)
        return logits.float().cpu().numpy(), state
