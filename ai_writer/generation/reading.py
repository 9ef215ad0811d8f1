"""Reading text into the model: from a kept state, counted, and in segments through a prefix cache.

`Reader` is how the story and the REPL read text: from a `Prefilled` start (or the empty
beginning) to the state after the text. `PromptReading` is how the server reads a prompt: the
longest prefix it has already read comes from the `PrefixCache`, and the rest is read a segment
at a time, so the inference worker can write other requests' rows between segments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ai_writer.generation.decode import Prefilled
from ai_writer.generation.prefix_cache import PrefixCache
from ai_writer.text.templates import SHIPPED, Template


class CountingBackend:
    """A backend wrapper that counts the tokens fed to the model (reading and writing alike)."""

    def __init__(self, backend):
        self.inner = backend
        self.fed = 0

    def forward(self, token_ids, state):
        self.fed += sum(len(row) for row in token_ids)
        return self.inner.forward(token_ids, state)

    def __getattr__(self, name):
        return getattr(self.inner, name)


class Reader:
    """Feeds text into the model from a given state: the only way a document reads text.

    With a template (text/templates.py), the story is read after the template's `before`, and
    `writing_start` reads its `after` into a copy of a state, where the model then writes; the
    states a document keeps are those of the story alone."""

    def __init__(self, backend, tokenizer, template: Template = SHIPPED["plain"]):
        self.backend, self.tokenizer, self.template = backend, tokenizer, template

    def empty_state(self) -> Any:
        """The one-row state of an empty text (a template for states restored from a file)."""
        return self.backend.zero_state(1)

    def feed(self, start: Prefilled | None, text: str) -> Prefilled | None:
        """The state after reading `text` from `start` (None = the beginning, where the template's `before`
        comes first)."""
        ids = self.tokenizer.encode(text if start is not None else self.template.before + text)
        if not ids:
            return start
        return self.feed_ids(start, ids)

    def writing_start(self, story_end: Prefilled) -> Prefilled:
        """Where the model writes after a story that ends at `story_end`: the template's `after` read into a
        copy of that state (states are values: `story_end` stays the story's)."""
        return self.feed(story_end, self.template.after) if self.template.after else story_end

    def feed_ids(self, start: Prefilled | None, ids: list[int]) -> Prefilled:
        state = start.state if start is not None else self.backend.zero_state(1)
        logits, state = self.backend.forward([list(ids)], state)
        n = (start.n_tokens if start is not None else 0) + len(ids)
        return Prefilled(state=state, logits=logits[0], last_token=ids[-1], n_tokens=n)


@dataclass
class PromptReading:
    """A prompt being read: what is left of it and the state so far."""

    ids: tuple[int, ...]
    position: int  # tokens read so far (from the cache or the model)
    reused: int  # tokens found in the prefix cache
    state: Any
    logits: np.ndarray | None

    @classmethod
    def begin(cls, ids: tuple[int, ...], reader: Reader, cache: PrefixCache) -> "PromptReading":
        cached = cache.longest_prefix(ids)
        if cached is None:
            return cls(ids, 0, 0, reader.empty_state(), None)
        return cls(ids, len(cached.ids), len(cached.ids), cached.state, cached.logits)

    @property
    def done(self) -> bool:
        return self.position >= len(self.ids)

    def advance(self, reader: Reader, cache: PrefixCache, segment: int) -> None:
        """Read up to `segment` more tokens; once the whole prompt is read, the cache keeps its state."""
        if self.done:
            return
        part = self.ids[self.position : self.position + segment]
        logits, self.state = reader.backend.forward([list(part)], self.state)
        self.logits, self.position = logits[0], self.position + len(part)
        if self.done:
            cache.put(self.ids, self.state, self.logits)

    def start(self) -> Prefilled:
        return Prefilled(self.state, self.logits, self.ids[-1], len(self.ids))
