"""Streaming generation on top of the backend contract and the sampler.

`Generator.prefill` reads a text once into a state; `Generator.stream` then writes one or
more continuations from that state as a batch, yielding text chunks as they are produced.
The state at the start is a value: writing again from it (a rewrite) never re-reads the text.
A token may be several characters or part of one (the world tokenizer's bytes): each row
decodes through its tokenizer's stream decoder, so a chunk never holds a broken character,
and lengths are counted in characters of text. `guards` (banned phrases, the loop guard) are
kept by rewinding (decode.py): what they forbid is never written, nor shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from ai_writer.backends import Backend
from ai_writer.errors import InputTextError, SettingsError
from ai_writer.generation.decode import DecodeBatch, Prefilled
from ai_writer.generation.guards import MAX_PHRASE_CHARS, Guards
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.world_tokenizer import WorldTokenizer


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
    rewinds: int = 0  # times the run was rewound: for banned phrases and loops
    loop_rewinds: int = 0  # of them, for a loop


@dataclass
class Generator:
    backend: Backend
    tokenizer: CharTokenizer | WorldTokenizer
    settings: SamplerSettings = field(default_factory=SamplerSettings)
    guards: Guards = Guards()  # what the continuations must never write (the loop guard is on)

    def prefill(self, text: str) -> Prefilled:
        ids = self.tokenizer.encode(text)
        if not ids:
            raise InputTextError("the opening is empty")
        logits, state = self.backend.forward([ids], self.backend.zero_state(1))
        return Prefilled(state=state, logits=logits[0], last_token=ids[-1], n_tokens=len(ids),
                         text_tail=text[-MAX_PHRASE_CHARS:])

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

        Each continuation ends after `max_chars` characters or just before a stop string. A banned
        phrase may begin in the text `start` read (its `text_tail`).
        If `results` is given, one RunResult per run is appended to it as the runs end.
        """
        if max_chars < 1:
            raise SettingsError(f"the length must be at least 1 character, got {max_chars}")
        if runs < 1:
            raise SettingsError(f"runs must be at least 1, got {runs}")
        batch = DecodeBatch(self.backend, self.tokenizer)
        batch.add(start, runs, settings=self.settings, rng=rng,
                  max_chars=max_chars, stop=stop, guards=self.guards, context=start.text_tail)
        while batch:
            for row, chunk in batch.step():
                if row.done and results is not None:
                    results.append(RunResult(row.tag, row.text, row.finish_reason, len(row.tokens), row.rewinds,
                                             row.loop_rewinds))
                if chunk:
                    yield Chunk(row.tag, chunk)
