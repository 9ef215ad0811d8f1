"""What an `.onnx` file says about itself: its metadata, read without loading the graph or weights.

`ONNX_FORMAT` is the `ai_writer_format` entry every ai-writer export carries (export/onnx.py
writes it, backends/rwkv_onnx.py checks it); an `.onnx` without it is an original AI-Writer
release or not a model of ours. Torch- and onnxruntime-free: it reads the protobuf wire format.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ai_writer.errors import ModelFileError

ONNX_FORMAT = "ai-writer-onnx-1"
STATE_PARTS = ("att_shift", "wkv", "ffn_shift")  # a state's arrays, each (L, B, ...) outside the graph


def state_names(part: str, n_layer: int, prefix: str = "") -> list[str]:
    """The graph's per-layer inputs (prefix "") or outputs (prefix "new_") of one part of the state:
    `att_shift.0` ... Each layer's slice of the stacked array goes in as it is, so a state is never
    split or joined inside the graph (att and ffn shifts (1, B, C), wkv (B, H, N, N))."""
    return [f"{prefix}{part}.{i}" for i in range(n_layer)]


def layer_slice(part: str, i: int):
    """Layer i's slice of a stacked state array, in the graph's shape for it."""
    return i if part == "wkv" else slice(i, i + 1)


def state_feeds(arrays) -> dict:
    """The graph inputs for a state given as its stacked arrays (att_shift, wkv, ffn_shift), for
    session.run; backends/rwkv_onnx.py binds the same slices without copying."""
    return {name: array[layer_slice(part, i)] for part, array in zip(STATE_PARTS, arrays)
            for i, name in enumerate(state_names(part, len(array)))}


def run_graph(session, tokens, arrays):
    """One plain session.run of an export: (logits, the new stacked arrays). For tests and measurements."""
    n_layer = len(arrays[0])
    fetches = ["logits"] + [n for part in STATE_PARTS for n in state_names(part, n_layer, "new_")]
    logits, *outputs = session.run(fetches, {"tokens": tokens, **state_feeds(arrays)})
    parts = [outputs[k * n_layer : (k + 1) * n_layer] for k in range(len(STATE_PARTS))]
    return logits, [np.stack(p) if part == "wkv" else np.concatenate(p) for part, p in zip(STATE_PARTS, parts)]


def read_onnx_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata_props of an `.onnx` file, read without parsing its graph or weights.

    ModelProto's fields are walked in the protobuf wire format: the graph (field 7) is skipped
    with one seek, the metadata entries (field 14) are decoded. Milliseconds for any size.
    """
    path = Path(path)
    metadata: dict[str, str] = {}
    graph = False
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            while f.tell() < size:
                field, wire = _split_key(_varint(f))
                if wire == 0:
                    _varint(f)
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    length = _varint(f)
                    if f.tell() + length > size:
                        raise ValueError("a field runs past the end")
                    graph = graph or (field == 7 and length > 0)  # ModelProto.graph: every model has one
                    if field == 14:
                        entry = _string_fields(f.read(length))
                        metadata[entry.get(1, "")] = entry.get(2, "")
                    else:
                        f.seek(length, os.SEEK_CUR)
                else:
                    raise ValueError(f"wire type {wire}")
        if not graph:
            raise ValueError("it holds no graph")
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: not an ONNX model file (truncated or corrupt?): {exc}") from None
    return metadata


def _varint(f) -> int:
    value, shift = 0, 0
    while True:
        byte = f.read(1)
        if not byte:
            raise ValueError("the file ends inside a field")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("a varint is too long")


def _split_key(key: int) -> tuple[int, int]:
    return key >> 3, key & 7


def _string_fields(data: bytes) -> dict[int, str]:
    """The length-delimited fields of a small message (a StringStringEntryProto: key 1, value 2)."""
    f, fields = io.BytesIO(data), {}
    while f.tell() < len(data):
        field, wire = _split_key(_varint(f))
        if wire != 2:
            raise ValueError("a metadata entry is malformed")
        fields[field] = f.read(_varint(f)).decode("utf-8")
    return fields
