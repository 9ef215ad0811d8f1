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
from ai_writer.story.chapters import split_chapters
from ai_writer.story.lorebook import parse_line, read_lorebook

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


def cmd_preset(repl: "Repl", arg: str) -> None:
    from ai_writer.generation import presets

    if not arg:
        current = presets.matching(repl.settings)
        repl.ui.info("\n".join(f"  {'*' if p is current else ' '} {p.name:<9} {p.title['zh']:<8} "
                               f"{p.description['zh']}  {p.description['en']}" for p in presets.PRESETS))
        return
    repl.set_settings(presets.find(arg).settings())


def cmd_len(repl: "Repl", arg: str) -> None:
    repl.set_length(_int(arg, "len"))


def cmd_save(repl: "Repl", arg: str) -> None:
    repl.save(Path(arg).expanduser() if arg else None)


def cmd_export(repl: "Repl", arg: str) -> None:
    repl.export(_path(arg, "/export PATH"))


def cmd_open(repl: "Repl", arg: str) -> None:
    repl.open(_path(arg, "/open PATH"))


def cmd_show(repl: "Repl", arg: str) -> None:
    repl.show_story(_int(arg, "the number of paragraphs") if arg else None)


def cmd_stats(repl: "Repl", arg: str) -> None:
    _no_args(arg, "stats")
    repl.ui.info(f"{repl.writer.usage()}; story: {len(repl.doc)} characters, "
                 f"{len(repl.doc.paragraphs())} paragraphs")


def _shown(text: str) -> str:
    return text if text else "(none)"


def cmd_memory(repl: "Repl", arg: str) -> None:
    steering = repl.steering
    if arg.lower() == "clear":
        memory = ""
    elif arg:
        memory = arg
    else:
        memory = repl.ui.edit("memory> ", steering.memory)
        if memory == steering.memory:
            repl.ui.info("(unchanged)")
            return
    repl.set_steering(steering.with_(memory=memory.strip()),
                      f"(memory: {_shown(memory.strip())})")


def cmd_note(repl: "Repl", arg: str) -> None:
    steering = repl.steering
    if not arg:
        repl.ui.info(f"author's note: {_shown(steering.note)}")
        return
    note = "" if arg.lower() == "clear" else arg
    repl.set_steering(steering.with_(note=note), f"(author's note: {_shown(note)})")


LORE_USAGE = "/lore add KEY, KEY: TEXT | /lore list | /lore rm N | /lore load FILE"


def cmd_lore(repl: "Repl", arg: str) -> None:
    action, _, rest = arg.partition(" ")
    action, rest = action.lower(), rest.strip()
    steering = repl.steering
    book = steering.lorebook
    if action == "add" and rest:
        entry = parse_line(rest)
        repl.set_steering(steering.with_(lorebook=book.add(entry)), f"(lore entry {len(book) + 1}: {entry.label()})")
    elif action in ("list", "") and not rest:
        if not len(book):
            repl.ui.info("the lorebook is empty; /lore add KEY, KEY: TEXT adds an entry")
            return
        active = {id(e) for e in steering.active(repl.doc.text)}
        lines = [f"  {'*' if id(e) in active else ' '} {k}. {e.label()}: {e.text}" for k, e in enumerate(book.entries, 1)]
        repl.ui.info("\n".join(lines) + "\n  (* = active now: a key is in the last "
                     f"{steering.scan:,} characters of the story)")
    elif action in ("rm", "remove", "del") and rest:
        number = _int(rest, "the lore entry number")
        removed = book.entries[number - 1].label() if 1 <= number <= len(book) else ""
        repl.set_steering(steering.with_(lorebook=book.remove(number)), f"(lore entry {number} removed: {removed})")
    elif action == "load" and rest:
        loaded = read_lorebook(_path(rest, "/lore load FILE"))
        for entry in loaded.entries:
            if entry not in book.entries:
                book = book.add(entry)
        repl.set_steering(steering.with_(lorebook=book), f"({len(loaded)} entries read from {rest}; the lorebook "
                                                         f"has {len(book)})")
    else:
        raise AiWriterError(f"usage: {LORE_USAGE}")


