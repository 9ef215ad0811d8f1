"""Bits per character of a model on a text: how well it predicts held-out writing.

Convention: the model starts from a zero state and first reads a "\\n", as if the text
were a paragraph that follows another; then it predicts every character of the text in turn,
including the "\\n" that ends each line. So the first character is predicted after a newline
context, and n_chars is the length of the text. A character outside the vocabulary is scored
as the unknown character (the model is asked for the unknown id there) and counted in
n_unknown. The text is fed in segments with the state carried over, so any length works.

`modern_punctuation=True` scores the text as `ai-writer train --punctuation modern` trains on
it: each line rewritten by text/punctuation.modernize (the held-out lines are the same lines).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ai_writer.backends.base import PREFILL_SEGMENT
from ai_writer.errors import VocabularyError
from ai_writer.training.corpus import join_lines, read_lines, split_lines
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.punctuation import modernize

LN2 = math.log(2)


@dataclass(frozen=True)
class EvalResult:
    name: str
    bits: float  # total bits over the text
    n_chars: int
    n_unknown: int

    @property
    def bits_per_character(self) -> float:
        return self.bits / self.n_chars if self.n_chars else math.nan


def bits_per_character(model, tokenizer: CharTokenizer, text: str,
                       segment_len: int = PREFILL_SEGMENT) -> tuple[float, int, int]:
    """(bits per character, characters scored, unknown characters) of `text`.

    `model` is an `RWKV7` module, a torch backend (its module is used), or any Backend, which
    is then stepped one character at a time (slower, same result).
    """
    result = _score(model, tokenizer, text, segment_len)
    return result.bits_per_character, result.n_chars, result.n_unknown


def evaluate_file(model, tokenizer: CharTokenizer, path: str | os.PathLike, *, all: bool = False,
                  modern_punctuation: bool = False) -> EvalResult:
    """Score the held-out part of a corpus file (its last ceil(5 %) of lines), or all of it with all=True."""
    lines = read_lines(path)
    if not all:
        lines = split_lines(lines)[1]
    if modern_punctuation:
        lines = [modernize(line) for line in lines]
    return dataclasses.replace(_score(model, tokenizer, join_lines(lines), PREFILL_SEGMENT), name=str(path))


def evaluate_files(model, tokenizer: CharTokenizer, paths: Sequence[str | os.PathLike], *,
                   all: bool = False, modern_punctuation: bool = False) -> tuple[list[EvalResult], EvalResult]:
    """One result per file and their total (bits summed over all characters)."""
    results = [evaluate_file(model, tokenizer, p, all=all, modern_punctuation=modern_punctuation) for p in paths]
    total = EvalResult("total", sum(r.bits for r in results), sum(r.n_chars for r in results),
                       sum(r.n_unknown for r in results))
    return results, total


def _score(model, tokenizer: CharTokenizer, text: str, segment_len: int) -> EvalResult:
    if tokenizer.newline_id is None:
        raise VocabularyError("vocabulary: it has no newline, so the first character has no context to follow")
    targets = tokenizer.encode(text)
    n_unknown = sum(1 for t in targets if t == tokenizer.unknown_id)
    if not targets:
        return EvalResult("text", 0.0, 0, 0)
    inputs = [tokenizer.newline_id] + targets[:-1]
    module = _module_of(model)
    if module is not None:
        nats = _nats_module(module, inputs, targets, segment_len)
    else:
        nats = _nats_backend(model, inputs, targets)
    return EvalResult("text", nats / LN2, len(text), n_unknown)  # per character, also when a token holds several


def _module_of(model):
    if "torch" not in sys.modules:
        return None  # an ONNX Runtime backend: no torch module inside, and no reason to import torch
    from ai_writer.models.rwkv.rwkv7 import RWKV7

    if isinstance(model, RWKV7):
        return model
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, RWKV7) else None


def _nats_module(module, inputs: list[int], targets: list[int], segment_len: int) -> float:
    import torch

    device = module.head.weight.device
    total = 0.0
    with torch.inference_mode():
        state = module.zero_state(1)
        for start in range(0, len(inputs), segment_len):
            x = torch.tensor([inputs[start : start + segment_len]], device=device)
            y = torch.tensor(targets[start : start + segment_len], device=device)
            logits, state = module(x, state, all_logits=True)
            log_p = torch.log_softmax(logits[0].double(), dim=-1)  # float64: exact for uniform logits
            total -= log_p.gather(1, y[:, None]).sum().item()
    return total


def _nats_backend(backend, inputs: list[int], targets: list[int]) -> float:
    state = backend.zero_state(1)
    total = 0.0
    for token, target in zip(inputs, targets):
        logits, state = backend.forward([[token]], state)
        row = logits[0].astype(np.float64)
        top = row.max()
        total -= row[target] - top - math.log(np.exp(row - top).sum())
    return total
