"""Opening a model: one way through, from a file to a backend that runs it.

The file's kind is recognised once (models/formats.py). An original AI-Writer release goes to
aiwriter_open.py; an RWKV model runs either on ONNX Runtime (cpu, dml: its ONNX export, made
once by export/cache.py from the file) or on torch (cuda, torch-cpu: the checkpoint read by
models/checkpoint.py, memory-mapped). The tokenizer follows the model (`_tokenizer_for`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from pathlib import Path
from typing import Callable

from ai_writer.backends.loaded import LoadedModel, ModelPlan
from ai_writer.backends.precision import check_fits, choose_precision
from ai_writer.backends.select import Choice, choose
from ai_writer.models.config import ModelConfig
from ai_writer.errors import ModelFileError, VocabularyError
from ai_writer.models.formats import AIWRITER_KINDS, header_config, recognise
from ai_writer.models.onnx_file import read_onnx_metadata
from ai_writer.models.state_file import read_state_file
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.world_tokenizer import WORLD_VOCAB_SIZE, WorldTokenizer, default_world_tokenizer, is_world_vocabulary


def find_vocabulary(model_path: Path) -> Path | None:
    """The AI-Writer convention: `name.json` beside `name.pth`."""
    candidate = model_path.with_suffix(".json")
    return candidate if candidate.is_file() else None


def load_model(
    model_path: str | Path,
    *,
    vocab_path: str | Path | None = None,
    tokenizer: str | Path | None = None,
    unknown_char: str = UNKNOWN_CHAR,
    backend: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    need_vocab: bool = True,
    onnx_cache: str | Path | None = None,
    notify: Callable[[str], None] = lambda message: None,
    state_file: str | Path | None = None,
) -> LoadedModel:
    """Open a model file with its vocabulary on the chosen backend.

    `tokenizer` overrides the tokenizer the model would get (see _tokenizer_for): "char", "world"
    or a vocabulary file. With need_vocab=False (speed measurements), a model without a
    vocabulary is accepted. `state_file` (--state): a state-tuned start for every text (models/state_file.py).
    The ONNX Runtime backends (cpu, dml) run the model's ONNX export (export/cache.py), which
    this exports into `onnx_cache` on first use; they never import torch.
    """
    loaded = _open(Path(model_path), vocab_path, tokenizer, unknown_char, backend, precision, threads, need_vocab,
                   onnx_cache, notify)
    if state_file is not None:
        if not hasattr(loaded.backend, "start_from"):
            raise ModelFileError(f"--state {state_file}: state files are for RWKV-5.2, 6 and 7 world models, "
                                 f"not for {model_path}")
        loaded.backend.start_from(read_state_file(state_file, loaded.config))
        loaded.state_file = Path(state_file)
    return loaded


def _open(model_path: Path, vocab_path, tokenizer, unknown_char, backend, precision, threads, need_vocab, onnx_cache,
          notify) -> LoadedModel:
    kind = recognise(model_path)  # the one place a file's format is told: its header only
    if kind in AIWRITER_KINDS:
        from ai_writer.backends.aiwriter_open import load_legacy

        return load_legacy(model_path, kind, vocab_path=vocab_path, tokenizer=tokenizer, unknown_char=unknown_char,
                           backend=backend, precision=None if precision == "auto" else precision, threads=threads,
                           need_vocab=need_vocab)
    choice = _choice_for(model_path, kind, backend, precision)
    if choice.backend in ("cpu", "dml"):
        return _load_onnx(model_path, kind, choice, vocab_path, unknown_char, threads, need_vocab, onnx_cache, notify,
                          tokenizer)
    if kind == "onnx":
        raise ModelFileError(f"{model_path}: an ONNX file runs on the cpu or dml backend, not on {choice.backend}")
    from ai_writer.backends.rwkv_torch import TorchBackend
    from ai_writer.models.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(model_path)
    tokenizer = _tokenizer_for(model_path, checkpoint.config, checkpoint.tokenizer, vocab_path, unknown_char,
                               need_vocab, tokenizer)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    device = "cuda" if choice.backend == "cuda" else "cpu"
    if choice.backend == "torch-cpu" and choice.precision == "bf16":
        from ai_writer.backends.cpu_features import bf16_matrix_instructions, slow_bf16_notice

        notice = slow_bf16_notice(bf16_matrix_instructions())
        if notice is not None:
            notify(notice)
    backend = TorchBackend(checkpoint, device=device, precision=choice.precision)
    return LoadedModel(model_path, checkpoint.config, tokenizer, backend, choice)


def plan_export(model_path: str | Path, *, vocab_path: str | Path | None = None, tokenizer: str | Path | None = None,
                unknown_char: str = UNKNOWN_CHAR, backend: str = "auto", precision: str | None = None,
                onnx_cache: str | Path | None = None) -> ModelPlan | None:
    """What `load_model` would run when that means exporting the model first, without exporting it; None
    when it would not (an original AI-Writer file, an .onnx, a model run by torch, one storing its own
    vocabulary, or one whose export is made): `load_model` then opens it as quickly as it can."""
    from ai_writer.export.cache import made_export
    from ai_writer.models.checkpoint import NATIVE_FORMAT
    from ai_writer.models.tensors import open_tensors

    model_path = Path(model_path)
    kind = recognise(model_path)
    if kind not in ("safetensors", "pth"):
        return None
    if kind == "safetensors" and open_tensors(model_path, kind).metadata.get("format") == NATIVE_FORMAT:
        return None
    config = header_config(model_path, kind)
    choice = _choice_for(model_path, kind, backend, precision, config)
    if choice.backend not in ("cpu", "dml") or made_export(model_path, choice.precision, onnx_cache) is not None:
        return None
    return ModelPlan(model_path, config, _tokenizer_for(model_path, config, None, vocab_path, unknown_char, True,
                                                        tokenizer), choice)


def _choice_for(model_path: Path, kind: str, backend: str, precision: str | None,
                config: ModelConfig | None = None) -> Choice:
    """The backend and precision for a model file of `kind` (whose header gave `config`, when read already):
    before reading gigabytes, so a bad choice fails fast."""
    asked = None if precision in (None, "auto") else precision
    if kind == "onnx" and asked is None:  # an export runs in its own precision
        asked = read_onnx_metadata(model_path).get("precision", "fp32")
    choice = choose(backend, asked)
    if kind != "onnx":  # an export's precision is its own (checked on opening)
        choice = _fitting(choice, asked, config if config is not None else header_config(model_path, kind))
    return choice


def _fitting(choice: Choice, asked: str | None, config: ModelConfig) -> Choice:
    """The precision `--precision auto` picks from the memory available, or the one asked for if it fits."""
    if asked is not None:
        check_fits(choice.backend, asked, config)
        return choice
    picked = choose_precision(choice.backend, config)
    return dataclasses.replace(choice, precision=picked.precision, precision_reason=picked.reason)


def _load_onnx(model_path, kind, choice, vocab_path, unknown_char, threads, need_vocab, onnx_cache, notify,
               override) -> LoadedModel:
    from ai_writer.backends.rwkv_onnx import OnnxBackend
    from ai_writer.export.cache import onnx_for

    onnx_path, source = onnx_for(model_path, kind, choice.precision, onnx_cache, notify=notify)
    world_table = None if (vocab_path or override) else _read_world_table_meanwhile(onnx_path)
    backend = OnnxBackend(onnx_path, backend=choice.backend, providers=choice.providers, threads=threads)
    if world_table is not None:
        world_table.join()
    if source is not None and backend.metadata.get("source") != source:
        raise ModelFileError(
            f"{onnx_path}: this ONNX file was not exported from {model_path}; re-export it with "
            f"`ai-writer export onnx {model_path}` or remove it"
        )
    if kind == "onnx" and choice.precision != backend.precision:
        raise ModelFileError(f"{onnx_path}: this export is {backend.precision}, not {choice.precision}")
    tokenizer = _tokenizer_for(model_path, backend.config, backend.tokenizer(), vocab_path, unknown_char, need_vocab,
                               override)
    return LoadedModel(model_path, backend.config, tokenizer, backend, choice, runs=onnx_path)


def _read_world_table_meanwhile(onnx_path: Path) -> threading.Thread | None:
    """For an export that will read text with the world tokenizer: a thread that reads its table (65,529
    entries, ~0.3 s) while ONNX Runtime opens the session, which releases the GIL (~0.3 s of a 1.5B model's
    start: benchmarks/RESULTS.md, "Big models, session 6"). A failure is left to the caller's own read."""
    metadata = read_onnx_metadata(onnx_path)
    if "vocab" in metadata or "config" not in metadata:  # a file OnnxBackend will judge itself
        return None
    try:
        if ModelConfig.from_json(metadata["config"], str(onnx_path)).vocab_size != WORLD_VOCAB_SIZE:
            return None
    except ModelFileError:
        return None

    def read() -> None:
        with contextlib.suppress(Exception):
            default_world_tokenizer()

    thread = threading.Thread(target=read, name="world-tokenizer", daemon=True)
    thread.start()
    return thread


