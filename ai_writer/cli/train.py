"""`ai-writer train` and `ai-writer eval`: the command-line face of train.py and evaluate.py.

The main CLI adds them with `cli.add_command(train_command)` and `cli.add_command(eval_command)`;
bad input comes back as the typed errors of errors.py, which it turns into one-line messages.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from ai_writer.cli.options import model_options, open_model
from ai_writer.errors import SettingsError, torch_missing

_corpus_file = click.Path(dir_okay=False, path_type=Path)  # existence is checked with a typed error


def default_cache_dir() -> Path:
    return Path(click.get_app_dir("ai-writer")) / "corpus-cache"


@click.command("train")
@click.argument("corpus", nargs=-1, required=True, type=_corpus_file)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The model file to write (.safetensors, best weights). The resumable checkpoint goes beside "
                   "it as OUT.train.pt.")
@click.option("--n-layer", type=click.IntRange(min=1), default=6, show_default=True, help="Number of blocks.")
@click.option("--n-embd", type=click.IntRange(min=1), default=256, show_default=True, help="Model width.")
@click.option("--head-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Channels per head; --n-embd must be a multiple of it.")
@click.option("--ctx-len", type=click.IntRange(min=1), default=256, show_default=True,
              help="Characters per training window.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Windows per step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=6e-4, show_default=True,
              help="Peak learning rate (cosine decay to a tenth of it).")
@click.option("--min-char-count", type=click.IntRange(min=1), default=5, show_default=True,
              help="Characters seen fewer times in the training text become the unknown character.")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
              help="Train for about this long (the step count is fixed after timing a few steps). "
                   "Default: 60 unless --steps is given.")
@click.option("--steps", type=click.IntRange(min=1), help="Train for exactly this many steps.")
@click.option("--eval-every", type=click.IntRange(min=0), default=250, show_default=True,
              help="Score the held-out text every N steps and keep the best weights (0: only at the end).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=250, show_default=True,
              help="Write OUT.train.pt every N steps (0: only at the end and on Ctrl-C).")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in OUT.train.pt, with the settings stored there (--steps there sets a "
                   "new length for the run).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the weights and of the order of the training windows.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--dtype", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="bf16: compute in bfloat16 (autocast); the weights stay fp32.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads. Default: all cores.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where the tokenized corpus is kept for the next run. Default: the ai-writer user folder.")
@click.option("--init-from", type=click.Path(dir_okay=False, path_type=Path),
              help="Fine-tune: start from this ai-writer model (its weights, shape and vocabulary) instead of "
                   "random weights, e.g. the default model on your own novels.")
@click.option("--punctuation", type=click.Choice(["modern", "keep"]),
              help="modern: rewrite the corpus with modern punctuation (「」 as “”, ． as 。, ﹔ as ；...) and mark the "
                   "model so: it never writes the old marks and modernizes openings. keep: the text as it is. "
                   "Default: as the --init-from model, else keep.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or status lines.")
def train_command(corpus, out, n_layer, n_embd, head_size, ctx_len, batch_size, lr, min_char_count, minutes, steps,
                  eval_every, checkpoint_every, resume, seed, device, dtype, threads, cache_dir, init_from, punctuation,
                  quiet):
    """Train a character-level RWKV-7 model on CORPUS text files.

    \b
    Each file is UTF-8 text, one paragraph per line; the last 5 % of each
    file's lines are held out to score the model. Ctrl-C stops after the
    current step and saves OUT.train.pt; --resume continues from it.

    \b
    Examples:
      ai-writer train corpus/zh/*.txt --out my.safetensors --minutes 120
      ai-writer train novel.txt --out small.safetensors --n-layer 4 --n-embd 128 --steps 2000
      ai-writer train corpus/zh/*.txt --out my.safetensors --resume
      ai-writer train corpus/en/*.txt --out en.safetensors --device cuda --dtype bf16
      ai-writer train my_novels/*.txt --out mine.safetensors --init-from model/default.safetensors --lr 2e-4
      ai-writer train old_etexts/*.txt --out modern.safetensors --punctuation modern
    """
    from ai_writer.backends.select import torch_installed

    if not torch_installed():
        raise torch_missing("ai-writer train")
    from ai_writer.training.train import TrainOptions, train
    from ai_writer.training.progress import QuietProgress, RichProgress

    if minutes is not None and steps is not None:
        raise SettingsError("give either --minutes or --steps, not both")
    options = TrainOptions(
        corpus=tuple(str(p) for p in corpus), out=str(out), n_layer=n_layer, n_embd=n_embd, head_size=head_size,
        ctx_len=ctx_len, batch_size=batch_size, lr=lr, min_char_count=min_char_count, minutes=minutes, steps=steps,
        eval_every=eval_every, checkpoint_every=checkpoint_every, resume=resume, seed=seed, device=device,
        dtype=dtype, threads=threads, cache_dir=str(cache_dir or default_cache_dir()),
        init_from=None if init_from is None else str(init_from), punctuation=punctuation,
    )
    result = train(options, QuietProgress() if quiet else RichProgress())
    if result.interrupted:
        click.get_current_context().exit(130)
    if not quiet:
        best = "n/a" if result.best_val_bpc is None else f"{result.best_val_bpc:.4f}"
        click.echo(f"ai-writer: {result.step} steps; best held-out {best} bits per character; wrote {result.out}",
                   err=True)


@click.command("eval")
@click.argument("files", nargs=-1, required=True, type=_corpus_file)
@click.option("--all", "whole", is_flag=True, help="Score whole files, not only their held-out last 5 % of lines.")
@click.option("--punctuation", type=click.Choice(["modern", "keep"]),
              help="modern: score the text rewritten with modern punctuation, as `train --punctuation modern` "
                   "trains on it; keep: as it is. Default: modern for a model trained so, else keep.")
@model_options
def eval_command(files, whole, punctuation, model, vocab, unknown_char, backend, precision, threads):
    """Print the model's bits per character on FILES: one line per file and a total.

    \b
    By default only the held-out part of each file is scored (its last
    ceil(5 %) of lines, the part `ai-writer train` never trains on). The
    model reads a newline first and then predicts every character, the
    newline ending each line included. Columns: bits per character,
    characters, unknown characters (outside the model's vocabulary).

    \b
    Examples:
      ai-writer eval --model my.safetensors corpus/zh/*.txt
      ai-writer eval --model my.safetensors --all story.txt
      ai-writer eval --punctuation keep corpus/zh-hans/*.txt
    """
    from ai_writer.training.evaluate import evaluate_files
    from ai_writer.text.punctuation import writes_modern

    loaded = open_model(model, vocab, unknown_char, backend, precision, threads)
    modern = writes_modern(loaded.tokenizer) if punctuation is None else punctuation == "modern"
    results, total = evaluate_files(loaded.backend, loaded.tokenizer, files, all=whole, modern_punctuation=modern)
    width = max(len(r.name) for r in results + [total])
    click.echo(f"{'file'.ljust(width)}  {'bits/char':>9}  {'chars':>10}  {'unknown':>8}")
    for r in results + [total]:
        click.echo(f"{r.name.ljust(width)}  {_bpc(r.bits_per_character):>9}  {r.n_chars:>10,}  {r.n_unknown:>8,}")


def _bpc(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
