"""The interactive writing session of `ai-writer repl`, on top of the document model.

Enter writes the next paragraph, /rewrite (Ctrl-R) samples it again from the saved state at
its start, /undo, /edit, /alt + /pick, and every change is autosaved atomically. The model
writes with the steering block (memory, author's note, active lore: story/steering.py) read in
between the story and the paragraph it continues, and never writes a banned phrase
(generation/guards.py); both are saved in the session as its own part, never in the story.

Who writes is the session's `writer` (writer.py): the local model, or a remote server
(--remote), which keeps no states: then nothing here reads the story and session files hold no
state. A failure of the server is one line; the story stays as it was.

A whole manuscript is read once, chapter by chapter (story/chapters.py), keeping the model's
state at each chapter's start; the session file keeps those snapshots, so reopening reads
nothing. /save writes the session and the story's plain text file (the FILE the REPL was
opened on, else the session's name with .txt); a text file this session did not read or write
is overwritten only when the writer says so.

The terminal side is a UI object (ui.py): prompt_toolkit, or plain line input for --plain and
TERM=dumb, which is what the pseudo-terminal tests drive. The command itself is in cli/repl.py.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from pathlib import Path

from ai_writer.repl.files import TextFiles, read_story_file, story_text_path
from ai_writer.story.document import (
    MODEL,
    WRITER,
    Document,
    SessionFileError,
    Span,
    atomic_write,
    is_session_file,
)
from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.generation.guards import Guards
from ai_writer.repl.commands import Quit, command_names, find
from ai_writer.repl.writer import LocalWriter, RemoteWriter
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.chapters import clean_manuscript, heading_text, split_chapters
from ai_writer.story.steering import Steering

AUTOSAVE_EVERY_S = 1.0  # while a paragraph streams, its text so far is autosaved this often
READ_STEP = 20_000  # a long chapter is read this many characters at a time (for the progress bar)
PROGRESS_FROM = 20_000  # characters to read before a progress bar is shown
SHOWN_ON_OPEN = 20  # paragraphs shown when a story is opened (/show prints them all)


class Repl:
    def __init__(self, writer: LocalWriter | RemoteWriter, ui, *, settings: SamplerSettings, length: int,
                 seed: int | None, session_path: Path, paragraph: bool = True, steering: Steering = Steering(),
                 guards: Guards = Guards(), text_path: Path | None = None):
        self.writer, self.ui = writer, ui
        self.steering = steering
        self.guards = guards  # banned phrases and the loop guard, for every write
        self.settings, self.length, self.seed = settings, length, seed
        self.session_path = session_path
        self.text_path = text_path  # the story's plain text file, which /save writes too
        self.text_files = TextFiles()  # the text files this session read or wrote
        self.stop = ("\n",) if paragraph else ()  # a paragraph ends at its line break, or only at --len
        self.doc = Document()
        self.alts: tuple | None = None  # (spans the alternatives continue, the story's state there, seed, texts)
        self.explicit: frozenset[str] = frozenset()  # settings (and steering parts) given on the command line

    # ----- writing -----
    def _next_seed(self) -> int:
        if self.seed is None:
            return secrets.randbelow(2**31)
        seed, self.seed = self.seed, self.seed + 1
        return seed

    def _chunks(self, place, seed: int, runs: int = 1, results: list | None = None):
        """The writer's chunks of `runs` continuations from `place`, closed when the caller is done with them
        (which stops a server writing)."""
        return contextlib.closing(self.writer.stream(place, settings=self.settings, guards=self.guards,
                                                     max_chars=self.length, seed=seed, runs=runs, stop=self.stop,
                                                     results=results))

    def _stream(self, place, seed: int, before: tuple, after: tuple = ()) -> str:
        """Stream one paragraph from `place`; Esc or Ctrl-C stops it and keeps what was written; a failure (of a
        server) keeps nothing. While it streams, the autosave holds `before` + the paragraph so far + `after`."""
        from ai_writer.generation.generator import RunResult

        results: list[RunResult] = []
        parts: list[str] = []
        last_save = time.monotonic()
        try:
            with self.ui.generating() as escape_pressed, self._chunks(place, seed, results=results) as chunks:
                for chunk in chunks:
                    parts.append(chunk.text)
                    self.ui.story(chunk.text, MODEL)
                    if time.monotonic() - last_save > AUTOSAVE_EVERY_S:  # a crash now loses nothing shown
                        self._autosave(before + (self._model_span("".join(parts), seed, place.story),) + after)
                        last_save = time.monotonic()
                    if escape_pressed():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.ui.info("\n(stopped)")
            return "".join(parts)
        except AiWriterError:  # the story stays as it was, in the session file too
            if parts:
                self.ui.story("\n", MODEL)
                self._autosave(self.doc.spans)
            raise
        text = "".join(parts)
        if results and results[0].finish_reason == "stop":
            text += "\n"
        self.ui.story("\n", MODEL)
        return text

    def _model_span(self, text: str, seed: int, start) -> Span:
        return Span(MODEL, text, seed, self.settings.as_dict(), start)

    def write_next(self) -> None:
        place = self.writer.place(self.doc, self.steering)
        seed = self._next_seed()
        text = self._stream(place, seed, self.doc.spans)
        self.doc.append(self._model_span(text, seed, place.story))
        self.changed()

    def rewrite(self) -> None:
        index = self.doc.last_model_index()
        if index is None:
            raise AiWriterError("nothing to rewrite: the model has not written a paragraph yet")
        place = self.writer.place(self.doc, self.steering, index)
        seed = self._next_seed()
        self.ui.info("↻ 换个写法")
        text = self._stream(place, seed, self.doc.spans[:index], self.doc.spans[index + 1:])
        self.doc.replace_span(index, self._model_span(text, seed, place.story))
        self.changed()

    def alternatives(self, n: int) -> None:
        from ai_writer.generation.generator import RunResult

        if n > 16:
            raise AiWriterError(f"at most 16 alternatives at once, got {n}")
        place = self.writer.place(self.doc, self.steering)
        seed = self._next_seed()
        results: list[RunResult] = []
        self.ui.info(f"(writing {n} alternatives)")
        try:
            with self.ui.generating() as escape_pressed, self._chunks(place, seed, n, results) as chunks:
                for _ in chunks:
                    if escape_pressed():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.ui.info("(stopped)")
            return
        texts = [r.text + ("\n" if r.finish_reason == "stop" else "") for r in sorted(results, key=lambda r: r.run)]
        self.alts = (self.doc.spans, place.story, seed, texts)
        for k, text in enumerate(texts, 1):
            self.ui.info(f"[{k}] {text.rstrip()}")
        self.ui.info(f"/pick K keeps one (1-{n})")

    def pick(self, k: int) -> None:
        if self.alts is None:
            raise AiWriterError("no alternatives to pick from; use /alt N first")
        spans, start, seed, texts = self.alts
        if spans is not self.doc.spans:
            raise AiWriterError("the story changed since /alt; use /alt N again")
        if not 1 <= k <= len(texts):
            raise AiWriterError(f"pick a number between 1 and {len(texts)}, got {k}")
        self.doc.append(self._model_span(texts[k - 1], seed, start))
        self.alts = None
        self.ui.story(texts[k - 1].rstrip("\n") + "\n", MODEL)
        self.changed()

    def add_writer_text(self, text: str) -> None:
        self.doc.append(Span(WRITER, text))
        self.changed()

    # ----- changes -----
    def undo(self) -> None:
        if not self.doc.undo():
            raise AiWriterError("nothing to undo")
        self.ui.info(f"(undone; the story ends:)\n{self._tail()}")
        self.changed()

    def redo(self) -> None:
        if not self.doc.redo():
            raise AiWriterError("nothing to redo")
        self.ui.info(f"(redone; the story ends:)\n{self._tail()}")
        self.changed()

    def edit(self, number: int | None) -> None:
        paragraphs = self.doc.paragraphs()
        if not paragraphs:
            raise AiWriterError("the story is empty")
        number = len(paragraphs) if number is None else number
        if not 1 <= number <= len(paragraphs):
            raise AiWriterError(f"there is no paragraph {number}; the story has {len(paragraphs)}")
        old = paragraphs[number - 1].text
        new = self.ui.edit(f"edit ¶{number}> ", old)
        if new == old:
            self.ui.info("(unchanged)")
            return
        self.doc.edit_paragraph(number, new)
        self.ui.info(f"(paragraph {number} edited)")
        self.changed()

    def set_settings(self, settings: SamplerSettings, quiet: bool = False) -> None:
        self.settings = settings
        if not quiet:
            self.ui.info(self.toolbar_text())

    def set_length(self, length: int) -> None:
        self.length = length
        self.ui.info(self.toolbar_text())

    def changed(self) -> None:
        self.alts = None if self.alts and self.alts[0] is not self.doc.spans else self.alts
        self._autosave(self.doc.spans)

    # ----- steering, bans and chapters -----
    def set_steering(self, steering: Steering, message: str) -> None:
        self.steering = steering
        self.ui.info(message)
        self._autosave(self.doc.spans)

    def set_bans(self, phrases, message: str) -> None:
        self.guards = Guards.from_phrases(phrases, loop_guard=self.guards.loop_guard)
        self.ui.info(message)
        self._autosave(self.doc.spans)

    def new_chapter(self, title: str) -> None:
        """Append a chapter heading (story/chapters.heading_text) as the writer's text and keep the model's state
        at its start."""
        heading = heading_text(self.doc.text, title)
        begin = len(self.doc) + len(heading) - len(heading.lstrip("\n"))
        self.doc.append(Span(WRITER, heading))
        self.writer.read(self.doc, begin, pin=True)
        number = next(c.number for c in split_chapters(self.doc.text) if c.begin == begin)
        self.ui.story(heading, WRITER)
        self.ui.info(f"(chapter {number} begins; Enter writes on)")
        self.changed()

    def read_through(self) -> None:
        """Read what the model has not read of the story, chapter by chapter, keeping the state at each chapter's
        start (pinned: saved in the session); a long read shows its progress. A remote writer reads nothing."""
        doc = self.doc
        if not self.writer.keeps_states or not doc.spans or doc.known_end_state() is not None:
            return
        text = doc.text
        begin = doc.known_before(len(text))
        chapters = [c.begin for c in split_chapters(text) if c.begin > begin]
        steps = range(begin + READ_STEP, len(text), READ_STEP)
        stops = sorted(set(chapters) | set(steps) | {len(text)})
        if len(text) - begin < PROGRESS_FROM:
            for stop in chapters + [len(text)]:
                self.writer.read(doc, stop, pin=stop in chapters)
        else:
            pins = set(chapters)
            with self.ui.progress(len(text) - begin, "reading the story") as done:
                for stop in stops:
                    self.writer.read(doc, stop, pin=stop in pins)
                    done(stop - begin)
        self._autosave(doc.spans)  # the states read are kept at once

    # ----- files -----
    def _save_options(self, with_state: bool) -> dict:
        return dict(settings=self.settings, length=self.length, fingerprint=self.writer.fingerprint,
                    with_state=with_state, steering=self.steering, bans=self.guards.bans)

    def _autosave(self, spans) -> None:
        document = self.doc if spans is self.doc.spans else self.doc.with_spans(spans)
        try:
            document.save(self.session_path, **self._save_options(with_state=True))
        except SessionFileError as exc:
            self.ui.error(f"autosave failed: {exc}")

    def save(self, path: Path | None) -> None:
        """Save the session (to `path` or the session file) and the story's plain text beside it."""
        session = path or self.session_path
        self.writer.read(self.doc)  # so that reopening needs no re-reading
        self.doc.save(session, **self._save_options(with_state=True))
        text_path = self.text_path if path is None and self.text_path else story_text_path(session)
        if path is None:
            self.text_path = text_path
        wrote = text_path.resolve() != session.resolve() and self._write_text(text_path)
        self.ui.info(f"saved {len(self.doc)} characters to {session}" + (f" and {text_path}" if wrote else ""))

    def _write_text(self, path: Path) -> bool:
        """Write the story's text to `path`; a file this session did not read or write is overwritten only when
        the writer says so."""
        if not self.text_files.is_own(path):
            try:
                answer = self.ui.read(f"{path} was not written by this session; overwrite it with the story? [y/N] ")
            except (EOFError, KeyboardInterrupt):
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                self.ui.info(f"({path} is not written; /export PATH writes the text elsewhere)")
                return False
        text = self.doc.text.lstrip("\n")
        try:
            atomic_write(path, text)
        except SessionFileError as exc:
            raise AiWriterError(str(exc)) from None
        self.text_files.remember(path, text.encode("utf-8"))
        return True

    def export(self, path: Path) -> None:
        try:
            atomic_write(path, self.doc.text.lstrip("\n"))
        except SessionFileError as exc:
            raise AiWriterError(str(exc)) from None
        self.ui.info(f"wrote {len(self.doc)} characters to {path}")

    def adopt(self, document: Document, keep: frozenset[str] = frozenset()) -> None:
        """Make `document` the story, with the settings, steering and bans it was saved with (except those named
        in `keep`: given on the command line)."""
        self.doc = document
        try:
            saved = {k: v for k, v in (document.saved_settings or {}).items() if k not in keep}
            self.set_settings(self.settings.replace(**saved), quiet=True)
        except AiWriterError as exc:
            self.ui.error(f"the saved settings are not used: {exc}")
        if isinstance(document.saved_length, int) and document.saved_length > 0 and "length" not in keep:
            self.length = document.saved_length
        saved_steering = document.saved_steering
        if saved_steering is not None:
            self.steering = self.steering.with_(**{name: getattr(saved_steering, name)
                                                   for name in ("memory", "note", "lorebook", "scan")
                                                   if name not in keep})
        if document.saved_bans is not None and "bans" not in keep:
            try:
                self.guards = Guards.from_phrases(document.saved_bans, loop_guard=self.guards.loop_guard)
            except AiWriterError as exc:
                self.ui.error(f"the saved banned phrases are not used: {exc}")

    def open(self, path: Path) -> None:
        self.adopt(self.load(path))
        self.text_path = story_text_path(path) if is_session_file(path) else path
        self.alts = None
        self.read_through()
        self.show_story(SHOWN_ON_OPEN)
        self._autosave(self.doc.spans)

    def load(self, path: Path, allow_empty: bool = False) -> Document:
        """A saved session, or a text file (a manuscript: story/chapters.clean_manuscript; remembered as read, so
        that /save may write it again); an empty text file is an empty story where `allow_empty`."""
        if is_session_file(path):
            return self.writer.load(path)
        data, text = read_story_file(path)
        if not text and not allow_empty:
            raise InputTextError(f"{path}: the opening is empty")
        self.text_files.remember(path, data)
        return Document([Span(WRITER, text)] if text else [])

    # ----- display -----
    def _tail(self, paragraphs: int = 2) -> str:
        return "\n".join(p.text for p in self.doc.paragraphs()[-paragraphs:])

    def show_story(self, last: int | None = None) -> None:
        """The story with its paragraphs numbered ("[3] ...", as /edit counts them); only the `last` ones if
        given."""
        paragraphs = self.doc.paragraphs()
        text = self.doc.text
        first = len(text) - len(text.lstrip("\n"))
        if last is not None and len(paragraphs) > last:
            first = paragraphs[-last].begin
            hidden = len(paragraphs) - last
            self.ui.info(f"(… {hidden} paragraph{'s' if hidden > 1 else ''} before; /show prints them all)")
        numbers = {p.begin: p.index for p in paragraphs}
        position = 0
        for span in self.doc.spans:
            span_begin, position = position, position + len(span.text)
            if position <= first:
                continue
            line_begin = max(first, span_begin)
            lines = span.text[line_begin - span_begin:].split("\n")
            parts = []
            for k, line in enumerate(lines):
                if line and line_begin in numbers:
                    parts.append(f"[{numbers[line_begin]}] ")
                parts.append(line + ("\n" if k < len(lines) - 1 else ""))
                line_begin += len(line) + 1
            self.ui.story("".join(parts), span.author)
        if not text.endswith("\n"):
            self.ui.story("\n", WRITER)

    def toolbar_text(self) -> str:
        s = self.settings
        text = (f"{len(self.doc)} chars | {self.writer.describe()} | T {s.temperature:g} top_p {s.top_p:g} "
                f"len {self.length}")
        active = self.steering.active(self.doc.text) if len(self.steering.lorebook) else []
        if active:
            text += f" | lore: {active[0].label()}" + (f" +{len(active) - 1}" if len(active) > 1 else "")
        return text

    # ----- the loop -----
    def handle(self, line: str) -> None:
        if not line.strip():
            self.write_next()
        elif line.startswith("/"):
            name, _, arg = line[1:].partition(" ")
            command = find(name.strip().lower())
            if command is None:
                raise AiWriterError(f"unknown command /{name}; commands: {command_names()}")
            command.handler(self, arg.strip())
        else:
            self.add_writer_text(line)

    def run(self) -> None:
        while True:
            self.ui.status(self.toolbar_text())
            try:
                line = self.ui.read("> ")
            except KeyboardInterrupt:
                self.ui.info("(Ctrl-C: use /quit to leave)")
                continue
            except EOFError:
                break
            try:
                self.handle(line)
            except Quit:
                break
            except AiWriterError as exc:
                self.ui.error(str(exc))
            except KeyboardInterrupt:
                self.ui.info("(stopped)")
        self.writer.read(self.doc)  # at most the last paragraph: reopening then reads nothing
        self._autosave(self.doc.spans)
        note = ""
        if self.text_path is not None and not self.text_files.is_current(self.text_path, self.doc.text.lstrip("\n")):
            note = f" ({self.text_path} does not hold the latest text: /save writes it)"
        self.ui.info(f"session saved in {self.session_path}{note}")

