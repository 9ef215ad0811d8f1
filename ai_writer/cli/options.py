"""Options shared by the commands that run a model, and turning them into a loaded model."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import click

from ai_writer.backends.select import BACKENDS, DEFAULT_THREADS_HELP as THREADS_HELP, PRECISIONS
from ai_writer.generation.guards import (LOOP_MAX_PERIOD, LOOP_MIN_CHARS, LOOP_MIN_COPIES, MAX_PHRASE_CHARS,
                                         MAX_PHRASES, Guards, read_ban_file)
from ai_writer.errors import InputTextError, SettingsError
from ai_writer.files import read_text_file
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.story.lorebook import DEFAULT_SCAN
from ai_writer.story.steering import MAX_SCAN
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR

EXIT_ERROR = 2


class CliError(click.ClickException):
    exit_code = EXIT_ERROR


@dataclass(frozen=True)
class VocabOptions:
    """The files that go with the model: --vocab, --tokenizer and --state, handed to the commands as their one
    `vocab` argument."""

    path: Path | None = None  # --vocab
    tokenizer: str | Path | None = None  # --tokenizer: "char", "world" or a vocabulary file; None follows the model
    state: Path | None = None  # --state: a state-tuned start (a .pth or .safetensors of time_state)


def _tokenizer_choice(ctx, param, value):
    """--tokenizer: the words char and world, else the path of an existing vocabulary file."""
    if value is None or value in ("char", "world"):
        return value
    path = Path(value)
    if not path.is_file():
        raise click.BadParameter(f"{value!r} is neither char, world nor a vocabulary file", ctx, param)
    return path


THREADS_PER_CORE = 4  # --threads beyond this many per core only starves the machine


def _threads_bound(ctx, param, value):
    """--threads: at most THREADS_PER_CORE times this machine's cores."""
    cores = os.cpu_count() or 1
    if value is not None and value > THREADS_PER_CORE * cores:
        raise click.BadParameter(f"{value} is more than {THREADS_PER_CORE * cores} ({THREADS_PER_CORE} per core; "
                                 f"this machine has {cores})", ctx, param)
    return value


def model_options(command):
    """Options that choose and open a model; shared by every command that runs one."""

    @click.option(
        "-m",
        "--model",
        envvar="AI_WRITER_MODEL",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Model file (.safetensors, RWKV-7 .pth, or its .onnx export; or an original AI-Writer .pth/.onnx). "
        "Default: $AI_WRITER_MODEL, then the shipped model.",
    )
    @click.option(
        "--vocab",
        type=click.Path(dir_okay=False, path_type=Path),
        help="AI-Writer vocabulary JSON for a .pth model. Default: the .json beside the model with the same name.",
    )
    @click.option(
        "--tokenizer",
        metavar="char|world|PATH",
        callback=_tokenizer_choice,
        help="Override the tokenizer: char (the model's character vocabulary), world (the RWKV world tokenizer, "
        "rwkv_vocab_v20230424) or a vocabulary file (AI-Writer .json or RWKV vocabulary .txt). Default: follow the "
        "model: its stored vocabulary or NAME.json beside it, else world for a model of 65536 tokens.",
    )
    @click.option(
        "--unknown-char",
        default=UNKNOWN_CHAR,
        show_default="U+E083",
        help="The vocabulary's unknown character: text outside the vocabulary maps to it; it is never written.",
    )
    @click.option(
        "--backend",
        type=click.Choice(list(BACKENDS)),
        default="auto",
        show_default=True,
        help="Where the model runs: cuda (torch, NVIDIA), dml (ONNX Runtime DirectML, AMD/Intel on Windows), "
        "cpu (ONNX Runtime), torch-cpu. auto: cuda if an NVIDIA GPU is usable, else dml if installed, else cpu.",
    )
    @click.option(
        "--precision",
        type=click.Choice(["auto", *PRECISIONS]),
        default="auto",
        show_default=True,
        help="Number format: fp16/bf16/fp32 on cuda, fp16/fp32 on dml, fp32/int8/int4 on cpu, fp32/bf16 on "
        "torch-cpu. auto: on the CPU the most precise one whose weights fit the memory available (`ai-writer info` "
        "says which and why), fp16 on GPUs.",
    )
    @click.option("--threads", type=click.IntRange(min=1), callback=_threads_bound,
                  help=f"CPU threads for the model, at most {THREADS_PER_CORE} per core. Default: {THREADS_HELP}.")
    @click.option(
        "--state",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A state-tuned start (RWKV-5.2/6/7 time_state file, .pth or .safetensors): every text starts from it, "
        "the style preset RWKV Runner applies. Its shapes must be the model's.",
    )
    @functools.wraps(command)
    def wrapper(*args, vocab=None, tokenizer=None, state=None, **kwargs):
        return command(*args, vocab=VocabOptions(vocab, tokenizer, state), **kwargs)

    return wrapper


