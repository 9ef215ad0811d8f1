"""The REPL's commands as one table: name, aliases, arguments, help and handler.

`/help` is generated from the table; each handler receives the running `Repl` and the text
after the command name. Handlers raise AiWriterError for bad input; the REPL prints it as one
line and keeps going.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ai_writer.errors import AiWriterError, SettingsError
from ai_writer.generation.sampler import SamplerSettings

if TYPE_CHECKING:
    from ai_writer.repl.session import Repl


@dataclass(frozen=True)
class Command:
    name: str
    aliases: tuple[str, ...]
    args: str
    help: str
    handler: Callable[["Repl", str], None]


class Quit(Exception):
    """Raised by /quit: the REPL ends."""


def _no_args(arg: str, name: str) -> None:
    if arg:
        raise AiWriterError(f"/{name} takes no arguments")


def _int(arg: str, what: str, minimum: int = 1) -> int:
    try:
        value = int(arg)
    except ValueError:
        raise AiWriterError(f"{what} must be a whole number >= {minimum}, got {arg!r}") from None
    if value < minimum:
        raise AiWriterError(f"{what} must be a whole number >= {minimum}, got {value}")
    return value


def _path(arg: str, usage: str) -> Path:
    if not arg:
        raise AiWriterError(f"usage: {usage}")
    return Path(arg).expanduser()


def cmd_help(repl: "Repl", arg: str) -> None:
    repl.ui.info(help_text())


def cmd_write(repl: "Repl", arg: str) -> None:
    _no_args(arg, "write")
    repl.write_next()


def cmd_rewrite(repl: "Repl", arg: str) -> None:
    _no_args(arg, "rewrite")
    repl.rewrite()


def cmd_alt(repl: "Repl", arg: str) -> None:
    repl.alternatives(_int(arg or "3", "the number of alternatives"))


def cmd_pick(repl: "Repl", arg: str) -> None:
    repl.pick(_int(arg, "the alternative to keep") if arg else 1)


def cmd_undo(repl: "Repl", arg: str) -> None:
    _no_args(arg, "undo")
    repl.undo()


def cmd_redo(repl: "Repl", arg: str) -> None:
    _no_args(arg, "redo")
    repl.redo()


def cmd_edit(repl: "Repl", arg: str) -> None:
    repl.edit(_int(arg, "the paragraph number") if arg else None)


def cmd_set(repl: "Repl", arg: str) -> None:
    name, _, value = arg.partition(" ")
    name, value = name.strip().replace("-", "_"), value.strip()
    if not name or not value:
        raise AiWriterError("usage: /set NAME VALUE (see /settings for the names)")
    if name in ("len", "length"):
        repl.set_length(_int(value, "len"))
        return
    if name not in SamplerSettings.RANGES:
        names = ", ".join(list(SamplerSettings.RANGES) + ["len"])
        raise SettingsError(f"unknown setting {name!r}; valid settings: {names}")
    try:
        number = int(value) if name == "top_k" else float(value)
    except ValueError:
        raise SettingsError(f"{name} must be {SamplerSettings.range_text(name)}, got {value!r}") from None
    repl.set_settings(repl.settings.replace(**{name: number}))


def cmd_settings(repl: "Repl", arg: str) -> None:
    _no_args(arg, "settings")
    lines = [f"  {name} = {value:g}    ({SamplerSettings.range_text(name)})"
             for name, value in repl.settings.as_dict().items()]
    lines.append(f"  len = {repl.length}    (characters per paragraph, at most)")
    repl.ui.info("\n".join(lines))


def cmd_len(repl: "Repl", arg: str) -> None:
    repl.set_length(_int(arg, "len"))


def cmd_save(repl: "Repl", arg: str) -> None:
    repl.save(Path(arg).expanduser() if arg else None)


def cmd_export(repl: "Repl", arg: str) -> None:
    repl.export(_path(arg, "/export PATH"))


def cmd_open(repl: "Repl", arg: str) -> None:
    repl.open(_path(arg, "/open PATH"))


def cmd_show(repl: "Repl", arg: str) -> None:
    _no_args(arg, "show")
    repl.show_story()


def cmd_stats(repl: "Repl", arg: str) -> None:
    _no_args(arg, "stats")
    repl.ui.info(f"tokens fed to the model: {repl.backend.fed}; story: {len(repl.doc)} characters, "
                 f"{len(repl.doc.paragraphs())} paragraphs")


def cmd_quit(repl: "Repl", arg: str) -> None:
    raise Quit()


COMMANDS: tuple[Command, ...] = (
    Command("write", ("w",), "", "write the next paragraph (same as Enter on an empty prompt)", cmd_write),
    Command("rewrite", ("r",), "", "换个写法: replace the last model paragraph with a fresh one (Ctrl-R)", cmd_rewrite),
    Command("alt", (), "[N]", "write N alternatives for the next paragraph at once (default 3)", cmd_alt),
    Command("pick", (), "[K]", "keep alternative K (default 1)", cmd_pick),
    Command("undo", ("u",), "", "undo the last change", cmd_undo),
    Command("redo", (), "", "redo what was undone", cmd_redo),
    Command("edit", ("e",), "[K]", "edit paragraph K (default: the last one)", cmd_edit),
    Command("set", (), "NAME VALUE", "change a sampling setting, or len", cmd_set),
    Command("settings", (), "", "list the settings and their valid ranges", cmd_settings),
    Command("len", (), "N", "write at most N characters per paragraph", cmd_len),
    Command("show", (), "", "print the whole story", cmd_show),
    Command("save", (), "[PATH]", "save the session (JSON, with the model state) to PATH or the session file",
            cmd_save),
    Command("export", (), "PATH", "write the story as plain text", cmd_export),
    Command("open", (), "PATH", "open a saved session or a text file", cmd_open),
    Command("stats", (), "", "tokens fed to the model so far, story size", cmd_stats),
    Command("help", ("h", "?"), "", "this list", cmd_help),
    Command("quit", ("q", "exit"), "", "leave (the session is autosaved)", cmd_quit),
)


def find(name: str) -> Command | None:
    return next((c for c in COMMANDS if name == c.name or name in c.aliases), None)


def help_text() -> str:
    rows = []
    for c in COMMANDS:
        usage = f"/{c.name}" + (f" {c.args}" if c.args else "")
        aliases = f" (/{', /'.join(c.aliases)})" if c.aliases else ""
        rows.append(f"  {usage:<20} {c.help}{aliases}")
    rows.append("  Enter on an empty prompt writes the next paragraph; other text is yours, added to the story.")
    rows.append("  Ctrl-C while writing stops and keeps what was written.")
    return "Commands:\n" + "\n".join(rows)


def command_names() -> str:
    return " ".join(f"/{c.name}" for c in COMMANDS)
