"""Who writes the REPL's paragraphs: the local model (`LocalWriter`) or a remote server (`RemoteWriter`).

The session (session.py) asks its writer where the model writes in the story (`place`: at the
end, or where span `index` begins, for a rewrite), then streams one paragraph or N alternatives
from there (`stream`); it never asks which kind of writer it has.

- `LocalWriter`: a model in this process. The document keeps its states (story/document.py); a
  place is the story's own state there (kept in the model span written there, so a rewrite reads
  nothing again) and the state with the steering block read in between (story/steering.py).
- `RemoteWriter`: an OpenAI-compatible server (generation/remote.RemoteEngine), which keeps no
  state of ours: a place is the prompt to send, the story up to there, with the steering block as
  an ai-writer server's own fields or assembled into the prompt for any other
  (story/steering.remote_request); every write, rewrite and /alt sends it again. The document
  reads nothing and session files hold no state (a saved state is a local model's: its
  fingerprint).

    writer = LocalWriter(loaded)  # or RemoteWriter(RemoteEngine("http://big-machine:8266"))
    place = writer.place(document, steering)
    for chunk in writer.stream(place, settings=settings, guards=guards, max_chars=200, seed=7):
        print(chunk.text, end="")
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from ai_writer.errors import InputTextError
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.generator import Chunk, Generator, RunResult
from ai_writer.generation.guards import MAX_PHRASE_CHARS, Guards
from ai_writer.generation.reading import CountingBackend, Reader
from ai_writer.generation.remote import RemoteEngine
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.document import Document
from ai_writer.story.steering import DEFAULT_TAIL, SteeredReader, Steering, remote_request
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.templates import SHIPPED, Template


@dataclass(frozen=True)
class LocalPlace:
    story: Prefilled  # the story's own state there: kept in the model span written there
    start: Prefilled  # where the model writes: the steering block read in between


@dataclass(frozen=True)
class RemotePlace:
    prompt: str  # what the server reads
    fields: Mapping[str, Any]  # the steering block as an ai-writer server's own fields ({} for other servers)
    story: None = None  # a server keeps no state of ours


def _offset(document: Document, index: int | None) -> int | None:
    """Where span `index` begins (None: the end)."""
    return None if index is None else sum(len(span.text) for span in document.spans[:index])


class LocalWriter:
    """The model in this process; the document keeps its states."""

    keeps_states = True

    def __init__(self, loaded, template: Template = SHIPPED["plain"]):
        self.loaded = loaded
        self.backend = CountingBackend(loaded.backend)
        self.reader = Reader(self.backend, loaded.tokenizer, template)
        self.steered = SteeredReader(self.reader)
        self.fingerprint: str | None = model_fingerprint(loaded, template)

    def describe(self) -> str:
        return self.loaded.path.name

    def usage(self) -> str:
        return f"tokens fed to the model: {self.backend.fed}"

    def load(self, path: Path) -> Document:
        """A saved session, with its states where they were saved with this model."""
        return Document.load(path, fingerprint=self.fingerprint, zero_state=self.reader.empty_state(),
                             vocab_size=getattr(self.loaded.config, "vocab_size", None))

    def read(self, document: Document, offset: int | None = None, *, pin: bool = False) -> None:
        """Read the story up to `offset` (default: all of it), keeping the state there (`pin`: a chapter's)."""
        if offset is None:
            document.state_at_end(self.reader)
        else:
            document.state_at(offset, self.reader, pin=pin)

    def place(self, document: Document, steering: Steering, index: int | None = None) -> LocalPlace:
        """Where the model writes at the story's end, or where span `index` begins."""
        end = _offset(document, index)
        story = document.state_at_end(self.reader) if index is None else document.state_before(index, self.reader)
        if story is None:
            raise InputTextError("the story is empty; type an opening first")
        start = self.steered.start(document, steering, end)
        tail = document.text[:end][-MAX_PHRASE_CHARS:]  # a banned phrase may begin in the story
        return LocalPlace(story, dataclasses.replace(start, text_tail=tail))

    def stream(self, place: LocalPlace, *, settings: SamplerSettings, guards: Guards, max_chars: int, seed: int,
               runs: int = 1, stop: Sequence[str] = (), results: list[RunResult] | None = None) -> Iterator[Chunk]:
        import numpy as np

        generator = Generator(self.backend, self.loaded.tokenizer, settings, guards)
        return generator.stream(place.start, max_chars=max_chars, runs=runs, rng=np.random.default_rng(seed),
                                stop=stop, results=results)


class RemoteWriter:
    """A server of the OpenAI completions API; nothing is read here and no state is kept."""

    keeps_states = False
    fingerprint: str | None = None  # session files written with it hold no state

    def __init__(self, engine: RemoteEngine, template: Template = SHIPPED["plain"], tail: int = DEFAULT_TAIL):
        self.engine, self.template, self.tail = engine, template, tail
        self.model: str | None = engine.model  # the server's model, once known (the toolbar never asks the server)
        self.requests = self.sent = 0

    def connect(self) -> str:
        """Ask the server what it is (GET /v1/models, once): a status line. A BackendError if it cannot be asked."""
        described = self.engine.describe()
        self._know_model()
        return described

    def _know_model(self) -> None:
        self.model = self.engine.model or next(iter(self.engine.models()), None)  # listed already: no request

    def describe(self) -> str:
        where = self.engine.url.split("://", 1)[-1].removesuffix("/v1")
        return f"remote {where}" + (f" {self.model}" if self.model else "")

    def usage(self) -> str:
        return (f"sent to the remote engine: {self.sent} characters in {self.requests} "
                f"request{'s' if self.requests != 1 else ''}")

    def load(self, path: Path) -> Document:
        """A saved session; its states, if any, are a local model's and are not read."""
        return Document.load(path)

    def read(self, document: Document, offset: int | None = None, *, pin: bool = False) -> None:
        """Nothing to read: the server reads the story with each request."""

    def place(self, document: Document, steering: Steering, index: int | None = None) -> RemotePlace:
        """The request that writes at the story's end, or where span `index` begins."""
        end = _offset(document, index)
        story = document.text[:end]
        if not story:
            raise InputTextError("the story is empty; type an opening first")
        prompt, fields = remote_request(self.engine, story, steering, self.template, self.tail)
        self._know_model()
        return RemotePlace(prompt, fields)

    def stream(self, place: RemotePlace, *, settings: SamplerSettings, guards: Guards, max_chars: int, seed: int,
               runs: int = 1, stop: Sequence[str] = (), results: list[RunResult] | None = None) -> Iterator[Chunk]:
        self.requests += 1
        self.sent += len(place.prompt)
        return self.engine.stream(place.prompt, max_chars=max_chars, runs=runs, settings=settings, seed=seed,
                                  stop=stop, bans=guards.bans, results=results,
                                  extra={**place.fields, "loop_guard": guards.loop_guard})


def model_fingerprint(loaded, template: Template = SHIPPED["plain"]) -> str:
    """Identifies a model, its backend and what the story is read with (a state file, a template), so a saved
    state is restored only where it was made."""
    backend = loaded.backend
    tokenizer = loaded.tokenizer
    vocabulary = tokenizer.to_json() if isinstance(tokenizer, CharTokenizer) else tokenizer.describe()
    parts = [loaded.path.name, loaded.config.to_json(), vocabulary, backend.name, backend.precision]
    if getattr(loaded, "state_file", None) is not None:  # a tuned start: its own states
        parts.append(f"state {loaded.state_file.name} {loaded.state_file.stat().st_size}")
    if not template.is_plain:
        parts.append(f"template {template.before}\0{template.after}")
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]
