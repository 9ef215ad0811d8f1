"""The interactive writing session of `ai-writer repl`, on top of the document model.

Enter writes the next paragraph, /rewrite (Ctrl-R) samples it again from the saved state at
its start, /undo, /edit, /alt + /pick, and every change is autosaved atomically. The terminal
side is a UI object (ui.py): prompt_toolkit, or plain line input for --plain and TERM=dumb,
which is what the pseudo-terminal tests drive. The command itself is in cli/repl.py.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

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
from ai_writer.generation.reading import CountingBackend, Reader
from ai_writer.repl.commands import Quit, command_names, find
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.templates import SHIPPED, Template

AUTOSAVE_EVERY_S = 1.0  # while a paragraph streams, its text so far is autosaved this often


class Repl:
    def __init__(self, loaded, ui, *, settings: SamplerSettings, length: int, seed: int | None, session_path: Path,
                 paragraph: bool = True, template: Template = SHIPPED["plain"]):
        from ai_writer.generation.generator import Generator

        self.loaded, self.ui = loaded, ui
        self.backend = CountingBackend(loaded.backend)
        self.reader = Reader(self.backend, loaded.tokenizer, template)
        self.generator = Generator(self.backend, loaded.tokenizer, settings)
        self.settings, self.length, self.seed = settings, length, seed
        self.session_path = session_path
        self.stop = ("\n",) if paragraph else ()  # a paragraph ends at its line break, or only at --len
        self.fingerprint = model_fingerprint(loaded, template)
        self.doc = Document()
        self.alts: tuple | None = None  # (spans the alternatives continue, start state, seed, texts)
        self.explicit: frozenset[str] = frozenset()  # settings given on the command line

    # ----- writing -----
    def _next_seed(self) -> int:
        if self.seed is None:
            return secrets.randbelow(2**31)
        seed, self.seed = self.seed, self.seed + 1
        return seed

    def _stream(self, start, seed: int, before: tuple, after: tuple = ()) -> str:
        """Stream one paragraph from `start`; Esc or Ctrl-C stops it and keeps what was written.
        While it streams, the autosave holds `before` + the paragraph so far + `after`."""
        import numpy as np

        from ai_writer.generation.generator import RunResult

        results: list[RunResult] = []
        parts: list[str] = []
        last_save = time.monotonic()
        try:
            with self.ui.generating() as escape_pressed:
                for chunk in self.generator.stream(start, max_chars=self.length, rng=np.random.default_rng(seed),
                                                   stop=self.stop, results=results):
                    parts.append(chunk.text)
                    self.ui.story(chunk.text, MODEL)
                    if time.monotonic() - last_save > AUTOSAVE_EVERY_S:  # a crash now loses nothing shown
                        self._autosave(before + (self._model_span("".join(parts), seed, None),) + after)
                        last_save = time.monotonic()
                    if escape_pressed():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.ui.info("\n(stopped)")
            return "".join(parts)
        text = "".join(parts)
        if results and results[0].finish_reason == "stop":
            text += "\n"
        self.ui.story("\n", MODEL)
        return text

    def _model_span(self, text: str, seed: int, start) -> Span:
        return Span(MODEL, text, seed, self.settings.as_dict(), start)

    def write_next(self) -> None:
        start = self.doc.state_at_end(self.reader)
        if start is None:
            raise InputTextError("the story is empty; type an opening first")
        seed = self._next_seed()
        text = self._stream(self.reader.writing_start(start), seed, self.doc.spans)
        self.doc.append(self._model_span(text, seed, start))
        self.changed()

    def rewrite(self) -> None:
        index = self.doc.last_model_index()
        if index is None:
            raise AiWriterError("nothing to rewrite: the model has not written a paragraph yet")
        start = self.doc.state_before(index, self.reader)
        seed = self._next_seed()
        self.ui.info("↻ 换个写法")
        text = self._stream(self.reader.writing_start(start), seed, self.doc.spans[:index],
                            self.doc.spans[index + 1:])
        self.doc.replace_span(index, self._model_span(text, seed, start))
        self.changed()

    def alternatives(self, n: int) -> None:
        import numpy as np

        from ai_writer.generation.generator import RunResult

        if n > 16:
            raise AiWriterError(f"at most 16 alternatives at once, got {n}")
        start = self.doc.state_at_end(self.reader)
        if start is None:
            raise InputTextError("the story is empty; type an opening first")
        seed = self._next_seed()
        results: list[RunResult] = []
        self.ui.info(f"(writing {n} alternatives)")
        try:
            with self.ui.generating() as escape_pressed:
                for _ in self.generator.stream(self.reader.writing_start(start), max_chars=self.length, runs=n,
                                               rng=np.random.default_rng(seed), stop=self.stop, results=results):
                    if escape_pressed():
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.ui.info("(stopped)")
            return
        texts = [r.text + ("\n" if r.finish_reason == "stop" else "") for r in sorted(results, key=lambda r: r.run)]
        self.alts = (self.doc.spans, start, seed, texts)
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
        self.settings = self.generator.settings = settings
        if not quiet:
            self.ui.info(self.toolbar_text())

    def set_length(self, length: int) -> None:
        self.length = length
        self.ui.info(self.toolbar_text())

    def changed(self) -> None:
        self.alts = None if self.alts and self.alts[0] is not self.doc.spans else self.alts
        self._autosave(self.doc.spans)

    # ----- files -----
    def _save_options(self, with_state: bool) -> dict:
        return dict(settings=self.settings, length=self.length, fingerprint=self.fingerprint, with_state=with_state)

    def _autosave(self, spans) -> None:
        document = self.doc if spans is self.doc.spans else Document(spans)
        try:
            document.save(self.session_path, **self._save_options(with_state=True))
        except SessionFileError as exc:
            self.ui.error(f"autosave failed: {exc}")

    def save(self, path: Path | None) -> None:
        path = path or self.session_path
        self.doc.state_at_end(self.reader)  # so that reopening needs no re-reading
        self.doc.save(path, **self._save_options(with_state=True))
        self.ui.info(f"saved {len(self.doc)} characters to {path}")

    def export(self, path: Path) -> None:
        try:
            atomic_write(path, self.doc.text.lstrip("\n"))
        except SessionFileError as exc:
            raise AiWriterError(str(exc)) from None
        self.ui.info(f"wrote {len(self.doc)} characters to {path}")

    def adopt(self, document: Document, keep: frozenset[str] = frozenset()) -> None:
        """Make `document` the story, with the settings it was saved with (except those named in `keep`)."""
        self.doc = document
        try:
            saved = {k: v for k, v in (document.saved_settings or {}).items() if k not in keep}
            self.set_settings(self.settings.replace(**saved), quiet=True)
        except AiWriterError as exc:
            self.ui.error(f"the saved settings are not used: {exc}")
        if isinstance(document.saved_length, int) and document.saved_length > 0 and "length" not in keep:
            self.length = document.saved_length

    def open(self, path: Path) -> None:
        self.adopt(self.load(path))
        self.alts = None
        self.show_story()
        self._autosave(self.doc.spans)

    def load(self, path: Path) -> Document:
        if is_session_file(path):
            return Document.load(path, fingerprint=self.fingerprint, zero_state=self.reader.empty_state(),
                                 vocab_size=getattr(self.loaded.config, "vocab_size", None))
        return Document([Span(WRITER, opening_text(path))])

    # ----- display -----
    def _tail(self, paragraphs: int = 2) -> str:
        return "\n".join(p.text for p in self.doc.paragraphs()[-paragraphs:])

    def show_story(self) -> None:
        for span in self.doc.spans:
            self.ui.story(span.text.lstrip("\n") if span is self.doc.spans[0] else span.text, span.author)
        if not self.doc.text.endswith("\n"):
            self.ui.story("\n", WRITER)

    def toolbar_text(self) -> str:
        s = self.settings
        return (f"{len(self.doc)} chars | {self.loaded.path.name} | T {s.temperature:g} top_p {s.top_p:g} "
                f"len {self.length}")

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
        self.doc.state_at_end(self.reader)  # at most the last paragraph: reopening then reads nothing
        self._autosave(self.doc.spans)
        self.ui.info(f"session saved in {self.session_path}")


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


def opening_text(path: Path) -> str:
    from ai_writer.text.cleanup import clean_opening

    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputTextError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputTextError(f"{path}: cannot read it as UTF-8 text ({exc})") from None
    if not text.strip():
        raise InputTextError(f"{path}: the opening is empty")
    return clean_opening(text)
