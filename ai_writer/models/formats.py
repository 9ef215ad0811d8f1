"""What kind of model a file holds, recognised once from its first bytes and header.

| kind | file | recognised by |
|---|---|---|
| `safetensors` | an RWKV model as `.safetensors` (ai-writer's native file, or any) | an 8-byte length, then a JSON header |
| `pth` | an RWKV-5.2/6/7 checkpoint (`torch.save` of a state dict) | a zip whose pickle holds RWKV keys |
| `aiwriter-window` | the AI-Writer 2022-02-15 `.pth` (pickled module or state dict) | `tok_emb.weight` and `time_out` |
| `aiwriter-rnn` | an AI-Writer `_new_` RWKV_RNN `.pth` | `(C, 1)` decays or `ffnPre` keys |
| `onnx` | an ai-writer ONNX export | its `ai_writer_format` metadata |
| `aiwriter-window-onnx` | the AI-Writer 2022-02-15 `.onnx` | an ONNX file without that metadata |

Recognising a file reads its zip's pickle with the restricted reader (shapes only: never the
weights, never torch, never code from the file) or the metadata of an ONNX file. A pickle that
names an original AI-Writer class and then anything unsafe is refused here in one line; other
unreadable files get their reader's one-line message later.
"""

from __future__ import annotations

import os
from pathlib import Path

from ai_writer.errors import ModelFileError
from ai_writer.models.aiwriter.restricted_pickle import UnsafePickleError, read_pth
from ai_writer.models.config import ModelConfig
from ai_writer.models.onnx_file import read_onnx_metadata
from ai_writer.models.pth_archive import LEGACY_MAGIC, is_legacy_torch_file, legacy_format_error

KINDS = ("safetensors", "pth", "aiwriter-window", "aiwriter-rnn", "onnx", "aiwriter-window-onnx")
AIWRITER_KINDS = ("aiwriter-window", "aiwriter-rnn", "aiwriter-window-onnx")


def recognise(path: str | os.PathLike) -> str:
    """The kind of model file at `path` (one of KINDS); a one-line ModelFileError when it is none."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file" if not path.exists() else f"{path}: not a file")
    try:
        with open(path, "rb") as f:
            head = f.read(len(LEGACY_MAGIC))
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the file ({exc.strerror})") from None
    if path.suffix.lower() == ".onnx":
        metadata = read_onnx_metadata(path)
        return "onnx" if "ai_writer_format" in metadata else "aiwriter-window-onnx"
    if head.startswith(b"PK"):  # PyTorch's zip container
        return _pth_kind(path)
    if head[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        return "safetensors"
    if is_legacy_torch_file(head):
        raise legacy_format_error(path)
    raise ModelFileError(f"{path}: not a model file (neither a PyTorch checkpoint nor safetensors)")


def _pth_kind(path: Path) -> str:
    """An original AI-Writer release, or an RWKV checkpoint (whose own reader checks it further)."""
    try:
        shapes = read_pth(path, shapes_only=True)
    except UnsafePickleError as exc:
        if exc.saw_legacy_class:
            raise
        return "pth"  # its reader (open_tensors, or torch's for the torch backends) refuses it in one line
    except ModelFileError:
        return "pth"
    if "tok_emb.weight" in shapes and "time_out" in shapes:
        return "aiwriter-window"
    decay = shapes.get("blocks.1.att.time_decay", shapes.get("blocks.0.att.time_decay"))
    world = "blocks.0.att.ln_x.weight" in shapes  # RWKV-5.2 and later: its time_decay is 2-D too (version.py)
    if "emb.weight" not in shapes or world:
        return "pth"
    if not shapes["emb.weight"].shape:
        return "pth"  # its reader says what is wrong with it
    width = shapes["emb.weight"].shape[-1]  # _new_ decays are (C, 1): RWKV-4 has (C,), 5 (H, N), 6 (1, 1, C)
    if getattr(decay, "shape", None) == (width, 1) or "blocks.0.ffnPre.key.weight" in shapes:
        return "aiwriter-rnn"
    return "pth"


def header_config(path: str | os.PathLike, kind: str) -> ModelConfig:
    """The shape of an RWKV model file of `kind`, from its header alone (no weights read, no torch): the
    config a native file stores, else inferred from the tensor shapes; an export's from its metadata."""
    from ai_writer.models.checkpoint import NATIVE_FORMAT
    from ai_writer.models.tensors import open_tensors

    path = Path(path)
    if kind == "onnx":
        return ModelConfig.from_json(read_onnx_metadata(path).get("config", ""), str(path))
    if kind == "safetensors":
        source = open_tensors(path, kind)
        shapes = source.shapes
        if source.metadata.get("format") == NATIVE_FORMAT:
            config = ModelConfig.from_json(source.metadata.get("config", ""), str(path))
        else:
            config = ModelConfig.from_tensors(shapes, str(path))
    elif kind == "pth":
        shapes = {key: tuple(value.shape) for key, value in read_pth(path, shapes_only=True).items()}
        config = ModelConfig.from_tensors(shapes, str(path))
    else:
        raise ModelFileError(f"{path}: a {kind} file is not an RWKV model")
    config.check_tensors(shapes, path.stat().st_size, str(path))  # before anyone allocates for this config
    return config
