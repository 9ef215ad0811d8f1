"""Export an RWKV-7, RWKV-6 or RWKV-5.2 model to one `.onnx` file for ONNX Runtime (the cpu and dml backends).

The exporter works from numpy arrays and never imports torch: a native `.safetensors` model
exports on a machine with only onnx, onnxruntime, numpy and safetensors. A `.pth` goes
through `export_checkpoint` with a Checkpoint that models/checkpoint.py (torch) has loaded.

The file: opset 21, one graph (built in models/rwkv/onnx_v7.py, or onnx_v5.py for RWKV-5.2
and RWKV-6) with inputs `tokens` int64 (B, T), `att_shift` (L, B, C), `wkv` (L, B, H, N, N),
`ffn_shift` (L, B, C), all float32, and outputs `logits` (B, V) for the last position,
`new_att_shift`, `new_wkv`, `new_ffn_shift`: the state of rwkv7.RWKV7State (every version's
torch state) as arrays. Its metadata_props: `ai_writer_format` (FORMAT),
`config` (ModelConfig JSON), `precision`, `source` (a fingerprint of the model file it came
from, chosen by the caller), and `vocab`, `unknown_char` when the model carries a vocabulary.
Weights are inside the file below 2 GB, else in one `NAME.onnx.data` beside it.

Graph design (models/rwkv/onnx_v7.py; onnx_v5.py follows it): an If on T > 1 reads the first
T - 1 tokens in the chunked form into a state; the main graph then runs the step form on the
last token. Decode speed of RWKV-7 graphs (T = 1,
B = 1, ORT 1.31 CPUExecutionProvider, 1 thread, ORT_ENABLE_ALL; designs alternating in timed
blocks in one process, CPU time; a 2-core AMD EPYC VM shared with a training job, so medians of
per-round ratios, best block in brackets; benchmarks/onnx_decode_design.py):

    model                        step-only graph     this design            If on T == 1
    random L12-D768 V8849        64.6 tok/s (66.6)   0.998x (72.0 tok/s)    0.970x (69.5 tok/s)
    shipped L6-D256 V4836        best 1066 us/step   0.994x, best 1043 us   0.951x, best 1149 us
    random L2-D64 V50 (cached)   best 85.3 us/step   best 91.4 us: +6 us    best 113.3 us: +28 us

Differences of a few per cent on the two bigger models are within this machine's noise; the
tiny model shows the fixed costs. The If on T == 1 runs every decode step as a subgraph, which
costs ONNX Runtime a fixed ~28 µs plus a share that grows with the graph (up to 8 % on the
shipped model), so it was not chosen; this design pays one near-empty If call (~6 µs), and a
prefill pays one step form at its end.

Precisions: `fp32`; `fp16` (weights and activations fp16 for GPU providers, the decay and
the wkv recurrence in fp32, inputs and outputs float32; it runs on the CPU too, slowly, through
casts ONNX Runtime inserts); `int8`: the projection and FFN matrices as ONNX Runtime's
MatMulNBits with 8-bit weights, one scale per block of 32 inputs (see `_quantize`), MatMuls
inside the If included. The embedding (a Gather), the low-rank matrices and the head stay
float: see INT8_FLOAT_WEIGHTS (the head decides near ties; quantizing it was no faster in a
paired comparison on a random L12-D768). The first int8 export (quantize_dynamic's
MatMulInteger, per column) decoded 1.6x as fast as fp32 on one thread; MatMulNBits reads the
same bytes in one kernel without the separate activation-quantization nodes (measured in
benchmarks/RESULTS.md, runtime backends). Agreement with fp32 on the shipped model is tested
(tests/test_onnx_export.py): top character along fp32's greedy path, and held-out bits per
character within 3 %.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ai_writer.models.onnx_file import ONNX_FORMAT as FORMAT
from ai_writer.models.checkpoint import NATIVE_FORMAT  # torch-free: torch is imported only for .pth files
from ai_writer.models.config import ModelConfig
from ai_writer.errors import ModelFileError, SettingsError
from ai_writer.files import atomic_files
from ai_writer.models.version import NAMES

PRECISIONS = ("fp32", "fp16", "int8")
MAX_INLINE_BYTES = 2_000_000_000  # protobuf's limit is 2 GiB: bigger models keep their weights beside the file


def export_onnx(weights: Mapping[str, np.ndarray], config: ModelConfig, out: str | os.PathLike, *,
                precision: str = "fp32", metadata: Mapping[str, str] | None = None,
                source_name: str = "weights", on_start: Callable[[], None] | None = None) -> Path:
    """Write the ONNX export of a model given as standard RWKV-7, RWKV-6 or RWKV-5.2 tensors (numpy, as stored).

    `metadata` adds string entries (vocab, unknown_char, source) to the file's metadata_props;
    `source_name` names the weights in error messages. Returns the path written.
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
    model = onnx_graph.build_model(onnx_graph.prepare_weights(weights, config), config, fp16=precision == "fp16")
    entries = {**(metadata or {}), "ai_writer_format": FORMAT, "config": config.to_json(), "precision": precision}
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=str(value))
    _write(model, out, precision)
    return out


