"""The `ai-writer` command line: the only place that reads options and environment variables.

Every command builds validated objects from its options and hands them down; domain errors
come back as one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from pathlib import Path

import click

from ai_writer import __version__
from ai_writer.cli.options import (EXIT_ERROR, guard_options, model_options, open_model, sampling_options,
                                   preset_option, sampler_settings, steering_options, template_option)
from ai_writer.cli.cache import cache_group
from ai_writer.cli.remote import remote_options, write_remote
from ai_writer.cli.model import export_group, info_command
from ai_writer.cli.serve import serve_command
from ai_writer.cli.train import eval_command, train_command
from ai_writer.errors import AiWriterError, InputTextError, torch_missing
from ai_writer.cli.repl import repl_command
from ai_writer.text.templates import template_named


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ai-writer")
def cli():
    """ai-writer: continue a novel with a local RWKV model, offline.

    \b
    Examples:
      ai-writer continue --len 500 < opening.txt
      ai-writer continue --model my.pth --runs 3 --seed 7 opening.txt
    """


@cli.command("continue")
@click.argument("file", default="-", type=click.Path(allow_dash=True, dir_okay=False, path_type=Path))
@click.option("-n", "--len", "length", type=click.IntRange(min=1), default=500, show_default=True,
              help="Characters to write.")
@click.option("--runs", type=click.IntRange(min=1, max=64), default=1, show_default=True,
              help="Independent continuations, written together as one batch.")
@click.option("--stop", multiple=True, help="Stop a continuation just before this text (repeatable).")
@click.option("--seed", type=click.IntRange(min=0), help="Random seed, for a reproducible continuation.")
@click.option("--raw", is_flag=True, help="Feed the opening as it is, without the AI-Writer clean-up.")
@click.option("--format", "output_format", type=click.Choice(["text", "jsonl"]), default="text", show_default=True,
              help="jsonl: one JSON object per line, for programs.")
@click.option("--no-stream", is_flag=True, help="Print each continuation only when it is complete.")
@click.option("-q", "--quiet", is_flag=True, help="No status lines on stderr.")
@guard_options
@steering_options
@remote_options
@model_options
@template_option
@sampling_options
@preset_option
def continue_command(file, length, runs, stop, seed, raw, output_format, no_stream, quiet, guards, steering,
                     steering_given, remote, model, vocab, unknown_char, backend, precision, threads, template,
                     preset, **sampling):
    """Continue the opening in FILE (or stdin) and stream the new text to stdout.

    \b
    The opening is cleaned up as AI-Writer does (whitespace at the ends of lines and
    blank lines removed, a newline put in front) unless --raw is given.

    \b
    Banned phrases (--ban, --ban-file) are never written, and a loop (the same span
    written 3 times in a row) is undone: the model is rewound to before it and writes
    something else; stderr says how often that happened.

    \b
    Examples:
      ai-writer continue --len 500 < opening.txt
      ai-writer continue opening.txt --runs 3 --seed 42 --format jsonl
      ai-writer continue opening.txt --ban 不知道 --ban-file cliches.txt
      ai-writer continue chapter.txt --memory premise.txt --lore world.json --note "下一段写主角离开京城"
      ai-writer continue --remote http://big-machine:8266 < opening.txt
      ai-writer continue --preset 稳健 < opening.txt
    """
    import numpy as np

    from ai_writer.text.cleanup import clean_opening
    from ai_writer.text.punctuation import writes_modern
    from ai_writer.generation.generator import Generator, RunResult

    settings = sampler_settings(preset, sampling)
    template = template_named(template)
    opening = _read_text(file)
    if not opening.strip():
        raise InputTextError(f"{_name(file)}: the opening is empty; give some text to continue")
    context = opening if raw else clean_opening(opening)
    seed = secrets.randbelow(2**31) if seed is None else seed
    if remote is not None:  # written by a server: no local model
        write_remote(remote, context, _Output(output_format, runs, stream=not no_stream, seed=seed), length=length,
                     runs=runs, settings=settings, seed=seed, stop=stop, bans=guards.bans, quiet=quiet,
                     steering=steering, template=template, extra={"loop_guard": guards.loop_guard})
        return
    loaded = open_model(model, vocab, unknown_char, backend, precision, threads, quiet=quiet)
    if not raw and writes_modern(loaded.tokenizer):  # read the opening with the punctuation the model learned
        context = clean_opening(opening, modern_punctuation=True)
    status = (lambda message: None) if quiet else (lambda message: click.echo(message, err=True))
    status(f"ai-writer: {loaded.describe()}; seed {seed}")
    unknown = _unknown_characters(loaded.tokenizer, context)
    if unknown:
        status(f"ai-writer: {unknown}")

    generator = Generator(loaded.backend, loaded.tokenizer, settings, guards)
    began = time.perf_counter()
    start = _read_opening(generator, context, template, steering, progress=not quiet and sys.stderr.isatty())
    prefill_s = time.perf_counter() - began
    results: list[RunResult] = []
    out = _Output(output_format, runs, stream=not no_stream, seed=seed)
    for chunk in generator.stream(start, max_chars=length, runs=runs, rng=np.random.default_rng(seed), stop=stop,
                                  results=results):
        out.chunk(chunk.run, chunk.text)
        while results:
            out.finished(results.pop(0))
    for result in results:  # runs that ended with no new text (a stop string right away)
        out.finished(result)
    out.close()
    elapsed = time.perf_counter() - began - prefill_s
    status(f"ai-writer: read {len(context)} characters ({start.n_tokens} tokens) in {prefill_s:.2f} s, "
           f"wrote {out.total_chars} in {elapsed:.2f} s ({out.total_chars / max(elapsed, 1e-9):.1f} characters/s)")
    if out.rewinds:
        status(f"ai-writer: {_rewinds_line(out.rewinds, out.loop_rewinds)}")


def _rewinds_line(rewinds: int, loops: int) -> str:
    """E.g. "4 rewinds: 3 for banned phrases, 1 for a loop"."""
    def count(n: int, one: str, many: str) -> str:
        return f"{n} {one if n == 1 else many}"

    parts = [count(rewinds - loops, "for a banned phrase", "for banned phrases") if rewinds - loops else "",
             count(loops, "for a loop", "for loops") if loops else ""]
    return f"{count(rewinds, 'rewind', 'rewinds')}: {', '.join(p for p in parts if p)}"


def _read_opening(generator, context: str, template, steering, *, progress: bool):
    """The state to write from after the opening: with a steering block, the block is read between the opening
    before its last paragraph and that paragraph (story/steering.py), else the opening in one read."""
    import dataclasses

    from ai_writer.generation.guards import MAX_PHRASE_CHARS
    from ai_writer.generation.reading import Reader
    from ai_writer.generation.steering import BlockCache, read_steered
    from ai_writer.story.steering import paragraph_start

    block = steering.block(context)
    if not block:
        return _prefill(generator, template.wrap(context), progress=progress)
    reader = Reader(generator.backend, generator.tokenizer, template)
    cut = paragraph_start(context)
    before = _prefill(generator, template.before + context[:cut], progress=progress) if cut else None
    start = reader.writing_start(read_steered(reader, BlockCache(), before, block, context[cut:]))
    return dataclasses.replace(start, text_tail=context[-MAX_PHRASE_CHARS:])  # bans may begin in the story


def _unknown_characters(tokenizer, text: str) -> str:
    """A status line naming the characters of `text` the model's vocabulary lacks (read as the unknown
    character), or "" when there are none or the tokenizer reads every character (the world tokenizer)."""
    missing = getattr(tokenizer, "missing_characters", None)
    if missing is None:
        return ""
    counts = missing(text)
    if not counts:
        return ""
    total = sum(counts.values())
    shown = " ".join(char if char.isprintable() else f"U+{ord(char):04X}" for char in list(counts)[:20])
    more = f" and {len(counts) - 20} more" if len(counts) > 20 else ""
    return (f"{total} character{'s' if total != 1 else ''} of the opening {'are' if total != 1 else 'is'} not in "
            f"the model's vocabulary and read as unknown ({len(counts)} distinct: {shown}{more})")


def _prefill(generator, text: str, *, progress: bool):
    """Read the opening into the model; a long one on a terminal shows its progress on stderr. It is read in
    segments of whole backend prefill segments, so the state is the one a single read gives."""
    from ai_writer.backends.base import PREFILL_SEGMENT
    from ai_writer.generation.decode import Prefilled
    from ai_writer.generation.guards import MAX_PHRASE_CHARS

    segment = 16 * PREFILL_SEGMENT
    if not progress or len(text) <= segment:
        return generator.prefill(text)
    ids = generator.tokenizer.encode(text)
    if len(ids) <= segment:
        return generator.prefill(text)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    state = generator.backend.zero_state(1)
    columns = (TextColumn("reading the opening"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} tokens"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("read", total=len(ids))
        for begin in range(0, len(ids), segment):
            logits, state = generator.backend.forward([ids[begin : begin + segment]], state)
            bar.update(task, completed=min(begin + segment, len(ids)))
    return Prefilled(state=state, logits=logits[0], last_token=ids[-1], n_tokens=len(ids),
                     text_tail=text[-MAX_PHRASE_CHARS:])


class _Output:
    """Writes continuations to stdout as text or JSON lines, streaming run 0 live in text mode."""

    def __init__(self, output_format: str, runs: int, *, stream: bool, seed: int):
        self.format, self.runs, self.stream, self.seed = output_format, runs, stream, seed
        self.pending: dict[int, list[str]] = {run: [] for run in range(runs)}
        self.done: dict[int, object] = {}
        self.total_chars = 0
        self.rewinds = self.loop_rewinds = 0  # of all runs
        self.next_run = 0  # in text mode, runs are printed in order

    def chunk(self, run: int, text: str) -> None:
        self.total_chars += len(text)
        if self.format == "jsonl":
            if self.stream:
                self._write(json.dumps({"run": run, "delta": text}, ensure_ascii=False) + "\n")
        elif self.stream and run == self.next_run:
            self._write(text)
        else:
            self.pending[run].append(text)

    def finished(self, result) -> None:
        self.rewinds += result.rewinds
        self.loop_rewinds += result.loop_rewinds
        if self.format == "jsonl":
            record = {"run": result.run, "done": True, "text": result.text, "chars": len(result.text),
                      "finish_reason": result.finish_reason, "seed": self.seed, "rewinds": result.rewinds}
            self._write(json.dumps(record, ensure_ascii=False) + "\n")
            return
        self.done[result.run] = result
        while self.next_run in self.done:
            self._write("".join(self.pending.pop(self.next_run)))
            self.next_run += 1
            if self.next_run < self.runs:
                self._write(f"\n======== run {self.next_run + 1} of {self.runs} ========\n")
                if self.stream:
                    self._write("".join(self.pending[self.next_run]))
                    self.pending[self.next_run] = []

    def close(self) -> None:
        if self.format == "text" and sys.stdout.isatty():
            self._write("\n")  # leave the shell prompt on a line of its own

    @staticmethod
    def _write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()


@cli.command("bench")
@model_options
@click.option("--decode-tokens", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--prefill-tokens", type=click.IntRange(min=2), default=2000, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--compare", "configs", metavar="BACKEND[:PRECISION],...",
              help="Measure these configurations side by side, each in its own process, e.g. cpu:fp32,cpu:int8.")
@click.option("--reference", is_flag=True,
              help="With --compare: measure the official rwkv package (fp32, CPU) in the same run (pip install rwkv).")
@click.option("--bandwidth", is_flag=True, help="With --compare: measure the memory bandwidth, the bound of decoding.")
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --compare: interleaved rounds; the table shows medians and spreads.")
def bench_command(model, vocab, unknown_char, backend, precision, threads, decode_tokens, prefill_tokens, repeats,
                  configs, reference, bandwidth, rounds):
    """Measure decode and prefill speed and peak memory; one JSON line per figure.

    \b
    With --compare, a markdown table of several configurations side by side
    (and the rwkv package with --reference), medians over --rounds.

    \b
    Examples:
      ai-writer bench --model my.pth --threads 2
      ai-writer bench --model my.pth --threads 2 --compare cpu:fp32,cpu:int8,torch-cpu --reference --bandwidth
    """
    if configs:
        _bench_compare(model, configs, reference, bandwidth, threads, rounds, decode_tokens, prefill_tokens, repeats)
        return
    from ai_writer.bench.measure import measure

    loaded = open_model(model, vocab, unknown_char, backend, precision, threads, need_vocab=False)
    for figure in measure(loaded, threads=threads, decode_tokens=decode_tokens, prefill_tokens=prefill_tokens,
                          repeats=repeats):
        click.echo(json.dumps(figure))


def _bench_compare(model, configs, reference, bandwidth, threads, rounds, decode_tokens, prefill_tokens, repeats):
    from ai_writer.bench.compare import compare, parse_configs, stream_read_gbps, table
    from ai_writer.resources import default_model_path

    model = model or default_model_path()
    threads = threads or os.cpu_count() or 1  # the subprocesses get an explicit count, like the package
    series = compare(Path(model), parse_configs(configs), reference=reference, threads=threads, rounds=rounds,
                     decode_tokens=decode_tokens, prefill_tokens=prefill_tokens, repeats=repeats,
                     log=lambda line: click.echo(line, err=True))
    gbps, config = None, None
    if bandwidth:
        from ai_writer.models.formats import header_config, recognise

        gbps, config = stream_read_gbps(threads), header_config(model, recognise(model))
        click.echo(f"streaming read bandwidth, {threads} threads: {gbps:.1f} GB/s", err=True)
    click.echo(f"{Path(model).name}, {threads} threads, medians of {rounds} rounds (min-max):")
    click.echo(table(series, config=config, bandwidth_gbps=gbps))


cli.add_command(train_command)
cli.add_command(eval_command)
cli.add_command(info_command)
cli.add_command(export_group)
cli.add_command(repl_command)
cli.add_command(serve_command)
cli.add_command(cache_group)


def _name(file: Path) -> str:
    return "<stdin>" if str(file) == "-" else str(file)


def _read_text(file: Path) -> str:
    try:
        data = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        raise InputTextError(f"{file}: no such file") from None
    except OSError as exc:
        raise InputTextError(f"{file}: cannot read it ({exc.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputTextError(
            f"{_name(file)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        ) from None


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns every expected error into one line and exit code 2."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8")
    try:
        code = cli.main(args=argv, prog_name="ai-writer", standalone_mode=False)
    except AiWriterError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise  # a bug, or a broken install: its traceback shows
        click.echo(f"Error: {torch_missing('this command')}", err=True)  # the torch backends and training need it
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        click.echo(f"Error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (e.g. `| head`): stop quietly
        sys.exit(0)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