def template_option(command):
    """--template: what the model reads around the story (text/templates.py)."""
    return click.option(
        "--template",
        metavar="NAME|FILE",
        default="plain",
        show_default=True,
        help="Wrap the story the model reads (never the text you see or save): plain (as it is), longer (the "
        "RWKV-5 12B one-state card's 'User: make this content longer: ... Assistant: ok, longer content is'), or a "
        "file holding {story} where the story goes.",
    )(command)


def sampling_options(command):
    """The AI-Writer sampling settings, with their defaults and valid ranges in the help."""
    defaults = SamplerSettings()
    table = [
        ("--temperature", "temperature", float, "Randomness; 0 always takes the most likely character."),
        ("--top-p", "top_p", float, "Nucleus threshold inside a paragraph."),
        ("--top-p-newline", "top_p_newline", float, "Nucleus threshold right after a newline."),
        ("--allow-p", "allow_p", float, "Characters at least this likely stay allowed whatever top-p says."),
        ("--top-k", "top_k", int, "Keep at most this many candidates; 0 = no limit."),
        ("--presence-penalty", "presence_penalty", float, "Penalty for any character already written."),
        ("--frequency-penalty", "frequency_penalty", float, "Penalty per (decayed) repetition of a character."),
        ("--penalty-decay", "penalty_decay", float, "Per-character decay of the repetition counts."),
    ]
    for flag, name, kind, text in reversed(table):
        low, high = SamplerSettings.RANGES[name]
        valid = f"{low:g} to {high:g}" if high != float("inf") else f"at least {low:g}"
        command = click.option(
            flag, name, type=kind, default=getattr(defaults, name), show_default=True, help=f"{text} [{valid}]"
        )(command)
    return command


def _preset(ctx, param, value):
    """--preset: a preset's name (English in any case, or its Chinese title), checked here."""
    if value is None:
        return None
    from ai_writer.generation import presets

    try:
        return presets.find(value)
    except SettingsError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def preset_option(command):
    """--preset NAME: a named sampling setting (generation/presets.py); sampling options given as well apply on
    top of it."""
    from ai_writer.generation import presets

    names = "; ".join(f"{p.name} ({p.title['zh']}): {p.description['en']}" for p in presets.PRESETS)
    return click.option("--preset", callback=_preset, metavar="NAME",
                        help=f"Start from a named setting. {names} Sampling options given as well apply on top."
                        )(command)


def sampler_settings(preset, sampling: dict) -> SamplerSettings:
    """The sampling options as settings: those given on the command line (or by an environment variable) over the
    preset, or the options as they are when there is none."""
    if preset is None:
        return SamplerSettings(**sampling)
    context = click.get_current_context()
    given = {name: value for name, value in sampling.items()
             if context.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}
    return preset.settings().replace(**given)


def _phrase(ctx, param, values):
    """--ban: each phrase must hold something besides whitespace."""
    for value in values:
        if not value.strip():
            raise click.BadParameter("the phrase is empty", ctx, param)
    return values


def guard_options(command):
    """--ban, --ban-file and --no-loop-guard, handed to the command as its one `guards` argument (a Guards)."""

    @click.option("--ban", "bans", metavar="TEXT", multiple=True, callback=_phrase,
                  help=f"Never write this phrase (repeatable; at most {MAX_PHRASES}, {MAX_PHRASE_CHARS} characters "
                  f"each): the model is rewound and writes something else.")
    @click.option("--ban-file", type=click.Path(dir_okay=False, path_type=Path),
                  help="Never write the phrases of this UTF-8 file: one a line; blank lines and lines starting "
                  "with # are skipped.")
    @click.option("--no-loop-guard", is_flag=True,
                  help=f"Let the model repeat itself: by default a span of up to {LOOP_MAX_PERIOD} characters "
                  f"written {LOOP_MIN_COPIES} times in a row (at least {LOOP_MIN_CHARS} characters) is undone.")
    @functools.wraps(command)
    def wrapper(*args, bans=(), ban_file=None, no_loop_guard=False, **kwargs):
        phrases = [*bans, *(read_ban_file(ban_file) if ban_file is not None else [])]
        return command(*args, guards=Guards.from_phrases(phrases, loop_guard=not no_loop_guard), **kwargs)

    return wrapper