def export_native(model_path: str | os.PathLike, out: str | os.PathLike, precision: str = "fp32", *,
                  source: str | None = None, on_start: Callable[[], None] | None = None) -> Path:
    """Export a native `.safetensors` model (or any RWKV-7, RWKV-6 or RWKV-5.2 safetensors file) without torch.

    `source` is the fingerprint stored in the metadata; by default `describe_file(model_path)`.
    """
    model_path = Path(model_path)
    tensors, stored = read_safetensors(model_path)
    metadata = {"source": source if source is not None else describe_file(model_path)}
    if stored.get("format") == NATIVE_FORMAT:
        config = ModelConfig.from_json(stored.get("config", ""), str(model_path))
        metadata.update({key: stored[key] for key in ("vocab", "unknown_char") if key in stored})
    else:
        config = ModelConfig.from_tensors({k: t.shape for k, t in tensors.items()}, str(model_path))
    return export_onnx(tensors, config, out, precision=precision, metadata=metadata, source_name=str(model_path),
                       on_start=on_start)


def export_checkpoint(checkpoint: Any, out: str | os.PathLike, precision: str = "fp32", *,
                      source: str | None = None, on_start: Callable[[], None] | None = None) -> Path:
    """Export a checkpoint.Checkpoint (its tensors are torch tensors: a `.pth` file, say)."""
    tensors = {key: t.detach().float().cpu().numpy() for key, t in checkpoint.tensors.items()}
    metadata = {"source": source if source is not None else describe_file(checkpoint.path)}
    if checkpoint.tokenizer is not None:
        metadata.update(vocab=checkpoint.tokenizer.to_json(), unknown_char=checkpoint.tokenizer.unknown_char)
    return export_onnx(tensors, checkpoint.config, out, precision=precision, metadata=metadata,
                       source_name=str(checkpoint.path), on_start=on_start)


def describe_file(path: str | os.PathLike) -> str:
    """A default fingerprint of a model file: its name, size and modification time."""
    stat = Path(path).stat()
    return json.dumps({"name": Path(path).name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a `.safetensors` file as numpy arrays (bf16 widened to float32), and its metadata."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file" if not path.exists() else f"{path}: not a file")
    try:
        with safe_open(path, framework="np") as f:
            metadata = f.metadata() or {}
            wide = [key for key in f.keys() if f.get_slice(key).get_dtype() == "BF16"]
            tensors = {key: f.get_tensor(key) for key in f.keys() if key not in wide}
        if wide:  # numpy has no bfloat16: read those payloads as uint16 and widen them
            tensors.update(_read_bf16(path, wide))
    except (SafetensorError, OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, metadata


# ---- helpers ---------------------------------------------------------------------------------------


def _check_weights(weights: Mapping[str, np.ndarray], config: ModelConfig, source: str) -> None:
    for key, shape in config.expected_shapes().items():
        if key not in weights:
            raise ModelFileError(f"{source}: not an {NAMES[config.version]} model of this shape: "
                                 f"tensor {key!r} is missing")
        array = np.asarray(weights[key])
        if array.shape != shape:
            raise ModelFileError(f"{source}: tensor {key!r} has shape {list(array.shape)}, expected {list(shape)}")
        if not np.issubdtype(array.dtype, np.floating):
            raise ModelFileError(f"{source}: tensor {key!r} is {array.dtype}, expected floating point")


def _read_bf16(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_len))
        start = 8 + header_len
        out = {}
        for key in keys:
            begin, end = header[key]["data_offsets"]
            f.seek(start + begin)
            raw = np.frombuffer(f.read(end - begin), dtype="<u2").astype(np.uint32) << 16
            out[key] = raw.view(np.float32).reshape(header[key]["shape"])
        return out


def _write(model, out: Path, precision: str) -> None:
    """Write atomically (files.atomic_files): the file and its NAME.onnx.data when the weights are
    beside it, the data renamed into place first; an inline export removes the data file an
    earlier, larger export of the same name left."""
    if precision == "int8":
        _quantize(model)
    try:
        with atomic_files(out.with_name(out.name + ".data"), out) as staging:
            _save(model, staging / out.name)
    except OSError as exc:
        raise ModelFileError(f"{out}: cannot write the ONNX export ({exc.strerror or exc})") from None


def _weight_bytes(model) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _save(model, path: Path) -> None:
    import onnx

    if _weight_bytes(model) > MAX_INLINE_BYTES:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))


