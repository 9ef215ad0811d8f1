"""`ai-writer cache`: the ONNX exports kept in the cache folder, their sizes, and removing them."""

from __future__ import annotations

import datetime
from pathlib import Path

import click

from ai_writer.cli.options import CliError, onnx_cache_dir


@click.group("cache", invoke_without_command=True)
@click.pass_context
def cache_group(context):
    """List the ONNX exports ai-writer keeps (one per model and precision), with their sizes.

    \b
    A model runs on the cpu and dml backends from its export, made once on first use and kept
    in your cache folder. `ai-writer cache clear [MODEL]` removes them.

    \b
    Examples:
      ai-writer cache
      ai-writer cache clear my-model.pth
    """
    if context.invoked_subcommand is not None:
        return
    from ai_writer.export.cache import cached_exports

    folder = onnx_cache_dir()
    exports = cached_exports(folder)
    click.echo(f"{folder}: {len(exports)} export{'s' * (len(exports) != 1)}, "
               f"{sum(e.nbytes for e in exports) / 1e9:.2f} GB")
    for export in exports:
        made = datetime.datetime.fromtimestamp(export.files[0].stat().st_mtime).strftime("%Y-%m-%d %H:%M")
        note = "" if export.current else "  (an older exporter's: never used again; `ai-writer cache clear` removes it)"
        click.echo(f"  {export.source}  {export.precision:4}  {export.nbytes / 1e6:9.1f} MB  {made}{note}")


@cache_group.command("clear")
@click.argument("model", required=False, type=click.Path(dir_okay=False, path_type=Path))
def clear_command(model):
    """Remove the exports of MODEL (a model file), or every export when no MODEL is given."""
    from ai_writer.export.cache import remove_exports

    if model is not None and not model.is_file():
        raise CliError(f"{model}: no such model file")
    removed, freed = remove_exports(onnx_cache_dir(), model)
    click.echo(f"removed {removed} export{'s' * (removed != 1)} ({freed / 1e9:.2f} GB)"
               + (f" of {model}" if model is not None else ""))
