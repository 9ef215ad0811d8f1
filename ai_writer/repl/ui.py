"""The REPL's two terminals: plain line input and output, and a prompt_toolkit prompt with a toolbar."""

from __future__ import annotations

import contextlib
import os
import sys

from ai_writer.story.document import MODEL


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

    @contextlib.contextmanager
    def progress(self, total: int, what: str):
        """While a long text is read: yields `done(n)`, told how many of `total` characters are read so far.
        Plain: a line at the start and at each quarter."""
        shown = [-1]

        def done(n: int) -> None:
            quarter = 4 * n // max(total, 1)
            if quarter > shown[0]:
                shown[0] = quarter
                self.info(f"({what}: {n:,} of {total:,} characters)")

        done(0)
        yield done


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

    @contextlib.contextmanager
    def progress(self, total: int, what: str):
        """A rich progress bar on the terminal (stdout) while a long text is read."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn(what), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} characters"),
                   TimeRemainingColumn())
        with Progress(*columns, console=Console(file=sys.stdout), transient=True) as bar:
            task = bar.add_task(what, total=total)
            yield lambda n: bar.update(task, completed=n)

    def story(self, text: str, author: str) -> None:
        colour = "\x1b[36m" if author == MODEL else ""
        sys.stdout.write(f"{colour}{text}\x1b[0m" if colour else text)
        sys.stdout.flush()

    def status(self, text: str) -> None:
        pass  # the bottom toolbar shows it