# MatMuls the int8 export leaves in float, by weight name (the graph builders name a MatMul "<weight>.matmul"):
# the low-rank matrices (tiny, and the decay LoRA sets how long the state remembers) and the head
# (it alone decides which character wins a near tie).
INT8_FLOAT_WEIGHTS = tuple(f"att.{name}.matmul" for name in ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2")) + tuple(
    f"att.time_{name}.matmul" for name in ("maa_w1", "maa_w2", "decay_w1", "decay_w2")  # RWKV-6's
) + ("head.matmul",)
INT8_BLOCK = 32  # weights along K share one scale per block of this many
INT8_ACCURACY_LEVEL = 4  # MatMulNBits: activations quantized to int8 per block too, integer dot products


def _quantize(model) -> None:
    """int8: every other MatMul with a constant weight becomes ONNX Runtime's MatMulNBits with
    8-bit weights: symmetric, one float32 scale per block of INT8_BLOCK inputs of each output
    column, stored offset by 128 (the operator's default zero point). The weight is read once
    per step at a quarter of its float32 size, in one kernel (no separate activation
    quantization nodes, as quantize_dynamic's MatMulInteger needs)."""
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in model.graph.initializer}
    packed: dict[str, tuple[str, str, int, int]] = {}
    for node in _all_nodes(model.graph):
        if node.op_type != "MatMul" or not node.name.endswith(".matmul") or node.name.endswith(INT8_FLOAT_WEIGHTS):
            continue
        name = node.input[1]
        if name not in packed:
            weight = numpy_helper.to_array(initializers[name])  # (K, N)
            if weight.ndim != 2 or weight.shape[0] % INT8_BLOCK:
                continue
            blocks, scales = quantize_blocks(weight, INT8_BLOCK)
            model.graph.initializer.remove(initializers[name])
            model.graph.initializer.extend([numpy_helper.from_array(blocks, name + ".q8"),
                                            numpy_helper.from_array(scales, name + ".scales")])
            packed[name] = (name + ".q8", name + ".scales", *weight.shape)
        quantized, scales_name, k, n = packed[name]
        node.op_type, node.domain = "MatMulNBits", "com.microsoft"
        node.input[:] = [node.input[0], quantized, scales_name]
        node.attribute.extend([helper.make_attribute("K", k), helper.make_attribute("N", n),
                               helper.make_attribute("bits", 8), helper.make_attribute("block_size", INT8_BLOCK),
                               helper.make_attribute("accuracy_level", INT8_ACCURACY_LEVEL)])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))


def quantize_blocks(weight: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """A (K, N) float matrix as MatMulNBits stores 8 bits: uint8 (N, K/block, block), q + 128 with
    q = round(w / scale) in [-127, 127], and float32 scales (N * K/block,), max |w| / 127 per block."""
    k, n = weight.shape
    columns = np.ascontiguousarray(weight.T, dtype=np.float32).reshape(n, k // block, block)
    scales = np.abs(columns).max(axis=2) / np.float32(127)  # (N, K/block)
    scales[scales == 0] = 1  # an all-zero block: any scale gives q = 0
    q = np.clip(np.rint(columns / scales[..., None]), -127, 127).astype(np.int16) + 128
    return q.astype(np.uint8), scales.astype(np.float32).reshape(-1)


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub)
