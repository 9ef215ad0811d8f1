"""The one decode loop: a batch of continuations ("rows") advanced together, one token per row a step.

`continue`, the REPL (through `Generator.stream`) and the server's inference worker all write
through `DecodeBatch`, so how rows are sampled, stopped and shown is decided here only:

- every step samples one token for each row from the batch's logits (`sample_rows`: each row
  with its own settings, random generator and repetition penalties), then feeds all the new
  tokens to the backend in one `forward`;
- each row decodes its tokens through its tokenizer's stream decoder, so the text never holds a
  broken character, and is settled (`settle_row`): it ends at its length in characters or just
  before a stop string, and only text that cannot begin a stop string is shown;
- rows that end leave the batch (`select`), new rows join it between steps (`concat`), and a
  caller may drop rows (a client that went away).

A row remembers the tokens it drew; with `keep_final_states` a finished row also keeps the
one-row state and logits before its last token, for a prefix cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ai_writer.generation.sampler import PenaltyTracker, SamplerSettings, sample_rows


@dataclass
class Row:
    """One continuation being written."""

    tag: Hashable  # the caller's name for it: a run number, or (job, choice index)
    settings: SamplerSettings
    rng: np.random.Generator  # rows may share one: draws then follow batch order
    max_chars: int
    stop: tuple[str, ...]
    decoder: Any  # the tokenizer's stream decoder: bytes of an unfinished character wait in it
    penalties: PenaltyTracker | None
    last_token: int
    tokens: list[int] = field(default_factory=list)  # the tokens drawn so far
    text: str = ""  # everything produced so far (cut at a stop string or the length once done)
    sent: int = 0  # characters of `text` already shown
    done: bool = False
    finish_reason: str = "length"  # "length" or "stop"
    final: tuple[Any, np.ndarray] | None = None  # (state, logits) before the last token, if kept
    matched: list[int] | None = None  # per stop string: how many of its first characters `text` ends with
    scanned: int = 0  # characters of `text` already matched against the stop strings


@dataclass(frozen=True)
class Prefilled:
    """A text read into the model: the one-row state after it and the logits of what comes next."""

    state: Any  # one-row backend state
    logits: np.ndarray  # (V,)
    last_token: int
    n_tokens: int


class DecodeBatch:
    def __init__(self, backend: Any, tokenizer: Any, *, keep_final_states: bool = False):
        self.backend, self.tokenizer = backend, tokenizer
        self.keep_final_states = keep_final_states
        self.rows: list[Row] = []
        self.state: Any = None
        self.logits: np.ndarray | None = None
        self.steps = 0  # decode steps taken

    def __len__(self) -> int:
        return len(self.rows)

    def can_join(self, start: Prefilled) -> bool:
        """New rows can join between steps when the backend's states can be put together."""
        return self.state is None or self.state.joinable(start.state)

    def add(self, start: Prefilled, count: int, *, settings: SamplerSettings, rng: np.random.Generator,
            max_chars: int, stop: Sequence[str] = (), tags: Sequence[Hashable] | None = None) -> list[Row]:
        """`count` new rows from `start`, sharing `rng`; they are written from the next step on."""
        stop = tuple(s for s in stop if s)
        penalize = settings.presence_penalty > 0 or settings.frequency_penalty > 0
        tags = list(range(count)) if tags is None else list(tags)
        rows = [Row(tag, settings, rng, max_chars, stop, self.tokenizer.stream_decoder(),
                    PenaltyTracker(self.tokenizer.vocab_size, settings) if penalize else None, start.last_token)
                for tag in tags]
        state = start.state.repeat(count) if count > 1 else start.state
        logits = np.repeat(start.logits[None, :], count, axis=0)
        if self.state is None:
            self.state, self.logits = state, logits
        else:
            self.state, self.logits = self.state.concat(state), np.concatenate([self.logits, logits])
        self.rows.extend(rows)
        return rows

    def step(self) -> list[tuple[Row, str]]:
        """Draw one token for every row; return (row, newly shown text) for each row in batch order
        (the text may be empty). Rows that ended (row.done) have left the batch afterwards."""
        rows = self.rows
        line_ends = self.tokenizer.line_end_ids
        tokens = sample_rows(self.logits, after_newline=[row.last_token in line_ends for row in rows],
                             settings=[row.settings for row in rows], rngs=[row.rng for row in rows],
                             banned_ids=list(self.tokenizer.banned_ids), penalties=[row.penalties for row in rows])
        shown = []
        for position, (row, token) in enumerate(zip(rows, tokens)):
            if row.penalties is not None:
                row.penalties.update(token)
            row.tokens.append(token)
            row.last_token = token
            # A row ends at a length or before a stop string, both before any bytes still waiting in
            # the decoder, so those are never shown and need no flush.
            row.text += row.decoder.decode(token)
            shown.append((row, settle_row(row)))
            if row.done and self.keep_final_states and len(row.tokens) > 1:
                row.final = (self.state.select([position]), self.logits[position])
        self.steps += 1
        keep = [p for p, row in enumerate(rows) if not row.done]
        self._keep(keep)
        if self.rows:
            self.logits, self.state = self.backend.forward([[tokens[p]] for p in keep], self.state)
        return shown

    def drop(self, unwanted: Callable[[Row], bool]) -> None:
        """Remove the rows `unwanted` says so of (their continuations are abandoned)."""
        self._keep([p for p, row in enumerate(self.rows) if not unwanted(row)])

    def clear(self) -> None:
        self.rows, self.state, self.logits = [], None, None

    def _keep(self, positions: list[int]) -> None:
        if len(positions) == len(self.rows):
            return
        self.rows = [self.rows[p] for p in positions]
        if self.rows:
            self.state, self.logits = self.state.select(positions), self.logits[positions]
        else:
            self.state, self.logits = None, None


