"""Export an RWKV-7, RWKV-6 or RWKV-5.2 model to one `.onnx` file for ONNX Runtime (the cpu and dml backends).

The export streams: `export_file` reads the model file one tensor at a time from a memory map
(models/tensors.py), each weight is prepared, converted or quantized and appended to the
external-data file at once (export/weights.py), and nothing of it is kept; so the whole model
is never held in memory, in fp32 or otherwise. `.safetensors` and `.pth` models export with numpy
alone (no torch; a `.pth`'s pickle is read by the restricted unpickler, which runs nothing).
`export_checkpoint` exports a Checkpoint already open in this process (a model just trained).

The file: opset 21, one graph (built in models/rwkv/onnx_v7.py, or onnx_v5.py for RWKV-5.2
and RWKV-6) with inputs `tokens` int64 (B, T) and each layer's state `att_shift.i` (1, B, C),
`wkv.i` (B, H, N, N), `ffn_shift.i` (1, B, C), all float32, and outputs `logits` (B, V) for the
last position and `new_att_shift.i`, `new_wkv.i`, `new_ffn_shift.i`: layer i's part of the state
of rwkv7.RWKV7State (every version's torch state), whose stacked (L, B, ...) arrays the backend
binds slice by slice. Its metadata_props: `ai_writer_format` (FORMAT),
`config` (ModelConfig JSON), `precision`, `source` (a fingerprint of the model file it came
from, chosen by the caller), and `vocab`, `unknown_char` when the model carries a vocabulary.
Weights of 64 KiB or more are in one `NAME.onnx.data` beside it, each at a 64 KiB boundary.

Graph design (models/rwkv/onnx_v7.py; onnx_v5.py follows it): one layer stack for any T, each
weight one node, an If per layer on T == 1 between the step and the chunked recurrence. Measured
against the design it replaced (an If reading the first T - 1 tokens through a chunked copy of
the whole stack, the step form on the last token) on the RWKV-7 1.5B layout in int8, 2 threads,
designs alternating, quiet machine (benchmarks/RESULTS.md, "Big models, session 6"): session
start 2.42-2.44 s -> 1.38-1.46 s (each matrix packed once instead of twice), decode step
72.9-78.4 ms -> 72.5-75.2 ms. Against a decode-only graph (no If at all), measured on the
previous design: 3.5 ms of a 77 ms step; benchmarks/onnx_decode_design.py measures the cost of
the file's design against a decode-only graph.

Precisions: `fp32`; `fp16` (weights and activations fp16 for GPU providers, the decay and
the wkv recurrence in fp32, inputs and outputs float32; it runs on the CPU too, slowly, through
casts ONNX Runtime inserts); `int8` and `int4`: the projection and FFN matrices as ONNX
Runtime's MatMulNBits with 8- or 4-bit weights, one scale per block (export/weights.py has the
table of what each weight becomes); the head quantized too, the embedding fp16 (gathered, then
widened), the low-rank matrices 8-bit (a layer's four input-side ones as one matrix reading
[x, previous - x]: onnx_v7.low_rank_inputs). The first int8 export
(quantize_dynamic's MatMulInteger, per column) decoded 1.6x as fast as fp32 on one thread;
MatMulNBits reads the same bytes in one kernel without the separate activation-quantization
nodes (benchmarks/RESULTS.md, runtime backends). Agreement with fp32 on the shipped model is
tested (tests/test_onnx_export.py): top character along fp32's greedy path, and held-out bits
per character.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from ai_writer.errors import ModelFileError, SettingsError
from ai_writer.export.weights import WeightWriter, write_model
from ai_writer.files import atomic_files
from ai_writer.models.checkpoint import NATIVE_FORMAT  # torch-free: torch is imported only for .pth files
from ai_writer.models.config import ModelConfig
from ai_writer.models.onnx_file import ONNX_FORMAT as FORMAT
from ai_writer.models.tensors import TensorSource, open_tensors
from ai_writer.models.version import NAMES

PRECISIONS = ("fp32", "fp16", "int8", "int4")


def export_onnx(weights: TensorSource | Mapping[str, np.ndarray], config: ModelConfig, out: str | os.PathLike, *,
                precision: str = "fp32", metadata: Mapping[str, str] | None = None,
                source_name: str = "weights", on_start: Callable[[], None] | None = None) -> Path:
    """Write the ONNX export of a model given as standard RWKV-7, RWKV-6 or RWKV-5.2 tensors: a TensorSource
    (read one tensor at a time: the streaming export) or a mapping of numpy arrays.

    `metadata` adds string entries (vocab, unknown_char, source) to the file's metadata_props;
    `source_name` names the weights in error messages. Returns the path written: `out`, with the
    weights in `out.data` beside it (`NAME.onnx.data`) unless they are all small.
    """
    if config.version == 7:
        from ai_writer.models.rwkv import onnx_v7 as onnx_graph
    else:
        from ai_writer.models.rwkv import onnx_v5 as onnx_graph  # RWKV-5.2 and RWKV-6

    if precision not in PRECISIONS:
        raise SettingsError(f"precision {precision!r}: an ONNX export is one of {', '.join(PRECISIONS)}")
    out = Path(out)
    folder = out.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        reason = "no such folder" if not folder.exists() else "not a folder" if not folder.is_dir() else "not writable"
        raise ModelFileError(f"{folder}: cannot write the ONNX export there ({reason})")
    _check_weights(weights, config, source_name)
    if on_start is not None:
        on_start()  # the weights are good: the (slower) graph building and writing begin
    data_name = out.name + ".data"
    try:
        with atomic_files(out.with_name(data_name), out) as staging:
            with open(staging / data_name, "wb") as data:
                writer = WeightWriter(data, data_name, precision)
                model = onnx_graph.build_model(onnx_graph.prepare_weights(weights, config), config, writer,
                                               fp16=precision == "fp16")
            if writer.nbytes == 0:
                (staging / data_name).unlink()  # every weight fitted inside the file
            entries = {**(metadata or {}), "ai_writer_format": FORMAT, "config": config.to_json(),
                       "precision": precision}
            for key, value in entries.items():
                model.metadata_props.add(key=key, value=str(value))
            write_model(model, staging / out.name)
    except OSError as exc:
        raise ModelFileError(f"{out}: cannot write the ONNX export ({exc.strerror or exc})") from None
    return out


def export_file(model_path: str | os.PathLike, out: str | os.PathLike, precision: str = "fp32", *, kind: str,
                source: str | None = None, on_start: Callable[[], None] | None = None) -> Path:
    """Export a `safetensors` or `pth` model file (models/formats.py kinds) tensor by tensor, never holding
    the model whole, and without torch: both are memory-mapped and read with numpy (a `.pth`'s pickle through
    the restricted unpickler, which runs nothing). `source` is the fingerprint stored in the metadata (default: describe_file)."""
    model_path = Path(model_path)
    tensors = open_tensors(model_path, kind)
    metadata = {"source": source if source is not None else describe_file(model_path)}
    stored = tensors.metadata
    if stored.get("format") == NATIVE_FORMAT:
        config = ModelConfig.from_json(stored.get("config", ""), str(model_path))
        metadata.update({key: stored[key] for key in ("vocab", "unknown_char", "punctuation", "tokenizer") if key in stored})
    else:
        config = ModelConfig.from_tensors(tensors.shapes, str(model_path))
    return export_onnx(tensors, config, out, precision=precision, metadata=metadata, source_name=str(model_path),
                       on_start=on_start)


def export_native(model_path: str | os.PathLike, out: str | os.PathLike, precision: str = "fp32", *,
                  source: str | None = None, on_start: Callable[[], None] | None = None) -> Path:
    """Export a `.safetensors` model (ai-writer's native file, or any RWKV one) without torch."""
    return export_file(model_path, out, precision, kind="safetensors", source=source, on_start=on_start)


def export_checkpoint(checkpoint, out: str | os.PathLike, precision: str = "fp32", *, source: str | None = None,
                      on_start: Callable[[], None] | None = None) -> Path:
    """Export a models.checkpoint.Checkpoint already open in this process (torch tensors: one trained or
    changed here, say); each tensor is widened to float32 only when the export reaches it."""
    tensors = _Widened(checkpoint.tensors)
    metadata = {"source": source if source is not None else describe_file(checkpoint.path)}
    if checkpoint.tokenizer is not None and hasattr(checkpoint.tokenizer, "to_json"):
        metadata.update(vocab=checkpoint.tokenizer.to_json(), unknown_char=checkpoint.tokenizer.unknown_char)
        if checkpoint.tokenizer.punctuation is not None:
            metadata["punctuation"] = checkpoint.tokenizer.punctuation
    return export_onnx(tensors, checkpoint.config, out, precision=precision, metadata=metadata,
                       source_name=str(checkpoint.path), on_start=on_start)


class _Widened(Mapping):
    """torch tensors seen as float32 numpy arrays, each converted when asked for."""

    def __init__(self, tensors):
        self.tensors = tensors

    def __getitem__(self, key):
        return self.tensors[key].detach().float().cpu().numpy()

    def __iter__(self):
        return iter(self.tensors)

    def __len__(self):
        return len(self.tensors)


def describe_file(path: str | os.PathLike) -> str:
    """A default fingerprint of a model file: its name, size and modification time."""
    stat = Path(path).stat()
    return json.dumps({"name": Path(path).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def _check_weights(weights, config: ModelConfig, source: str) -> None:
    """Every tensor the config expects is there, in its shape, floating point; checked from the header
    of a TensorSource (nothing read yet), or from the arrays of a mapping."""
    for key, shape in config.expected_shapes().items():
        present = key in (weights.shapes if isinstance(weights, TensorSource) else weights)
        if not present:
            raise ModelFileError(f"{source}: not an {NAMES[config.version]} model of this shape: "
                                 f"tensor {key!r} is missing")
        if isinstance(weights, TensorSource):
            actual, is_float = weights.shapes[key], weights.is_float(key)
            kind = weights.dtypes[key]
        else:
            array = np.asarray(weights[key])
            actual, is_float, kind = array.shape, np.issubdtype(array.dtype, np.floating), array.dtype
        if tuple(actual) != shape:
            raise ModelFileError(f"{source}: tensor {key!r} has shape {list(actual)}, expected {list(shape)}")
        if not is_float:
            raise ModelFileError(f"{source}: tensor {key!r} is {kind}, expected floating point")
