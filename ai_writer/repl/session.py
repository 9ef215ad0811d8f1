"""`ai-writer repl`: an interactive writing session on top of the document model.

Enter writes the next paragraph, /rewrite (Ctrl-R) samples it again from the saved state at
its start, /undo, /edit, /alt + /pick, and every change is autosaved atomically. The terminal
side is prompt_toolkit (a prompt with a bottom toolbar); with --plain or TERM=dumb it is plain
line input, which is what the pseudo-terminal tests drive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sys
import time
from pathlib import Path

import click

from ai_writer.cli.options import model_options, open_model, sampling_options
from ai_writer.story.document import (
    MODEL,
    WRITER,
    CountingBackend,
    Document,
    Reader,
    SessionFileError,
    Span,
    atomic_write,
    is_session_file,
)
from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.repl.commands import Quit, command_names, find
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.char_tokenizer import CharTokenizer

AUTOSAVE_EVERY_S = 1.0  # while a paragraph streams, its text so far is autosaved this often


class PlainUI:
    """Line input and plain output: for TERM=dumb, --plain, and the tests."""

    def read(self, prompt: str) -> str:
        return input(prompt)

    def edit(self, prompt: str, default: str) -> str:
        self.info(f"current: {default}\n(type the new text; an empty line keeps it)")
        return input(prompt) or default

    def story(self, text: str, author: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    def info(self, text: str) -> None:
        print(text, flush=True)

    def error(self, text: str) -> None:
        print(f"Error: {text}", flush=True)

    def status(self, text: str) -> None:
        print(f"[{text}]", flush=True)

    @contextlib.contextmanager
    def generating(self):
        """While the model writes: yields a function that says whether the writer pressed Esc."""
        yield lambda: False


class PromptToolkitUI(PlainUI):
    """A prompt_toolkit prompt with a bottom toolbar; the model's text in its own colour."""

    def __init__(self, toolbar):
        from prompt_toolkit import PromptSession
        from prompt_toolkit.key_binding import KeyBindings

        keys = KeyBindings()

        @keys.add("c-r")
        def _(event):
            event.current_buffer.text = "/rewrite"
            event.current_buffer.validate_and_handle()

        self.session = PromptSession(bottom_toolbar=toolbar, key_bindings=keys)
        self.typed_ahead = ""  # keys typed while the model wrote, other than Esc

    def read(self, prompt: str) -> str:
        default, self.typed_ahead = self.typed_ahead, ""
        return self.session.prompt(prompt, default=default)

    @contextlib.contextmanager
    def generating(self):
        """Esc stops the writing: the terminal is put in cbreak mode (Ctrl-C still interrupts) and the
        keys are polled between characters; other keys typed meanwhile go to the next prompt."""
        if not sys.stdin.isatty():
            yield lambda: False
            return
        import select
        import termios
        import tty

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)

        def escape_pressed() -> bool:
            while select.select([fd], [], [], 0)[0]:
                data = os.read(fd, 64).decode("utf-8", "replace")
                if "\x1b" in data:
                    return True
                self.typed_ahead += data.replace("\r", "").replace("\n", "")
            return False

        tty.setcbreak(fd)
        try:
            yield escape_pressed
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def edit(self, prompt: str, default: str) -> str:
        return self.session.prompt(prompt, default=default)

    def story(self, text: str, author: str) -> None:
        colour = "\x1b[36m" if author == MODEL else ""
        sys.stdout.write(f"{colour}{text}\x1b[0m" if colour else text)
        sys.stdout.flush()

    def status(self, text: str) -> None:
        pass  # the bottom toolbar shows it