def settle_row(row: Row) -> str:
    """Settle a row after new text arrived: end it on a stop string or at its length, and return the
    text that is now safe to show (none of it may begin a stop string).

    The text is read as if it came one character at a time: the row ends at the first character
    (within its length) that completes a stop string, cut just before that stop string (the one
    that starts first, when several end there). Stop strings are matched incrementally, so each
    new character costs at most the longest stop string's length (amortised: a few steps).
    """
    if row.stop:
        _match_stops(row)
    if not row.done and len(row.text) >= row.max_chars:
        row.text, row.done = row.text[: row.max_chars], True
    # held back: the longest end of the text that begins a stop string
    safe = len(row.text) if row.done else len(row.text) - max(row.matched or (0,))
    chunk = row.text[row.sent : safe]
    row.sent = max(row.sent, safe)
    return chunk


def _match_stops(row: Row) -> None:
    """Feed the characters not yet matched (up to the row's length) to each stop string's matcher
    (Knuth-Morris-Pratt); end the row on the first one that completes a stop string."""
    tables = _failure_tables(row.stop)
    matched = row.matched if row.matched is not None else [0] * len(row.stop)
    row.matched = matched
    end = min(len(row.text), row.max_chars)
    for position in range(row.scanned, end):
        char, cut = row.text[position], None
        for i, (stop, fail) in enumerate(zip(row.stop, tables)):
            k = matched[i]
            while k and stop[k] != char:
                k = fail[k - 1]
            if stop[k] == char:
                k += 1
            if k == len(stop):
                start = position + 1 - k
                cut = start if cut is None else min(cut, start)
            matched[i] = k
        if cut is not None:
            row.text, row.done, row.finish_reason = row.text[:cut], True, "stop"
            row.scanned = cut
            return
    row.scanned = end


@functools.lru_cache(maxsize=64)
def _failure_tables(stops: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
    """For each stop string s: fail[i] = the length of the longest proper prefix of s[:i + 1] that is
    also its suffix, where matching falls back to after a mismatch."""
    tables = []
    for stop in stops:
        fail, k = [0] * len(stop), 0
        for i in range(1, len(stop)):
            while k and stop[i] != stop[k]:
                k = fail[k - 1]
            if stop[i] == stop[k]:
                k += 1
            fail[i] = k
        tables.append(tuple(fail))
    return tuple(tables)