def steering_options(command):
    """--memory, --note, --lore and --lore-scan, handed to the command as `steering` (a story.steering.Steering)
    and `steering_given` (the names of the parts the command line gave, which win over a saved session's)."""

    @click.option("--memory", "memory_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="A UTF-8 text file whose text is the memory (premise, characters, setting): read before "
                  "the paragraph the model continues, never part of the story.")
    @click.option("--note", help="The author's note: a short direction read just before the paragraph.")
    @click.option("--lore", "lore_file", type=click.Path(dir_okay=False, path_type=Path),
                  help="A lorebook: 'key, key: text' lines, or JSON world info (KoboldAI, SillyTavern, character "
                  "cards); an entry is read when a key appears in the recent story.")
    @click.option("--lore-scan", type=click.IntRange(min=1, max=MAX_SCAN), default=DEFAULT_SCAN, show_default=True,
                  help="Characters at the end of the story searched for lore keys.")
    @functools.wraps(command)
    def wrapper(*args, memory_file=None, note=None, lore_file=None, lore_scan=DEFAULT_SCAN, **kwargs):
        from ai_writer.story.lorebook import read_lorebook
        from ai_writer.story.steering import Steering

        parts: dict = {}
        if memory_file is not None:
            parts["memory"] = read_text_file(memory_file, "memory file")[1].strip()
        if note is not None:
            parts["note"] = note.strip()
        if lore_file is not None:
            parts["lorebook"] = read_lorebook(lore_file)
        if lore_scan != DEFAULT_SCAN:
            parts["scan"] = lore_scan
        return command(*args, steering=Steering(**parts), steering_given=frozenset(parts), **kwargs)

    return wrapper


def _model_named(model, unknown_char) -> Path:
    """The model the options name: --model, $AI_WRITER_MODEL (click fills it in), else the shipped one."""
    from ai_writer.resources import default_model_path

    if model is None:
        model = default_model_path()
        if model is None:
            raise CliError("no model given and no default model is installed; pass --model PATH or set AI_WRITER_MODEL")
    if len(unknown_char) != 1:
        raise CliError(f"--unknown-char must be one character, got {unknown_char!r}")
    return model


def plan_model(model, vocab: VocabOptions, unknown_char, backend, precision):
    """What opening the model would run, when that means exporting it first (backends/open.py, plan_export);
    else None."""
    from ai_writer.backends.open import plan_export

    if vocab.state is not None:  # a state file is checked against the model as it opens
        return None
    return plan_export(_model_named(model, unknown_char), vocab_path=vocab.path, tokenizer=vocab.tokenizer,
                       unknown_char=unknown_char, backend=backend, precision=precision, onnx_cache=onnx_cache_dir())


def open_model(model, vocab: VocabOptions | Path | None, unknown_char, backend, precision, threads,
               need_vocab: bool = True, quiet: bool = False):
    """Open the model the options name (see _model_named)."""
    from ai_writer.backends.open import load_model

    vocab = vocab if isinstance(vocab, VocabOptions) else VocabOptions(vocab)
    model = _model_named(model, unknown_char)
    return load_model(model, vocab_path=vocab.path, tokenizer=vocab.tokenizer, unknown_char=unknown_char,
                      backend=backend, precision=precision, state_file=vocab.state,
                      threads=threads, need_vocab=need_vocab, onnx_cache=onnx_cache_dir(),
                      notify=(lambda message: None) if quiet else (lambda message: click.echo(f"ai-writer: {message}",
                                                                                               err=True)))


def onnx_cache_dir() -> Path:
    """Where models are exported to ONNX on first use: the user's cache folder (~/.cache/ai-writer/onnx under
    XDG, the usual places on macOS and Windows)."""
    from ai_writer.export.cache import default_cache_dir

    return default_cache_dir()
