"""Which `.onnx` runs a model on the ONNX Runtime backends, exporting it once when there is none.

For a model file M (.safetensors or .pth) and a precision P, in this order:
1. M itself when it is an `.onnx` file;
2. the export beside it: `M.onnx` for fp32, `M.P.onnx` otherwise (what `ai-writer export onnx`
   writes); it must have been exported from this very model, or loading stops with an error;
3. the cache folder: `<fingerprint>-P-v<EXPORT_VERSION>.onnx`, exported there atomically on
   first use (a new version of the exporter makes new files, never reuses old ones).

A model's fingerprint reads its header and a few spread-out blocks of its bytes: cheap for a
file of gigabytes, stable when the file is copied, different when it is retrained.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

from ai_writer.errors import ModelFileError
from ai_writer.models.formats import recognise

EXPORT_VERSION = 4  # part of the cache file names: bump it when the exported graph changes
SAMPLED_BLOCKS = 16
BLOCK_BYTES = 65536


def fingerprint(path: str | os.PathLike) -> str:
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))  # the header of a safetensors file or a .pth zip
        for i in range(SAMPLED_BLOCKS):
            f.seek(size * i // SAMPLED_BLOCKS)
            digest.update(f.read(BLOCK_BYTES))
        f.seek(max(0, size - BLOCK_BYTES))
        digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()[:24]


def export_name(model_path: Path, precision: str) -> Path:
    """Where `ai-writer export onnx` puts the export by default: beside the model."""
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return model_path.with_name(model_path.stem + suffix)


def onnx_for(
    model_path: str | os.PathLike,
    kind: str,
    precision: str,
    cache_dir: str | os.PathLike | None,
    *,
    notify: Callable[[str], None] = lambda message: None,
) -> tuple[Path, str | None]:
    """The .onnx to run a model file of `kind` (models/formats.py), and the fingerprint its metadata must
    carry (None: not checked)."""
    model_path = Path(model_path)
    if kind == "onnx":
        return model_path, None
    source = fingerprint(model_path)
    beside = export_name(model_path, precision)
    if beside.is_file():
        return beside, source
    folder = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "ai-writer-onnx"
    cached = folder / f"{source}-{precision}-v{EXPORT_VERSION}.onnx"
    if not cached.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelFileError(f"{folder}: cannot create the ONNX cache folder ({exc.strerror})") from None
        export_model(model_path, cached, precision, source, kind=kind,
                     on_start=lambda: notify(f"exporting {model_path.name} to ONNX ({precision}) once; kept in {folder}"))
    return cached, source


def export_model(model_path: Path, out: Path, precision: str, source: str | None = None,
                 on_start: Callable[[], None] | None = None, kind: str | None = None) -> Path:
    """Export a model file to ONNX, streaming its tensors (export/onnx.py): a `.safetensors` without torch,
    a `.pth` through torch's memory-mapped loader. `on_start` is called once the file's tensors have
    been checked, before the export proper."""
    from ai_writer.export import onnx as onnx_export

    return onnx_export.export_file(model_path, out, precision, kind=kind or recognise(model_path),
                                   source=source or fingerprint(model_path), on_start=on_start)
