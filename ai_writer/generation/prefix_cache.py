"""Recently read texts and the model state after them, so a text is never read twice.

Keys are token-id sequences; `longest_prefix(ids)` finds the longest stored key that begins
`ids`, so a rewrite (the same text again) costs nothing and a continue on text the server
has just written reads only what is new. Entries are one-row backend states with the logits
that follow them; the least recently used go first when the byte budget is spent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CachedPrefix:
    ids: tuple[int, ...]
    state: Any  # one-row backend state after reading `ids`
    logits: np.ndarray  # (V,) what comes after `ids`
    nbytes: int


def state_nbytes(state: Any) -> int:
    """Bytes held by a backend state: the sum over its array or tensor fields."""
    total = 0
    for value in vars(state).values():
        if hasattr(value, "nbytes"):
            total += int(value.nbytes)
        elif hasattr(value, "element_size"):  # torch.Tensor
            total += value.element_size() * value.nelement()
    return total


class PrefixCache:
    def __init__(self, max_bytes: int = 256 * 2**20, max_entries: int = 256):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: OrderedDict[tuple[int, ...], CachedPrefix] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: tuple[int, ...], state: Any, logits: np.ndarray) -> None:
        if not ids:
            return
        entry = CachedPrefix(ids, state, np.array(logits, dtype=np.float32), state_nbytes(state) + logits.nbytes)
        if entry.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(ids, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._entries[ids] = entry
            self._bytes += entry.nbytes
            while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.nbytes

    def longest_prefix(self, ids: tuple[int, ...]) -> CachedPrefix | None:
        """The entry with the longest key that `ids` starts with (the whole of `ids` included)."""
        with self._lock:
            best = None
            for key, entry in self._entries.items():
                n = len(key)
                if n <= len(ids) and (best is None or n > len(best.ids)) and ids[n - 1] == key[-1] \
                        and ids[:n] == key:
                    best = entry
            if best is not None:
                self._entries.move_to_end(best.ids)
            return best