def _tokenizer_for(model_path: Path, config: ModelConfig, stored: CharTokenizer | WorldTokenizer | None, vocab_path,
                   unknown_char: str, need_vocab: bool, override: str | Path | None = None):
    """The tokenizer follows the model: --vocab, else the vocabulary stored in the model file (or the tokenizer
    its metadata names), else NAME.json beside it, else the world tokenizer for a model of 65,536 ids.
    `override` (--tokenizer) "world" or a vocabulary file replaces all that; "char" keeps to the character
    vocabularies. Its size must be the model's."""
    if override is not None and override != "char":
        if vocab_path is not None:
            raise VocabularyError(f"--vocab and --tokenizer {override} both name the vocabulary; give one of them")
        if override == "world":
            tokenizer = default_world_tokenizer()
        elif is_world_vocabulary(override):
            tokenizer = WorldTokenizer.from_file(override)
        else:
            tokenizer = CharTokenizer.from_file(override, unknown_char=unknown_char)
        return _checked(tokenizer, config, str(override), model_path)
    if vocab_path is None and stored is not None and not (override == "char" and isinstance(stored, WorldTokenizer)):
        return _checked(stored, config, str(model_path), model_path)
    path = vocab_path if vocab_path is not None else find_vocabulary(model_path)
    if path is None:
        if override is None and config.vocab_size == WORLD_VOCAB_SIZE:
            return default_world_tokenizer()
        if not need_vocab:
            return None
        raise VocabularyError(
            f"{model_path}: no vocabulary found; pass --vocab or put {model_path.with_suffix('.json').name} beside it"
        )
    return _checked(CharTokenizer.from_file(path, unknown_char=unknown_char), config, str(path), model_path)


def _checked(tokenizer, config: ModelConfig, source: str, model_path: Path):
    """`tokenizer` if its size is the model's vocabulary size, else a one-line VocabularyError."""
    from ai_writer.models.checkpoint import check_vocabulary

    if not isinstance(tokenizer, WorldTokenizer):
        check_vocabulary(config, tokenizer, source, model_path)
    elif tokenizer.vocab_size != config.vocab_size:
        raise VocabularyError(
            f"the world tokenizer {tokenizer.name} has {tokenizer.vocab_size} ids but model {model_path} has a vocabulary "
            f"of {config.vocab_size}; it needs its character vocabulary (--tokenizer char, --vocab)"
        )
    return tokenizer