class Repl:
    def __init__(self, loaded, ui, *, settings: SamplerSettings, length: int, seed: int | None, session_path: Path,
                 paragraph: bool = True):
        from ai_writer.generation.generator import Generator

        self.loaded, self.ui = loaded, ui
        self.backend = CountingBackend(loaded.backend)
        self.reader = Reader(self.backend, loaded.tokenizer)
        self.generator = Generator(self.backend, loaded.tokenizer, settings)
        self.settings, self.length, self.seed = settings, length, seed
        self.session_path = session_path
        self.stop = ("\n",) if paragraph else ()  # a paragraph ends at its line break, or only at --len
        self.fingerprint = model_fingerprint(loaded)
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
        text = self._stream(start, seed, self.doc.spans)
        self.doc.append(self._model_span(text, seed, start))
        self.changed()

    def rewrite(self) -> None:
        index = self.doc.last_model_index()
        if index is None:
            raise AiWriterError("nothing to rewrite: the model has not written a paragraph yet")
        start = self.doc.state_before(index, self.reader)
        seed = self._next_seed()
        self.ui.info("↻ 换个写法")
        text = self._stream(start, seed, self.doc.spans[:index], self.doc.spans[index + 1:])
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
                for _ in self.generator.stream(start, max_chars=self.length, runs=n,
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
            return Document.load(path, fingerprint=self.fingerprint, zero_state=self.loaded.backend.zero_state(1))
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


def model_fingerprint(loaded) -> str:
    """Identifies a model and backend, so a saved state is restored only into the same one."""
    backend = loaded.backend
    tokenizer = loaded.tokenizer
    vocabulary = tokenizer.to_json() if isinstance(tokenizer, CharTokenizer) else tokenizer.describe()
    parts = [loaded.path.name, loaded.config.to_json(), vocabulary, backend.name, backend.precision]
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


def default_session_path(file: Path | None) -> Path:
    if file is not None:
        return file if is_session_file(file) else file.with_name(file.name + ".session.json")
    return Path(click.get_app_dir("ai-writer")) / "sessions" / "autosave.json"


@click.command("repl")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-n", "--len", "length", type=click.IntRange(min=1), default=200, show_default=True,
              help="Characters per paragraph, at most (a paragraph ends at its line break).")
@click.option("--seed", type=click.IntRange(min=0), help="First random seed (then +1 per paragraph).")
@click.option("--session", "session_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Autosave file. Default: FILE.session.json beside a text FILE, FILE itself for a session, "
              "else sessions/autosave.json in the ai-writer user folder.")
@click.option("--resume/--no-resume", default=None,
              help="Resume the autosaved session without asking (or start afresh without asking).")
@click.option("--paragraph/--no-paragraph", default=True, show_default=True,
              help="Stop writing at the end of a paragraph, or always write --len characters.")
@click.option("--plain", is_flag=True, help="Plain line input and output (also when TERM=dumb).")
@model_options
@sampling_options
def repl_command(file, length, seed, session_path, resume, paragraph, plain, model, vocab, unknown_char, backend, precision,
                 threads, **sampling):
    """An interactive writing session: Enter writes the next paragraph, /rewrite (Ctrl-R) rewrites it.

    \b
    FILE is a text opening or a saved session; without it the REPL asks for an opening.
    Every change is autosaved to the session file. /help lists the commands.

    \b
    Examples:
      ai-writer repl opening.txt
      ai-writer repl story.session.json --temperature 0.9
    """
    settings = SamplerSettings(**sampling)
    if file is not None and not file.is_file():
        raise InputTextError(f"{file}: no such file")
    session_path = session_path or default_session_path(file)
    loaded = open_model(model, vocab, unknown_char, backend, precision, threads)
    click.echo(f"ai-writer: {loaded.describe()}", err=True)
    plain = plain or os.environ.get("TERM", "") == "dumb" or not sys.stdin.isatty()
    repl = Repl(loaded, None, settings=settings, length=length, seed=seed, session_path=session_path,
                paragraph=paragraph)
    repl.ui = PlainUI() if plain else PromptToolkitUI(lambda: repl.toolbar_text())
    context = click.get_current_context()  # options given on the command line win over a session's settings
    repl.explicit = frozenset(name for name in [*sampling, "length"]
                              if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT)

    resumed = False
    if session_path.is_file() and (file is None or file.resolve() != session_path.resolve()):
        resumed = _offer_resume(repl, session_path, resume)
    if not resumed and file is not None:
        repl.adopt(repl.load(file), repl.explicit)
    while not repl.doc.spans:
        try:
            opening = repl.ui.read("Opening> ")
        except (EOFError, KeyboardInterrupt):
            return
        if opening.strip() in ("/quit", "/q", "/exit"):
            return
        if opening.strip():
            from ai_writer.text.cleanup import clean_opening

            repl.add_writer_text(clean_opening(opening))
    repl.ui.info("Enter writes the next paragraph; /help lists the commands.")
    repl.show_story()
    repl.run()


def _offer_resume(repl: Repl, session_path: Path, resume: bool | None) -> bool:
    try:
        document = repl.load(session_path)
    except AiWriterError as exc:
        repl.ui.error(f"the autosaved session cannot be resumed: {exc}")
        return False
    if not document.spans or resume is False:
        return False
    if resume is None:
        try:
            answer = repl.ui.read(f"Resume the autosaved session {session_path} ({len(document)} characters)? [Y/n] ")
        except (EOFError, KeyboardInterrupt):
            answer = "n"
        if answer.strip().lower() not in ("", "y", "yes"):
            return False
    repl.adopt(document, repl.explicit)
    repl.ui.info(f"(resumed {len(document)} characters)")
    return True
