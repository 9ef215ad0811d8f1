"""`ai-writer repl`: the command that opens a model and a story and runs the interactive session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from ai_writer.cli.options import model_options, open_model, sampling_options, template_option
from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.repl.session import Repl
from ai_writer.repl.ui import PlainUI, PromptToolkitUI
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
@model_options
@template_option
@sampling_options
def repl_command(file, length, seed, session_path, resume, paragraph, plain, model, vocab, unknown_char, backend, precision,
                 threads, template, **sampling):
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
    template = template_named(template)
    if file is not None and not file.is_file():
        raise InputTextError(f"{file}: no such file")
    session_path = session_path or default_session_path(file)
    loaded = open_model(model, vocab, unknown_char, backend, precision, threads)
    click.echo(f"ai-writer: {loaded.describe()}", err=True)
    plain = plain or os.environ.get("TERM", "") == "dumb" or not sys.stdin.isatty()
    repl = Repl(loaded, None, settings=settings, length=length, seed=seed, session_path=session_path,
                paragraph=paragraph, template=template)
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
    except AiWriterError as exc:  # damaged: kept under another name, so the new autosave cannot overwrite it
        aside = move_aside(session_path)
        repl.ui.error(f"the autosaved session cannot be resumed: {exc}")
        repl.ui.info(f"(it is kept as {aside}; this session autosaves to {session_path} afresh)")
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
