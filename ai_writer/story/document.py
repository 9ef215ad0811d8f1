"""The story being written: spans of text with their provenance, undo/redo, and saved sessions.

UI-free and backend-agnostic: the REPL writes through it (the web page keeps its own text in the
browser). A document is an ordered tuple of immutable `Span`s (the writer's text or the model's);
every model span keeps, in memory, the generator state at its start, so a rewrite samples again
from there without re-reading the story. The document also keeps the state at the end of the text it has read, so appending text
feeds only the new characters, and an edit re-reads from the nearest snapshot before it.

Undo/redo is a stack of span tuples: spans are immutable and states are shared references, so
a snapshot costs one tuple.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.files import write_atomic
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.reading import Reader
from ai_writer.generation.sampler import SamplerSettings

SESSION_FORMAT = "ai-writer-session"
SESSION_VERSION = 1
WRITER, MODEL = "writer", "model"


class SessionFileError(AiWriterError):
    """A session file cannot be read, parsed or written."""


@dataclass(frozen=True)
class Span:
    author: str  # WRITER or MODEL
    text: str
    seed: int | None = None  # model spans: the seed it was sampled with
    settings: dict | None = field(default=None, compare=False)  # model spans: SamplerSettings.as_dict()
    start: Prefilled | None = field(default=None, compare=False, repr=False)  # model spans: state at its start

    def to_json(self) -> dict:
        record: dict[str, Any] = {"author": self.author, "text": self.text}
        if self.author == MODEL:
            record.update(seed=self.seed, settings=self.settings)
        return record


@dataclass(frozen=True)
class Paragraph:
    index: int  # 1-based, as the writer counts them
    begin: int  # character offsets in the story text
    end: int  # the '\n' that ends it is not included
    text: str


class Document:
    def __init__(self, spans: Sequence[Span] = ()):
        self.spans: tuple[Span, ...] = tuple(spans)
        self._undo: list[tuple[Span, ...]] = []
        self._redo: list[tuple[Span, ...]] = []
        self._read: tuple[tuple[Span, ...], Prefilled | None] = ((), None)  # (spans read, state after them)
        self.saved_settings: dict | None = None  # from a session file: the settings and length it was saved with
        self.saved_length: int | None = None

    # ----- views -----
    @property
    def text(self) -> str:
        return "".join(span.text for span in self.spans)

    def __len__(self) -> int:
        return sum(len(span.text) for span in self.spans)

    def paragraphs(self) -> list[Paragraph]:
        """The non-empty lines of the story, numbered from 1."""
        result, offset = [], 0
        for line in self.text.split("\n"):
            if line:
                result.append(Paragraph(len(result) + 1, offset, offset + len(line), line))
            offset += len(line) + 1
        return result

    def last_model_index(self) -> int | None:
        return next((i for i in range(len(self.spans) - 1, -1, -1) if self.spans[i].author == MODEL), None)

    # ----- the model state -----
    def state_at_end(self, reader: Reader) -> Prefilled | None:
        """The state after the whole story, reading only what was not read yet."""
        return self.state_before(len(self.spans), reader)

    def state_before(self, index: int, reader: Reader) -> Prefilled | None:
        """The state after spans[:index]: a model span's own snapshot, else read on from the state already
        read (when it is a prefix) or from the nearest snapshot before `index`."""
        if index < len(self.spans) and self.spans[index].start is not None:
            return self.spans[index].start
        target = self.spans[:index]
        read, state = self._read
        if not (len(read) <= index and all(a is b for a, b in zip(read, target))):
            read, state = (), None
            for i in range(index - 1, -1, -1):
                if target[i].start is not None:
                    read, state = target[:i], target[i].start
                    break
        state = reader.feed(state, "".join(span.text for span in target[len(read):]))
        if index == len(self.spans):
            self._read = (self.spans, state)
        return state

    def set_end_state(self, state: Prefilled | None) -> None:
        """Tell the document the state after its current text (e.g. restored from a saved session)."""
        self._read = (self.spans, state)

    def known_end_state(self) -> Prefilled | None:
        read, state = self._read
        return state if read is self.spans else None

    # ----- changes (each one is undoable) -----
    def _change(self, spans: Sequence[Span]) -> None:
        self._undo.append(self.spans)
        self._redo.clear()
        self.spans = tuple(spans)

    def append(self, span: Span) -> None:
        if span.text:
            self._change(self.spans + (span,))

    def replace_span(self, index: int, span: Span) -> None:
        """Put `span` in place of span `index`; later spans lose their (now stale) snapshots."""
        self._change(self.spans[:index] + (span,) + _without_states(self.spans[index + 1:]))

    def edit_paragraph(self, number: int, new_text: str) -> None:
        """Replace paragraph `number` (1-based) by the writer's `new_text`."""
        paragraphs = self.paragraphs()
        if not 1 <= number <= len(paragraphs):
            raise InputTextError(f"there is no paragraph {number}; the story has {len(paragraphs)}")
        if "\n" in new_text:
            raise InputTextError("a paragraph is one line; it cannot contain a line break")
        p = paragraphs[number - 1]
        before, after, offset = [], [], 0
        for span in self.spans:
            end = offset + len(span.text)
            if end <= p.begin:
                before.append(span)
            elif offset >= p.end:
                after.append(span)
            else:
                if offset < p.begin:  # the part before the paragraph keeps the span's snapshot
                    before.append(dataclasses.replace(span, text=span.text[: p.begin - offset]))
                if end > p.end:
                    after.append(dataclasses.replace(span, text=span.text[p.end - offset:], start=None))
            offset = end
        edited = (Span(WRITER, new_text),) if new_text else ()
        self._change(tuple(before) + edited + _without_states(after))

    def undo(self) -> bool:
        if not self._undo:
            return False
        self._redo.append(self.spans)
        self.spans = self._undo.pop()
        return True

    def redo(self) -> bool:
        if not self._redo:
            return False
        self._undo.append(self.spans)
        self.spans = self._redo.pop()
        return True

    # ----- sessions -----
    def to_json(self, *, settings: SamplerSettings | None = None, length: int | None = None,
                fingerprint: str | None = None, with_state: bool = False) -> dict:
        record: dict[str, Any] = {"format": SESSION_FORMAT, "version": SESSION_VERSION,
                                  "spans": [span.to_json() for span in self.spans]}
        if settings is not None:
            record["settings"] = settings.as_dict()
        if length is not None:
            record["len"] = length
        state = self.known_end_state() if with_state else None
        if state is not None and fingerprint and _encodable(state.state):
            record["state"] = {"model": fingerprint, "n_chars": len(self), "last_token": state.last_token,
                               "n_tokens": state.n_tokens, "logits": _encode(state.logits),
                               "arrays": {f.name: _encode(getattr(state.state, f.name))
                                          for f in dataclasses.fields(state.state)}}
        return record

    def save(self, path: str | Path, **options) -> None:
        """Write the session atomically: a temporary file beside `path`, then a rename."""
        atomic_write(Path(path), json.dumps(self.to_json(**options), ensure_ascii=False))

    @classmethod
    def from_json(cls, record: dict, source: str, *, fingerprint: str | None = None,
                  zero_state: Any = None) -> "Document":
        """A document from a saved session; the saved model state is used only if `fingerprint` matches."""
        if not isinstance(record, dict) or record.get("format") != SESSION_FORMAT:
            raise SessionFileError(f"{source}: not an ai-writer session file")
        if record.get("version") != SESSION_VERSION:
            raise SessionFileError(f"{source}: session version {record.get('version')!r} is not supported")
        try:
            spans = [Span(s["author"], s["text"], s.get("seed"), s.get("settings")) for s in record["spans"]]
        except (KeyError, TypeError) as exc:
            raise SessionFileError(f"{source}: a span is malformed ({exc})") from None
        if any(s.author not in (WRITER, MODEL) or not isinstance(s.text, str) for s in spans):
            raise SessionFileError(f"{source}: a span has an unknown author or no text")
        document = cls(spans)
        document.saved_settings, document.saved_length = record.get("settings"), record.get("len")
        saved = record.get("state")
        if saved and fingerprint and saved.get("model") == fingerprint and saved.get("n_chars") == len(document) \
                and zero_state is not None:
            arrays = {name: _decode(value) for name, value in saved["arrays"].items()}
            state = type(zero_state)(**arrays)
            document.set_end_state(Prefilled(state, _decode(saved["logits"]), saved["last_token"], saved["n_tokens"]))
        return document

    @classmethod
    def load(cls, path: str | Path, **options) -> "Document":
        return cls.from_json(read_session(path), str(path), **options)


def read_session(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SessionFileError(f"{path}: cannot read the session ({exc})") from None


def is_session_file(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and SESSION_FORMAT.encode() in head


def atomic_write(path: Path, text: str) -> None:
    """Write `text` to `path` so that a crash leaves either the old file or the new one (files.write_atomic)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, text)
    except OSError as exc:
        raise SessionFileError(f"{path}: cannot write there ({exc.strerror or exc})") from None


def _without_states(spans: Sequence[Span]) -> tuple[Span, ...]:
    return tuple(dataclasses.replace(s, start=None) if s.start is not None else s for s in spans)


def _encodable(state: Any) -> bool:
    return dataclasses.is_dataclass(state) and all(
        isinstance(getattr(state, f.name), np.ndarray) for f in dataclasses.fields(state))


def _encode(array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    return {"dtype": str(array.dtype), "shape": list(array.shape), "data": base64.b64encode(array.tobytes()).decode()}


def _decode(record: dict) -> np.ndarray:
    data = base64.b64decode(record["data"])
    return np.frombuffer(data, dtype=np.dtype(record["dtype"])).reshape(record["shape"]).copy()
