"""Opening the original AI-Writer releases: choosing where they run, their vocabulary, their engine.

| kind (models/formats.py) | file | runs on |
|---|---|---|
| `aiwriter-window` | 2022-02-15 `.pth` (pickled module or dict) | torch: cuda, else torch-cpu |
| `aiwriter-rnn` | `_new_` RWKV_RNN `.pth` (L6/L24_CHN, L12_ENG) | torch: cuda, else torch-cpu |
| `aiwriter-window-onnx` | 2022-02-15 `.onnx` (ids in, logits out) | ONNX Runtime: dml, else cpu |
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ai_writer.backends.loaded import LoadedModel
from ai_writer.backends.select import Choice, choose, cuda_usable, onnx_providers, torch_installed
from ai_writer.errors import PYTORCH_INSTALL, BackendError, ModelFileError, VocabularyError
from ai_writer.models.aiwriter.restricted_pickle import read_pth
from ai_writer.text.char_tokenizer import CharTokenizer

NEW_VOCABULARY = "word-2022-02-16.json"  # the vocabulary the _new_ models were released with
GENERATION = {"aiwriter-window": "2022-02-15", "aiwriter-rnn": "_new_", "aiwriter-window-onnx": "2022-02-15"}


def choose_legacy(kind: str, requested: str, precision: str | None, path: Path, *, cuda_check=cuda_usable,
                  providers=onnx_providers, has_torch=torch_installed) -> Choice:
    """Where an original AI-Writer file runs, and why (shown by `ai-writer info`)."""
    generation = GENERATION[kind]
    if kind == "aiwriter-window-onnx":
        if requested in ("cuda", "torch-cpu"):
            raise BackendError(f"{path}: an ONNX file runs on the cpu or dml backend, not on {requested}; "
                               "for torch, use the model's .pth")
        if requested == "auto":
            found = providers() or []
            if "DmlExecutionProvider" in found:
                requested, reason = "dml", (f"an AI-Writer {generation} .onnx runs on ONNX Runtime; "
                                            "DirectML is installed")
            elif "CPUExecutionProvider" in found:
                requested, reason = "cpu", (f"an AI-Writer {generation} .onnx runs on ONNX Runtime; "
                                            "no DirectML provider: on the CPU")
            else:
                raise BackendError(f"{path}: an ONNX file needs onnxruntime (pip install onnxruntime)")
        else:
            reason = "asked for with --backend"
        checked = choose(requested, None, cuda_check=cuda_check, providers=providers, has_torch=has_torch)
        return Choice(checked.backend, precision or "fp32", reason)  # the precision is the file's: checked on opening
    if precision not in (None, "fp32"):
        raise BackendError(f"{path}: the original AI-Writer models run in fp32 only "
                           f"(exp() of their keys overflows {precision}); leave out --precision")
    if requested in ("cpu", "dml"):
        hint = "; for AMD/Intel cards, run its .onnx release instead" if kind == "aiwriter-window" else ""
        raise BackendError(f"{path}: an AI-Writer {generation} .pth runs on torch (--backend torch-cpu, cuda or "
                           f"auto); the {requested} backend runs ONNX files{hint}")
    if requested == "auto":
        if cuda_check():
            return Choice("cuda", "fp32", f"an NVIDIA GPU is usable; an AI-Writer {generation} .pth runs in fp32")
        if not has_torch():
            raise BackendError(f"{path}: an AI-Writer {generation} .pth needs torch (PyTorch), which is not installed: "
                               f"{PYTORCH_INSTALL}")
        return Choice("torch-cpu", "fp32", f"no usable NVIDIA GPU; an AI-Writer {generation} .pth runs on torch "
                                           "on the CPU: the cpu and dml backends run ONNX files")
    checked = choose(requested, "fp32", cuda_check=cuda_check, providers=providers, has_torch=has_torch)
    return Choice(checked.backend, "fp32", checked.reason)


def load_legacy(model_path: Path, kind: str, *, vocab_path=None, tokenizer=None, unknown_char: str,
                backend: str = "auto", precision: str | None = None, threads: int | None = None,
                need_vocab: bool = True):
    """Open an original AI-Writer file as a LoadedModel (see open.load_model); `tokenizer` (--tokenizer)
    may only be "char" or a vocabulary file: these models read characters."""
    if tokenizer == "world":
        raise VocabularyError(f"{model_path}: an original AI-Writer model reads characters, not world tokens")
    if tokenizer not in (None, "char"):
        if vocab_path is not None:
            raise VocabularyError(f"--vocab and --tokenizer {tokenizer} both name the vocabulary; give one of them")
        vocab_path = tokenizer
    choice = choose_legacy(kind, backend, precision, model_path)
    tokenizer = vocabulary_for(model_path, kind, vocab_path, unknown_char, need_vocab)
    if kind == "aiwriter-window-onnx":
        from ai_writer.backends.aiwriter_onnx import WindowOnnxBackend

        engine = WindowOnnxBackend(model_path, backend=choice.backend, providers=choice.providers, threads=threads)
        if precision is not None and precision != engine.precision:
            raise BackendError(f"{model_path}: this ONNX file is {engine.precision}, not {precision}")
        choice = dataclasses.replace(choice, precision=engine.precision)
        runs = model_path
    else:
        import torch

        from ai_writer.models.aiwriter.window import AConfig
        from ai_writer.models.aiwriter.rnn import BConfig
        from ai_writer.backends.aiwriter_torch import RnnTorchBackend, WindowTorchBackend

        tensors = read_pth(model_path)
        shapes = {key: value.shape for key, value in tensors.items()}
        config = (AConfig if kind == "aiwriter-window" else BConfig).from_shapes(shapes, str(model_path))
        if threads is not None:
            torch.set_num_threads(threads)
        device = "cuda" if choice.backend == "cuda" else "cpu"
        tensors = {key: torch.from_numpy(value) for key, value in tensors.items()}
        engine = (WindowTorchBackend if kind == "aiwriter-window" else RnnTorchBackend)(config, tensors, device=device)
        runs = None
    if tokenizer is not None and tokenizer.vocab_size != engine.config.vocab_size:
        raise VocabularyError(f"vocabulary {tokenizer_source(model_path, kind, vocab_path)} has "
                              f"{tokenizer.vocab_size} characters but model {model_path} has a vocabulary of "
                              f"{engine.config.vocab_size}")
    return LoadedModel(model_path, engine.config, tokenizer, engine, choice, runs=runs)


def tokenizer_source(model_path: Path, kind: str, vocab_path) -> Path | None:
    """--vocab; else NAME.json beside the model; else, for a _new_ model, word-2022-02-16.json beside it."""
    if vocab_path is not None:
        return Path(vocab_path)
    candidates = [model_path.with_suffix(".json")]
    if kind == "aiwriter-rnn":
        candidates.append(model_path.with_name(NEW_VOCABULARY))
    return next((c for c in candidates if c.is_file()), None)


def vocabulary_for(model_path: Path, kind: str, vocab_path, unknown_char: str, need_vocab: bool):
    path = tokenizer_source(model_path, kind, vocab_path)
    if path is None:
        if not need_vocab:
            return None
        names = model_path.with_suffix(".json").name + (f" or {NEW_VOCABULARY}" if kind == "aiwriter-rnn" else "")
        raise VocabularyError(f"{model_path}: no vocabulary found; pass --vocab or put {names} beside it")
    return CharTokenizer.from_file(path, unknown_char=unknown_char)
