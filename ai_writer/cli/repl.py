"""`ai-writer repl`: the command that opens a model and a story and runs the interactive session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ai_writer.cli.options import (guard_options, model_options, open_model, sampling_options, steering_options,
                                   template_option)
from ai_writer.cli.remote import RemoteOptions, remote_options
from ai_writer.errors import AiWriterError, BackendError, InputTextError
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.repl.files import read_story_file, story_text_path
from ai_writer.repl.session import SHOWN_ON_OPEN, Repl
from ai_writer.repl.ui import PlainUI, PromptToolkitUI
from ai_writer.repl.writer import LocalWriter, RemoteWriter
from ai_writer.story.document import is_session_file, move_aside
from ai_writer.text.templates import template_named


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
@remote_options
@model_options
@template_option
@steering_options
@guard_options
@sampling_options
def repl_command(file, length, seed, session_path, resume, paragraph, plain, remote, model, vocab, unknown_char,
                 backend, precision, threads, template, steering, steering_given, guards, **sampling):
    """An interactive writing session: Enter writes the next paragraph, /rewrite (Ctrl-R) rewrites it.

    \b
    FILE is a text opening, a whole manuscript, or a saved session; a FILE that does not exist
    yet is a new story (the REPL asks for its opening); without FILE the REPL asks for an
    opening. A manuscript is read once, chapter by chapter, with a progress bar.
    Every change is autosaved to the session file; /save writes it and the story's text file.
    --memory, --note, --lore(-scan) and --ban(-file) replace what the session had.
    /help lists the commands.

    \b
    With --remote URL the paragraphs are written by a server (ai-writer serve on
    another machine, or any OpenAI-compatible /v1/completions one) instead of a
    local model; session files then keep no model state.

    \b
    Examples:
      ai-writer repl opening.txt
      ai-writer repl novel.txt --lore world.json --memory premise.txt --ban 突然
      ai-writer repl story.session.json --temperature 0.9
      ai-writer repl opening.txt --remote http://big-machine:8266
    """
    settings = SamplerSettings(**sampling)
    template = template_named(template)
    context = click.get_current_context()  # options given on the command line win over a session's settings
    given = {name for name in [*sampling, "length", "bans", "ban_file"]
             if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    given |= {"bans"} if given & {"bans", "ban_file"} else set()
    if file is not None and file.exists() and not file.is_file():
        raise InputTextError(f"{file}: not a file")
    session_path = session_path or default_session_path(file)
    if remote is not None:
        writer = _remote_writer(remote, template)
    else:
        loaded = open_model(model, vocab, unknown_char, backend, precision, threads)
        click.echo(f"ai-writer: {loaded.describe()}", err=True)
        writer = LocalWriter(loaded, template)
    plain = plain or os.environ.get("TERM", "") == "dumb" or not sys.stdin.isatty()
    repl = Repl(writer, None, settings=settings, length=length, seed=seed, session_path=session_path,
                paragraph=paragraph, steering=steering, guards=guards, text_path=file)
    repl.ui = PlainUI() if plain else PromptToolkitUI(lambda: repl.toolbar_text())
    repl.explicit = frozenset(given | steering_given)

    resumed = False
    if session_path.is_file() and (file is None or file.resolve() != session_path.resolve()):
        resumed = _offer_resume(repl, session_path, resume, file)
    if file is not None and is_session_file(file):
        repl.text_path = story_text_path(file)
    if not resumed and file is not None and file.is_file():
        repl.adopt(repl.load(file, allow_empty=True), repl.explicit)
    if file is not None and not file.exists():
        repl.ui.info(f"(a new story: {file} does not exist yet; /save writes it, and the session to {session_path})")
    repl.read_through()
    while not repl.doc.spans:
        try:
            opening = repl.ui.read("Opening> ")
        except (EOFError, KeyboardInterrupt):
            return
        if opening.strip() in ("/quit", "/q", "/exit"):
            return
        if opening.strip():
            from ai_writer.text.cleanup import clean_opening
            from ai_writer.text.punctuation import writes_modern

            modern = remote is None and writes_modern(loaded.tokenizer)  # a remote engine: its text as typed
            repl.add_writer_text(clean_opening(opening, modern_punctuation=modern))
    repl.ui.info("Enter writes the next paragraph; /help lists the commands.")
    repl.show_story(SHOWN_ON_OPEN)
    repl.run()


def _remote_writer(remote: RemoteOptions, template) -> RemoteWriter:
    """The server that writes (--remote), asked what it is; one that cannot be reached now is said so, and the REPL
    starts all the same (the story can be read and edited; each write asks the server again)."""
    writer = RemoteWriter(remote.engine(), template)
    try:
        click.echo(f"ai-writer: {writer.connect()}", err=True)
    except BackendError as exc:
        click.echo(f"ai-writer: {exc}; each write tries again", err=True)
    return writer


def _offer_resume(repl: Repl, session_path: Path, resume: bool | None, file: Path | None = None) -> bool:
    try:
        document = repl.load(session_path)
    except AiWriterError as exc:  # damaged: kept under another name, so the new autosave cannot overwrite it
        aside = move_aside(session_path)
        repl.ui.error(f"the autosaved session cannot be resumed: {exc}")
        repl.ui.info(f"(it is kept as {aside}; this session autosaves to {session_path} afresh)")
        return False
    if not document.spans or resume is False:
        return False
    if resume is None and file is not None and file.is_file() and not is_session_file(file) \
            and _holds(repl, file, document.text):
        resume = True  # the session is of this very text: its saved states are used, nothing asked
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


def _holds(repl: Repl, file: Path, story: str) -> bool:
    """Whether a text file holds `story`: as /save writes it, or as it reads once tidied (then it is the story's
    own file, which /save may write)."""
    try:
        data, text = read_story_file(file)
    except AiWriterError:
        return False
    if data.decode("utf-8-sig") == story.lstrip("\n") or text == story:
        repl.text_files.remember(file, data)
        return True
    return False
