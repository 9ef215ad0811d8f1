"""Reading and writing model files: RWKV-7, RWKV-6 and RWKV-5.2 `.pth` checkpoints, and the native `.safetensors`.

The native file is one `.safetensors` whose metadata carries the config, the vocabulary
and the unknown character, so a model is a single file with nothing typed by hand.

`load_checkpoint` gives torch tensors: it serves the torch backends and training, which need
torch anyway, and opens a `.pth` with `torch.load(weights_only=True, mmap=True)` (a pickle that
wants to import or run anything beyond tensors is refused, never executed). The ONNX Runtime
path never comes here: it reads model files without torch (models/tensors.py).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path


from ai_writer.models.config import ModelConfig
from ai_writer.errors import ModelFileError, VocabularyError
from ai_writer.files import atomic_path
from ai_writer.models.version import NAMES
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.world_tokenizer import WorldTokenizer, named_world_tokenizer

NATIVE_FORMAT = "ai-writer-rwkv7"  # a fixed name: the format stores RWKV-5.2, RWKV-6 and RWKV-7 alike
OPTIONAL_LAYER0_KEYS = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")  # RWKV-7: unused by layer 0


@dataclass
class Checkpoint:
    path: Path
    config: ModelConfig
    tensors: dict[str, torch.Tensor]  # the standard keys of its RWKV version, as stored
    tokenizer: CharTokenizer | WorldTokenizer | None  # the native format carries its vocabulary; .pth does not


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a model file, check every tensor against the inferred config, and return it."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file" if not path.exists() else f"{path}: not a file")
    with open(path, "rb") as f:
        magic = f.read(9)
    if magic.startswith(b"PK"):  # PyTorch's zip container
        tensors, metadata = read_pth_tensors(path), {}
    elif magic[8:9] == b"{":  # safetensors: an 8-byte header length, then the JSON header
        tensors, metadata = _read_safetensors(path)
    else:
        raise ModelFileError(f"{path}: not a model file (neither a PyTorch checkpoint nor safetensors)")

    tokenizer = None
    if metadata.get("format") == NATIVE_FORMAT:
        config = ModelConfig.from_json(metadata.get("config", ""), str(path))
        if "tokenizer" in metadata:  # a world model names its tokenizer instead of storing a vocabulary
            tokenizer = named_world_tokenizer(metadata["tokenizer"], str(path))
        else:
            try:
                tokenizer = CharTokenizer.from_json_text(
                    metadata["vocab"], str(path), unknown_char=metadata.get("unknown_char", UNKNOWN_CHAR),
                    punctuation=metadata.get("punctuation"),
                )
            except KeyError:
                raise ModelFileError(f"{path}: the metadata has no vocabulary") from None
    else:
        config = ModelConfig.from_tensors({k: tuple(t.shape) for k, t in tensors.items()}, str(path))
    config.check_tensors(tensors, path.stat().st_size, str(path))  # a config of a billion layers stops here
    _check_shapes(path, config, tensors)
    if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
        raise ModelFileError(
            f"{path}: its vocabulary has {tokenizer.vocab_size} characters but the model has {config.vocab_size} rows"
        )
    return Checkpoint(path, config, tensors, tokenizer)


def check_vocabulary(config: ModelConfig, tokenizer: CharTokenizer, vocab_source: str, model_path) -> None:
    if tokenizer.vocab_size != config.vocab_size:
        raise VocabularyError(
            f"vocabulary {vocab_source} has {tokenizer.vocab_size} characters "
            f"but model {model_path} has a vocabulary of {config.vocab_size}"
        )


def save_native(path: str | os.PathLike, config: ModelConfig, state_dict: dict,
                tokenizer: CharTokenizer | WorldTokenizer) -> None:
    """Write the single-file native model atomically (files.atomic_path)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: t.detach().contiguous().cpu() for k, t in state_dict.items()}
    metadata = {"format": NATIVE_FORMAT, "config": config.to_json()}
    if isinstance(tokenizer, WorldTokenizer):
        metadata["tokenizer"] = tokenizer.name
    else:
        metadata.update(vocab=tokenizer.to_json(), unknown_char=tokenizer.unknown_char)
        if tokenizer.punctuation is not None:
            metadata["punctuation"] = tokenizer.punctuation
    with atomic_path(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)


def read_pth_tensors(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": two lines of torch's, not the writer's
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as exc:
        raise ModelFileError(f"{path}: refused to load: {_refusal(path, str(exc))} "
                             "(only plain tensor checkpoints are loaded; nothing was run)") from None
    except (zipfile.BadZipFile, RuntimeError, EOFError, OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: cannot read the checkpoint (truncated or corrupt?): {first_line}") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(t, torch.Tensor) for t in data.values()):
        raise ModelFileError(f"{path}: not a checkpoint of named tensors")
    return data


def _refusal(path: Path, torch_message: str) -> str:
    """Why torch's weights-only loader refused a pickle, naming the global it wanted: found by reading the pickle
    with the restricted reader (models/aiwriter/restricted_pickle.py, which runs nothing), else from torch's
    message; an instruction torch does not read (a pickle protocol above 2) is named as such."""
    from ai_writer.models.aiwriter.restricted_pickle import UnsafePickleError, read_pth

    try:
        read_pth(path, shapes_only=True)
    except UnsafePickleError as exc:
        return f"its pickle wants to import {exc.global_name}"
    except ModelFileError:
        pass
    blocked = re.search(r"GLOBAL\s+([\w.]+)", torch_message)
    if blocked:
        return f"its pickle wants to import {blocked.group(1)}"
    opcode = re.search(r"Unsupported operand (\d+)", torch_message)
    if opcode:
        return (f"its pickle uses an instruction (opcode {opcode.group(1)}) that torch's weights-only loader does "
                "not read; save it again with torch.save")
    return "its pickle holds more than tensors"


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {exc}") from None
    return tensors, metadata


def _check_shapes(path: Path, config: ModelConfig, tensors: dict[str, "torch.Tensor"]) -> None:
    expected = config.expected_shapes()
    for key, shape in expected.items():
        if key not in tensors:
            raise ModelFileError(
                f"{path}: not an {NAMES[config.version]} checkpoint of this shape: tensor {key!r} is missing"
            )
        if tuple(tensors[key].shape) != shape:
            raise ModelFileError(
                f"{path}: tensor {key!r} has shape {list(tensors[key].shape)}, expected {list(shape)}"
            )
        if not tensors[key].is_floating_point():
            raise ModelFileError(f"{path}: tensor {key!r} is {tensors[key].dtype}, expected floating point")
    extra = sorted(set(tensors) - set(expected) - set(OPTIONAL_LAYER0_KEYS))
    if extra:
        raise ModelFileError(
            f"{path}: not an {NAMES[config.version]} checkpoint: unexpected tensor {extra[0]!r}"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
        )
