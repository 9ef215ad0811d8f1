"""`ai-writer info` and `ai-writer export onnx`: what runs a model, and exporting it for ONNX Runtime."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ai_writer.backends.select import PRECISIONS
from ai_writer.cli.options import CliError, model_options, onnx_cache_dir, open_model, plan_model


@click.command("info")
@model_options
def info_command(model, vocab, unknown_char, backend, precision, threads):
    """Show the model's configuration, the backend chosen and why, the providers, threads and precision.

    \b
    Examples:
      ai-writer info
      ai-writer info --model my.pth --backend cpu --precision int8
    """
    from ai_writer.backends.select import cuda_usable, nvidia_driver_present, onnx_providers

    # A model whose export is still to be made is described without making it (minutes for a big one)
    planned = plan_model(model, vocab, unknown_char, backend, precision)
    loaded = planned or open_model(model, vocab, unknown_char, backend, precision, threads)
    config = loaded.config
    providers = onnx_providers()
    rows = [
        ("model", str(loaded.path)),
        ("architecture", config.describe()),
        ("vocabulary", "none" if loaded.tokenizer is None else loaded.tokenizer.describe()
         if loaded.tokenizer.unknown_id is None else f"{loaded.tokenizer.vocab_size} characters, "
                                                     f"unknown character U+{ord(loaded.tokenizer.unknown_char):04X}"),
        ("backend", f"{loaded.choice.backend} ({loaded.choice.reason})"),
        ("precision", loaded.choice.precision + (f" ({loaded.choice.precision_reason})"
                                                 if loaded.choice.precision_reason else "")),
        ("threads", str(threads) if threads else f"default ({os.cpu_count()} cores on this machine)"),
        ("NVIDIA driver", "found" if nvidia_driver_present() else "not found"),
        ("ONNX Runtime providers", "onnxruntime not installed" if providers is None else ", ".join(providers)),
    ]
    if loaded.choice.backend == "cuda":
        rows.append(("CUDA usable", str(cuda_usable())))
    if loaded.choice.backend == "torch-cpu":
        from ai_writer.backends.cpu_features import bf16_matrix_instructions

        found = bf16_matrix_instructions()
        rows.append(("bf16 matrix instructions", "cannot tell with this torch" if found is None else found))
    if planned is not None:
        rows.append(("ONNX file", f"not made yet: the first `continue` exports the model ({loaded.choice.precision}) "
                                  f"into {onnx_cache_dir()}, once"))
    elif loaded.runs is not None:
        rows.append(("ONNX file", str(loaded.runs)))
        rows.append(("session providers", ", ".join(loaded.backend.providers())))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


@click.group("export")
def export_group():
    """Export a model for other runtimes."""


@export_group.command("onnx")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The .onnx file to write. Default: beside MODEL, as MODEL.onnx (fp32) or MODEL.PRECISION.onnx.")
@click.option("--precision", type=click.Choice([p for p in PRECISIONS if p != "bf16"]), default="fp32",
              show_default=True, help="fp32 for any provider, fp16 for GPUs (DirectML), int8 for the CPU.")
def export_onnx_command(model, out, precision):
    """Export MODEL (.safetensors or RWKV-7 .pth) to ONNX for ONNX Runtime (cpu and dml backends).

    \b
    The file holds one graph with dynamic batch and length: one token per row
    (writing) or a whole opening (reading), and the recurrent state in and out.
    An export beside the model is used by --backend cpu/dml instead of the cache.

    \b
    Examples:
      ai-writer export onnx model/default.safetensors
      ai-writer export onnx my.pth --precision int8 --out my-int8.onnx
    """
    from ai_writer.export.cache import export_model, export_name

    if not model.is_file():
        raise CliError(f"{model}: no such model file")
    if model.suffix.lower() == ".onnx":
        raise CliError(f"{model}: already an ONNX file")
    out = out or export_name(model, precision)
    from ai_writer.export.aiwriter import export_legacy

    if not export_legacy(model, out, precision):  # False: not an original AI-Writer release
        export_model(model, out, precision)
    data = out.with_name(out.name + ".data")
    size = out.stat().st_size + (data.stat().st_size if data.is_file() else 0)
    beside = f" and {data.name}" if data.is_file() else ""
    click.echo(f"ai-writer: wrote {out}{beside} ({size / 1e6:.1f} MB, {precision})", err=True)
