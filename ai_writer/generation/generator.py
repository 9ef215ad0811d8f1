"""Streaming generation on top of the backend contract and the sampler.

`Generator.prefill` reads a text once into a state; `Generator.stream` then writes one or
more continuations from that state as a batch, yielding text chunks as they are produced.
The state at the start is a value: writing again from it (a rewrite) never re-reads the text.
A token may be several characters or part of one (the world tokenizer's bytes): each row
decodes through its tokenizer's stream decoder, so a chunk never holds a broken character,
and lengths are counted in characters of text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ai_writer.backends import Backend
from ai_writer.errors import InputTextError, SettingsError
from ai_writer.generation.sampler import PenaltyTracker, SamplerSettings, sample_rows
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.world_tokenizer import WorldTokenizer


@dataclass(frozen=True)
class Prefilled:
    """A text read into the model: the state after it and the logits of what comes next."""

    state: Any  # one-row backend state
    logits: np.ndarray  # (V,)
    last_token: int
    n_tokens: int


@dataclass(frozen=True)
class Chunk:
    run: int  # which continuation (0 .. runs-1)
    text: str


@dataclass
class RunResult:
    run: int
    text: str = ""
    finish_reason: str = "length"  # "length" or "stop"
    tokens: int = 0


@dataclass
class _Row:
    """One continuation being written."""

    run: int
    penalties: PenaltyTracker | None
    last_token: int
    decoder: Any  # the tokenizer's stream decoder: bytes of an unfinished character wait in it
    text: str = ""  # everything produced so far (before any stop string)
    sent: int = 0  # characters of `text` already yielded
    tokens: int = 0
    done: bool = False
    finish_reason: str = "length"


@dataclass
class Generator:
    backend: Backend
    tokenizer: CharTokenizer | WorldTokenizer
    settings: SamplerSettings = field(default_factory=SamplerSettings)

    def prefill(self, text: str) -> Prefilled:
        ids = self.tokenizer.encode(text)
        if not ids:
            raise InputTextError("the opening is empty")
        logits, state = self.backend.forward([ids], self.backend.zero_state(1))
        return Prefilled(state=state, logits=logits[0], last_token=ids[-1], n_tokens=len(ids))

    def stream(
        self,
        start: Prefilled,
        *,
        max_chars: int,
        runs: int = 1,
        rng: np.random.Generator,
        stop: Sequence[str] = (),
        results: list[RunResult] | None = None,
    ) -> Iterator[Chunk]:
        """Yield chunks of `runs` continuations written as one batch from `start`.

        Each continuation ends after `max_chars` characters or just before a stop string.
        If `results` is given, one RunResult per run is appended to it as the runs end.
        """
        if max_chars < 1:
            raise SettingsError(f"the length must be at least 1 character, got {max_chars}")
        if runs < 1:
            raise SettingsError(f"runs must be at least 1, got {runs}")
        stop = tuple(s for s in stop if s)
        penalize = self.settings.presence_penalty > 0 or self.settings.frequency_penalty > 0
        rows = [
            _Row(run, PenaltyTracker(self.tokenizer.vocab_size, self.settings) if penalize else None, start.last_token,
                 self.tokenizer.stream_decoder())
            for run in range(runs)
        ]
        logits = np.repeat(start.logits[None, :], runs, axis=0)
        state = start.state.repeat(runs) if runs > 1 else start.state
        banned = list(self.tokenizer.banned_ids)  # may be empty
        line_ends = self.tokenizer.line_end_ids
        active = list(range(runs))  # rows still writing, in batch order

        while active:
            next_tokens = sample_rows(logits, after_newline=[rows[i].last_token in line_ends for i in active],
                                      settings=[self.settings] * len(active), rngs=[rng] * len(active),
                                      banned_ids=banned, penalties=[rows[i].penalties for i in active])
            for index, token in zip(active, next_tokens):
                row = rows[index]
                if row.penalties is not None:
                    row.penalties.update(token)
                row.last_token, row.tokens = token, row.tokens + 1
                # A run ends at a length or before a stop string, both before any bytes still waiting
                # in the decoder, so they are never shown and need no flush.
                row.text += row.decoder.decode(token)
                chunk = settle_row(row, max_chars, stop)
                if row.done and results is not None:
                    results.append(RunResult(row.run, row.text, row.finish_reason, row.tokens))
                if chunk:
                    yield Chunk(row.run, chunk)
            still = [p for p, index in enumerate(active) if not rows[index].done]
            if not still:
                break
            if len(still) < len(active):
                state = state.select(still)
                next_tokens = [next_tokens[p] for p in still]
                active = [active[p] for p in still]
            logits, state = self.backend.forward([[t] for t in next_tokens], state)


def settle_row(row: _Row, max_chars: int, stop: tuple[str, ...]) -> str:
    """Settle a row after new text arrived: end it on a stop string or at the length limit,
    and return the text that is now safe to show (none of it may begin a stop string)."""
    for s in stop:
        at = row.text.find(s, max(0, row.sent - len(s)))
        if at != -1 and at < max_chars:
            row.text, row.done, row.finish_reason = row.text[:at], True, "stop"
    if not row.done and len(row.text) >= max_chars:
        row.text, row.done = row.text[:max_chars], True
    if row.done:
        safe = len(row.text)
    else:
        held = max((n for s in stop for n in range(1, len(s)) if row.text.endswith(s[:n])), default=0)
        safe = len(row.text) - held
    chunk = row.text[row.sent : safe]
    row.sent = max(row.sent, safe)
    return chunk
