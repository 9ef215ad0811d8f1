"""The story being written: spans of text with their provenance, undo/redo, and saved sessions.

UI-free and backend-agnostic: the REPL writes through it (the web page keeps its own text in the
browser). A document is an ordered tuple of immutable `Span`s (the writer's text or the model's);
every model span keeps, in memory, the generator state at its start, so a rewrite samples again
from there without re-reading the story. The document also keeps the state at the end of the text it has read, so appending text
feeds only the new characters, and an edit re-reads from the nearest snapshot before it.

The document also keeps states at character offsets ("marks": paragraph starts, and pinned
chapter starts, story/chapters.py); a mark holds while the text before it is unchanged.

Undo/redo is a stack of span tuples: spans are immutable and states are shared references, so
a snapshot costs one tuple.

A session file (version 2) holds the spans, the settings, the steering part (memory, note,
lorebook: story/steering.py) and the banned phrases, and, for the model it was saved with
(its fingerprint), the state at the end of the story and a few snapshots: pinned marks at
least SNAPSHOT_SPACING characters apart, and the states where a rewrite of the last model
paragraph starts. Each snapshot has its character offset and a digest of the text before it,
so reopening reads nothing and an edit re-reads from the nearest snapshot before it. The
story's text itself never holds the steering block. Version 1 files (no steering, bans or
snapshots) are read too.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.files import write_atomic
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.guards import MAX_PHRASE_CHARS as MAX_BAN_CHARS, MAX_PHRASES as MAX_BANS
from ai_writer.generation.reading import Reader
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.steering import Steering

SESSION_FORMAT = "ai-writer-session"
SESSION_VERSION = 2
READABLE_VERSIONS = (1, 2)
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


@dataclass(frozen=True)
class _Mark:
    state: Prefilled
    pinned: bool = False  # a chapter's start: kept while the text before it is unchanged


MAX_LOOSE_MARKS = 8  # unpinned marks kept: the last few asked for
SNAPSHOT_SPACING = 50_000  # characters between the pinned snapshots a session file keeps
MAX_SAVED_SNAPSHOTS = 64  # pinned snapshots in a session file at most (a longer story spaces them wider)
MAX_FILE_SNAPSHOTS = 1_000  # what a session file may hold at all


class Document:
    def __init__(self, spans: Sequence[Span] = ()):
        self.spans: tuple[Span, ...] = tuple(spans)
        self._undo: list[tuple[Span, ...]] = []
        self._redo: list[tuple[Span, ...]] = []
        self._read: tuple[tuple[Span, ...], Prefilled | None] = ((), None)  # (spans read, state after them)
        self._marks: dict[int, _Mark] = {}  # states at character offsets (paragraph and chapter starts)
        self._marks_text = ""  # the text the marks were checked against
        self._text: tuple[tuple[Span, ...], str] = ((), "")  # (spans, their text)
        self._encoded: dict[int, tuple[Prefilled, dict]] = {}  # id(state) -> (state, its JSON record)
        self.saved_settings: dict | None = None  # from a session file: the settings and length it was saved with
        self.saved_length: int | None = None
        self.saved_steering: Steering | None = None  # from a version 2 session file
        self.saved_bans: tuple[str, ...] | None = None

    def with_spans(self, spans: Sequence[Span]) -> "Document":
        """A document of `spans` that keeps this one's marks still true of its text (an autosave of a paragraph
        being written)."""
        document = Document(spans)
        document._marks, document._marks_text = dict(self._marks), self._marks_text
        document._encoded = self._encoded
        read, state = self._read
        if len(read) <= len(document.spans) and all(a is b for a, b in zip(read, document.spans)):
            document._read = (read, state)
        return document

    # ----- views -----
    @property
    def text(self) -> str:
        if self._text[0] is not self.spans:
            self._text = (self.spans, "".join(span.text for span in self.spans))
        return self._text[1]

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
        """The state after spans[:index]: a model span's own snapshot, else read on from the nearest state known
        before it (state_at)."""
        if index < len(self.spans) and self.spans[index].start is not None:
            return self.spans[index].start
        return self.state_at(sum(len(span.text) for span in self.spans[:index]), reader)

    def state_at(self, offset: int, reader: Reader, *, pin: bool = False) -> Prefilled | None:
        """The state after the first `offset` characters of the story, read on from the nearest state known at
        or before it (a model span's snapshot, the end state read so far, a kept mark). The state at the end is
        kept as the end state; one before it as a mark, so the next write in the same paragraph reads nothing
        before it. A `pin`ned mark stays while its text is unchanged (a chapter's start); the others are the
        last few asked for."""
        text = self.text
        offset = max(0, min(offset, len(text)))
        base_offset, base = self._nearest_state(offset, text)
        state = reader.feed(base, text[base_offset:offset]) if offset > base_offset else base
        if offset == len(text):
            self._read = (self.spans, state)
        if state is not None and offset > 0 and (pin or offset < len(text)):
            previous = self._marks.pop(offset, None)
            self._marks[offset] = _Mark(state, pin or bool(previous and previous.pinned))
            loose = [o for o, mark in self._marks.items() if not mark.pinned]
            for o in loose[:-MAX_LOOSE_MARKS]:
                del self._marks[o]
        return state

    def _nearest_state(self, offset: int, text: str) -> tuple[int, Prefilled | None]:
        """The known state closest before `offset` (offset 0 and None: the beginning)."""
        best_offset, best = 0, None
        position = 0
        for span in self.spans:
            if position > offset:
                break
            if span.start is not None:
                best_offset, best = position, span.start
            position += len(span.text)
        read, state = self._read
        if state is not None and len(read) <= len(self.spans) and all(a is b for a, b in zip(read, self.spans)):
            read_chars = sum(len(span.text) for span in read)
            if best_offset < read_chars <= offset:
                best_offset, best = read_chars, state
        for mark_offset, mark in self._valid_marks(text).items():
            if best_offset < mark_offset <= offset:
                best_offset, best = mark_offset, mark.state
        return best_offset, best

    def _valid_marks(self, text: str) -> dict[int, _Mark]:
        """The marks, without those whose text before them changed since they were made."""
        if self._marks and text != self._marks_text:
            unchanged = common_prefix_length(self._marks_text, text)
            for offset in [o for o in self._marks if o > unchanged]:
                del self._marks[offset]
        self._marks_text = text
        return self._marks

    def known_before(self, offset: int) -> int:
        """The offset of the nearest state known at or before `offset` (0: none, reading starts at the beginning)."""
        return self._nearest_state(offset, self.text)[0]

    def kept_offsets(self) -> dict[int, bool]:
        """{offset: pinned} of the states kept at character offsets."""
        return {offset: mark.pinned for offset, mark in sorted(self._valid_marks(self.text).items())}

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
                fingerprint: str | None = None, with_state: bool = False, steering: Steering | None = None,
                bans: Sequence[str] = ()) -> dict:
        record: dict[str, Any] = {"format": SESSION_FORMAT, "version": SESSION_VERSION,
                                  "spans": [span.to_json() for span in self.spans]}
        if settings is not None:
            record["settings"] = settings.as_dict()
        if length is not None:
            record["len"] = length
        if steering is not None and not steering.is_empty:
            record["steering"] = steering.to_json()
        if bans:
            record["bans"] = list(bans)
        state = self.known_end_state() if with_state else None
        if state is not None and fingerprint and _encodable(state.state):
            record["state"] = {"model": fingerprint, "n_chars": len(self), **self._state_record(state)}
        snapshots = self._snapshots_to_save() if with_state and fingerprint else []
        if snapshots:
            digests = _prefix_digests(self.text, [offset for offset, _, _ in snapshots])
            record["snapshots"] = {"model": fingerprint, "states": [
                {"offset": offset, "digest": digests[offset], "pinned": pinned, **self._state_record(state)}
                for offset, state, pinned in snapshots]}
        kept = {id(state) for state in [state] + [s for _, s, _ in snapshots]}
        for key in [k for k in self._encoded if k not in kept]:
            del self._encoded[key]
        return record

    def _snapshots_to_save(self) -> list[tuple[int, Prefilled, bool]]:
        """(offset, state, pinned), by offset: pinned marks at least SNAPSHOT_SPACING characters apart (wider
        for a story of more than MAX_SAVED_SNAPSHOTS of those), and where a rewrite of the last model paragraph
        starts (its span's start and its paragraph's)."""
        text = self.text
        marks = self._valid_marks(text)
        chosen: dict[int, tuple[Prefilled, bool]] = {}
        spacing, previous = max(SNAPSHOT_SPACING, len(text) // MAX_SAVED_SNAPSHOTS), 0
        for offset in sorted(o for o, mark in marks.items() if mark.pinned):
            if offset - previous >= spacing:
                chosen[offset], previous = (marks[offset].state, True), offset
        index = self.last_model_index()
        if index is not None:
            offset = sum(len(span.text) for span in self.spans[:index])
            cut = text.rfind("\n", 0, offset) + 1
            for at, state in ((offset, self.spans[index].start), (cut, None)):
                state = state or (marks[at].state if at in marks else None)
                if state is not None and 0 < at < len(text) and at not in chosen:
                    chosen[at] = (state, bool(at in marks and marks[at].pinned))
        return [(offset, state, pinned) for offset, (state, pinned) in sorted(chosen.items())
                if _encodable(state.state)]

    def _state_record(self, state: Prefilled) -> dict:
        """A state as JSON (encoded once: an autosave writes the same snapshots again)."""
        kept = self._encoded.get(id(state))
        if kept is not None and kept[0] is state:
            return kept[1]
        record = {"last_token": state.last_token, "n_tokens": state.n_tokens, "logits": _encode(state.logits),
                  "arrays": {f.name: _encode(getattr(state.state, f.name)) for f in dataclasses.fields(state.state)}}
        self._encoded[id(state)] = (state, record)
        return record

    def save(self, path: str | Path, **options) -> None:
        """Write the session atomically: a temporary file beside `path`, then a rename."""
        atomic_write(Path(path), json.dumps(self.to_json(**options), ensure_ascii=False))

    @classmethod
    def from_json(cls, record: Any, source: str, *, fingerprint: str | None = None,
                  zero_state: Any = None, vocab_size: int | None = None) -> "Document":
        """A document from a saved session, every field checked (a bad one: a one-line SessionFileError).

        The saved model states are used only if `fingerprint` matches; their arrays must then be exactly those
        of `zero_state` (names, dtype, shape) and their logits `vocab_size` floats, so a damaged or hostile file
        never reaches the backend. A snapshot whose digest is not that of the text before it is not used."""
        if not isinstance(record, dict) or record.get("format") != SESSION_FORMAT:
            raise SessionFileError(f"{source}: not an ai-writer session file")
        version = record.get("version")
        if not (_is_int(version) and version in READABLE_VERSIONS):
            raise SessionFileError(f"{source}: session version {_short(version)} is not supported")
        spans = _checked_spans(record.get("spans"), source)
        document = cls(spans)
        document.saved_settings = _checked_settings(record.get("settings"), source, "the settings")
        document.saved_length = record.get("len")
        if document.saved_length is not None and not (_is_int(document.saved_length) and
                                                      1 <= document.saved_length <= MAX_SAVED_LENGTH):
            raise SessionFileError(f"{source}: len must be a whole number from 1 to {MAX_SAVED_LENGTH}, "
                                   f"got {_short(document.saved_length)}")
        if version >= 2:
            try:
                document.saved_steering = Steering.from_json(record.get("steering"), source)
            except InputTextError as exc:
                raise SessionFileError(str(exc) if str(exc).startswith(source) else f"{source}: {exc}") from None
            document.saved_bans = _checked_bans(record.get("bans"), source)
        usable = bool(fingerprint) and _encodable(zero_state)
        saved = record.get("state")
        if saved is not None and not isinstance(saved, dict):
            raise SessionFileError(f"{source}: the saved state is not a JSON object")
        if saved and usable and saved.get("model") == fingerprint and saved.get("n_chars") == len(document):
            document.set_end_state(_checked_state(saved, source, zero_state, vocab_size))
        snapshots = _checked_snapshots(record.get("snapshots"), source, len(document)) if version >= 2 else None
        if snapshots and usable and snapshots["model"] == fingerprint:
            text = document.text
            digests = _prefix_digests(text, [item["offset"] for item in snapshots["states"]])
            for number, item in enumerate(snapshots["states"], 1):
                if item["digest"] == digests[item["offset"]]:
                    state = _checked_state(item, source, zero_state, vocab_size, f"snapshot {number}")
                    document._marks[item["offset"]] = _Mark(state, item.get("pinned") is True)
            document._marks_text = text
        return document

    @classmethod
    def load(cls, path: str | Path, **options) -> "Document":
        return cls.from_json(read_session(path), str(path), **options)


def common_prefix_length(a: str, b: str) -> int:
    """How many first characters `a` and `b` share (compared a block at a time: fast on a whole novel)."""
    n, block = min(len(a), len(b)), 65536
    start = 0
    while start < n and a[start:start + block] == b[start:start + block]:
        start += block
    end = min(start + block, n)
    while start < end:  # the first difference is in a[start:end]: halve it
        middle = (start + end + 1) // 2
        if a[start:middle] == b[start:middle]:
            start = middle
        else:
            end = middle - 1
    return min(start, n)


def _prefix_digests(text: str, offsets: Sequence[int]) -> dict[int, str]:
    """{offset: the digest of text[:offset]}, hashing the text once."""
    digests, hasher, position = {}, hashlib.blake2b(digest_size=16), 0
    for offset in sorted(set(offsets)):
        hasher.update(text[position:offset].encode("utf-8", "surrogatepass"))
        position = offset
        digests[offset] = hasher.copy().hexdigest()
    return digests


def read_session(path: str | Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SessionFileError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: JSON, or a number of 5,000 digits
        raise SessionFileError(f"{path}: cannot read the session ({_short(str(exc), 200)})") from None
    except RecursionError:
        raise SessionFileError(f"{path}: cannot read the session (JSON nested too deeply)") from None


def is_session_file(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(200)
    except OSError:
        return False
    return head.lstrip().startswith(b"{") and SESSION_FORMAT.encode() in head


def move_aside(path: str | Path) -> Path:
    """Rename a session file that cannot be used to NAME.damaged (or NAME.damaged-2, -3, ...) beside it, so that
    a new session never overwrites it: it is kept, never deleted. Returns the new name."""
    path = Path(path)
    for n in range(1, 1000):
        aside = path.with_name(f"{path.name}.damaged" + (f"-{n}" if n > 1 else ""))
        if not aside.exists() and not aside.is_symlink():
            try:
                os.rename(path, aside)
            except OSError as exc:
                raise SessionFileError(f"{path}: cannot move the damaged session aside ({exc.strerror or exc})") \
                    from None
            return aside
    raise SessionFileError(f"{path}: cannot move the damaged session aside (too many {path.name}.damaged-N files)")


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


MAX_SAVED_LENGTH = 10**9  # a session's "len": characters per paragraph
MAX_SEED = 2**63 - 1


def _short(value: Any, limit: int = 60) -> str:
    """`value` for a one-line message, cut short: a field of a hostile file can be megabytes long."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError):  # an integer of thousands of digits, deep nesting
        text = f"a JSON {type(value).__name__} too big to show"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_spans(spans: Any, source: str) -> list[Span]:
    if not isinstance(spans, list):
        raise SessionFileError(f"{source}: the spans are not a list")
    result = []
    for i, record in enumerate(spans, 1):
        where = f"{source}: span {i}"
        if not isinstance(record, dict):
            raise SessionFileError(f"{where} is not a JSON object")
        author, text, seed = record.get("author"), record.get("text"), record.get("seed")
        if author not in (WRITER, MODEL):
            raise SessionFileError(f"{where}: author must be {WRITER!r} or {MODEL!r}, got {_short(author)}")
        if not isinstance(text, str):
            raise SessionFileError(f"{where}: its text is not a string")
        if seed is not None and not (_is_int(seed) and 0 <= seed <= MAX_SEED):
            raise SessionFileError(f"{where}: seed must be a whole number from 0 to 2**63-1, got {_short(seed)}")
        settings = _checked_settings(record.get("settings"), source, f"span {i}'s settings")
        result.append(Span(author, text, seed, settings))
    return result


def _checked_bans(bans: Any, source: str) -> tuple[str, ...]:
    if bans is None:
        return ()
    if not isinstance(bans, list) or len(bans) > MAX_BANS:
        raise SessionFileError(f"{source}: the banned phrases must be a list of at most {MAX_BANS} texts")
    for number, phrase in enumerate(bans, 1):
        if not (isinstance(phrase, str) and phrase.strip() and len(phrase) <= MAX_BAN_CHARS):
            raise SessionFileError(f"{source}: banned phrase {number} must be a text of 1 to {MAX_BAN_CHARS} "
                                   f"characters, got {_short(phrase)}")
    return tuple(bans)


def _checked_snapshots(snapshots: Any, source: str, n_chars: int) -> dict | None:
    """The snapshots' frame (the arrays are checked by _checked_state where they are used): a model fingerprint
    and a list of states at increasing offsets inside the story, each with a digest."""
    if snapshots is None:
        return None
    if not isinstance(snapshots, dict) or not isinstance(snapshots.get("model"), str):
        raise SessionFileError(f"{source}: the snapshots are not a JSON object with a model")
    states = snapshots.get("states")
    if not isinstance(states, list) or len(states) > MAX_FILE_SNAPSHOTS:
        raise SessionFileError(f"{source}: the snapshots' states must be a list of at most {MAX_FILE_SNAPSHOTS}")
    previous = 0
    for number, item in enumerate(states, 1):
        where = f"{source}: snapshot {number}"
        if not isinstance(item, dict):
            raise SessionFileError(f"{where} is not a JSON object")
        offset, digest = item.get("offset"), item.get("digest")
        if not (_is_int(offset) and previous < offset <= n_chars):
            raise SessionFileError(f"{where}: offset must be a whole number after the last one and inside the "
                                   f"story ({n_chars} characters), got {_short(offset)}")
        if not (isinstance(digest, str) and len(digest) == 32 and all(c in "0123456789abcdef" for c in digest)):
            raise SessionFileError(f"{where}: digest must be 32 hexadecimal digits")
        previous = offset
    return snapshots


def _checked_settings(settings: Any, source: str, what: str) -> dict | None:
    """Saved sampling settings: None, or an object of known settings, each in its range (SamplerSettings)."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise SessionFileError(f"{source}: {what} are not a JSON object")
    for name, value in settings.items():  # float(10**400) would overflow inside the validation
        if _is_int(value) and value.bit_length() > 63:
            raise SessionFileError(f"{source}: {what}: {_short(name)} is out of range ({_short(value)})")
    try:
        SamplerSettings().replace(**settings)
    except AiWriterError as exc:
        raise SessionFileError(f"{source}: {what}: {exc}") from None
    except TypeError:  # a key that is not a string
        raise SessionFileError(f"{source}: {what}: the names are not settings") from None
    return settings


def _checked_state(saved: dict, source: str, zero_state: Any, vocab_size: int | None,
                   what: str = "the saved model state") -> Prefilled:
    """A saved state, each array exactly like the template's (names, dtype, shape; finite; ids in range)."""
    where = f"{source}: {what}"
    arrays = saved.get("arrays")
    names = [f.name for f in dataclasses.fields(zero_state)]
    if not isinstance(arrays, dict) or sorted(arrays) != sorted(names):
        raise SessionFileError(f"{where} must hold the arrays {', '.join(names)}")
    decoded = {name: _decode(arrays[name], getattr(zero_state, name), f"{where}: array {name!r}", vocab_size)
               for name in names}
    logits_shape = (vocab_size,) if vocab_size is not None else None
    logits = _decode(saved.get("logits"), np.zeros(logits_shape or (0,), np.float32), f"{where}: its logits",
                     None, any_length=logits_shape is None)
    last_token, n_tokens = saved.get("last_token"), saved.get("n_tokens")
    if not (_is_int(last_token) and 0 <= last_token < (vocab_size or len(logits))):
        raise SessionFileError(f"{where}: last_token {_short(last_token)} is not a token of this model")
    if not (_is_int(n_tokens) and 1 <= n_tokens <= MAX_SEED):
        raise SessionFileError(f"{where}: n_tokens must be a whole number >= 1, got {_short(n_tokens)}")
    return Prefilled(type(zero_state)(**decoded), logits, last_token, n_tokens)


def _decode(record: Any, template: np.ndarray, where: str, vocab_size: int | None = None, *,
            any_length: bool = False) -> np.ndarray:
    """One saved array, which must have the template's dtype and shape (an axis of size 0 in the template,
    such as a window of token ids, may have any length; so may every axis with any_length); checked before
    anything is allocated."""
    if not isinstance(record, dict):
        raise SessionFileError(f"{where} is not a JSON object")
    dtype, shape, data = record.get("dtype"), record.get("shape"), record.get("data")
    if dtype != str(template.dtype):  # compared as text: np.dtype() of a hostile string is never built
        raise SessionFileError(f"{where} must be {template.dtype}, got {_short(dtype)}")
    if not (isinstance(shape, list) and len(shape) == template.ndim and all(_is_int(n) and n >= 0 for n in shape)
            and all(n == m or m == 0 or any_length for n, m in zip(shape, template.shape))):
        raise SessionFileError(f"{where} must have the shape {list(template.shape)} of this model, "
                               f"got {_short(shape)}")
    if not isinstance(data, str):
        raise SessionFileError(f"{where}: its data is not base64 text")
    expected = math.prod(shape) * template.itemsize
    if len(data) != 4 * ((expected + 2) // 3):
        raise SessionFileError(f"{where}: {len(data)} characters of base64 cannot hold {expected} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SessionFileError(f"{where}: its data is not valid base64") from None
    if len(raw) != expected:
        raise SessionFileError(f"{where}: {len(raw)} bytes of data, expected {expected}")
    array = np.frombuffer(raw, dtype=template.dtype).reshape(shape).copy()
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise SessionFileError(f"{where} holds NaN or infinite values")
    if np.issubdtype(array.dtype, np.integer) and array.size and (
            array.min() < 0 or (vocab_size is not None and array.max() >= vocab_size)):
        raise SessionFileError(f"{where} holds token ids outside this model's vocabulary")
    return array