def cmd_ban(repl: "Repl", arg: str) -> None:
    bans = repl.guards.bans
    action, _, rest = arg.partition(" ")
    if not arg or (action.lower() == "list" and not rest.strip()):
        if not bans:
            repl.ui.info("no banned phrases; /ban PHRASE adds one")
        else:
            repl.ui.info("\n".join(f"  {k}. {phrase}" for k, phrase in enumerate(bans, 1)))
    elif action.lower() in ("rm", "remove", "del") and rest.strip():
        number = _int(rest.strip(), "the banned phrase number")
        if number > len(bans):
            raise AiWriterError(f"there is no banned phrase {number}; there are {len(bans)}")
        repl.set_bans(bans[: number - 1] + bans[number:], f"(no longer banned: {bans[number - 1]})")
    else:
        phrase = arg.strip()
        if phrase in bans:
            raise AiWriterError(f"{phrase!r} is banned already")
        repl.set_bans(bans + (phrase,), f"(banned: {phrase}; the model never writes it)")


def cmd_chapters(repl: "Repl", arg: str) -> None:
    _no_args(arg, "chapters")
    chapters = split_chapters(repl.doc.text)
    if not chapters:
        repl.ui.info("the story is empty")
        return
    kept = repl.doc.kept_offsets()
    lines = [f"  {c.number:>3}. {c.title or '(before the first heading)'}  at {c.begin:,}, {c.chars:,} characters"
             + ("  [state kept]" if kept.get(c.begin) else "") for c in chapters]
    repl.ui.info("\n".join(lines))


def cmd_chapter(repl: "Repl", arg: str) -> None:
    if not arg:
        raise AiWriterError("usage: /chapter TITLE (e.g. /chapter 第十章 风起)")
    repl.new_chapter(arg)


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
    Command("preset", (), "[NAME]", "use a named setting: steady 稳健, balanced 平衡, bold 奔放, novel (the RWKV "
            "guide's); no NAME: list them", cmd_preset),
    Command("len", (), "N", "write at most N characters per paragraph", cmd_len),
    Command("show", (), "[N]", "print the story with its paragraphs numbered (the last N only, if given)",
            cmd_show),
    Command("memory", ("mem",), "[TEXT|clear]", "edit the memory (read before each paragraph, never part of "
            "the story); TEXT sets it", cmd_memory),
    Command("note", (), "[TEXT|clear]", "show or set the author's note (read just before the paragraph)", cmd_note),
    Command("lore", (), "add|list|rm|load", "/lore add KEY, KEY: TEXT; /lore list (* = active now); /lore rm N; "
            "/lore load FILE (lines or JSON world info)", cmd_lore),
    Command("ban", (), "PHRASE|list|rm",  "never write PHRASE; /ban list; /ban rm N", cmd_ban),
    Command("chapters", (), "", "list the chapters: number, title, where it begins, its length", cmd_chapters),
    Command("chapter", (), "TITLE", "start a new chapter: TITLE on a line of its own between blank lines",
            cmd_chapter),
    Command("save", (), "[PATH]", "save the session (JSON; with a local model, its states too) to PATH or the "
            "session file, and the story's text file", cmd_save),
    Command("export", (), "PATH", "write the story as plain text", cmd_export),
    Command("open", (), "PATH", "open a saved session or a text file", cmd_open),
    Command("stats", (), "", "what the model has read and written so far (or what was sent to --remote), story "
            "size", cmd_stats),
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
        rows.append(f"  {usage:<22} {c.help}{aliases}")
    rows.append("  Enter on an empty prompt writes the next paragraph; other text is yours, added to the story.")
    rows.append("  Ctrl-C while writing stops and keeps what was written.")
    rows.append("  Chapters begin at a line of at most 40 characters that starts with 第N章/回/节/卷 (Chinese or "
                "Arabic numerals),\n  卷N, 序章/楔子/尾声/番外, a Markdown # heading or Chapter N / CHAPTER IV; or at a "
                "short line (at most 30\n  characters, no sentence punctuation) standing alone between blank lines.")
    return "Commands:\n" + "\n".join(rows)


def command_names() -> str:
    return " ".join(f"/{c.name}" for c in COMMANDS)
