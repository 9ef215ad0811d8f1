"""Finding and opening a model: the file, its vocabulary, and a backend to run it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .backends import Backend
from .backends.select import Choice, choose, open_backend
from .checkpoint import Checkpoint, check_vocabulary, load_checkpoint
from .errors import VocabularyError
from .tokenizer import UNKNOWN_CHAR, CharTokenizer

DEFAULT_MODEL_NAME = "default.safetensors"


@dataclass
class LoadedModel:
    checkpoint: Checkpoint
    tokenizer: CharTokenizer | None  # None only when opened with need_vocab=False
    backend: Backend
    choice: Choice

    def describe(self) -> str:
        return (
            f"{self.checkpoint.path.name}: {self.checkpoint.config.describe()}; "
            f"backend {self.choice.backend} {self.choice.precision} ({self.choice.reason})"
        )


def default_model_path() -> Path | None:
    """The model shipped with ai-writer: inside the installed package (`pip install .`), or in
    the source checkout's model/ folder (an editable install), whichever has it."""
    package = Path(__file__).resolve().parent
    for folder in (package / "model", package.parent / "model"):
        if (folder / DEFAULT_MODEL_NAME).is_file():
            return folder / DEFAULT_MODEL_NAME
    return None


def find_vocabulary(model_path: Path) -> Path | None:
    """The AI-Writer convention: `name.json` beside `name.pth`."""
    candidate = model_path.with_suffix(".json")
    return candidate if candidate.is_file() else None


def load_model(
    model_path: str | Path,
    *,
    vocab_path: str | Path | None = None,
    unknown_char: str = UNKNOWN_CHAR,
    backend: str = "auto",
    precision: str | None = None,
    threads: int | None = None,
    need_vocab: bool = True,
) -> LoadedModel:
    """Open a model file with its vocabulary on the chosen backend.

    With need_vocab=False (speed measurements), a .pth without a vocabulary is accepted.
    """
    choice = choose(backend, precision)  # before reading gigabytes: a bad choice fails fast
    checkpoint = load_checkpoint(model_path)
    tokenizer = _tokenizer_for(checkpoint, vocab_path, unknown_char, need_vocab)
    return LoadedModel(checkpoint, tokenizer, open_backend(checkpoint, choice, threads), choice)


def _tokenizer_for(checkpoint: Checkpoint, vocab_path, unknown_char: str, need_vocab: bool) -> CharTokenizer | None:
    """--vocab, else the vocabulary inside a native file, else NAME.json beside a .pth."""
    if vocab_path is None and checkpoint.tokenizer is not None:
        return checkpoint.tokenizer
    path = vocab_path if vocab_path is not None else find_vocabulary(checkpoint.path)
    if path is None:
        if not need_vocab:
            return None
        raise VocabularyError(
            f"{checkpoint.path}: no vocabulary found; pass --vocab or put {checkpoint.path.with_suffix('.json').name} beside it"
        )
    tokenizer = CharTokenizer.from_file(path, unknown_char=unknown_char)
    check_vocabulary(checkpoint, tokenizer, str(path))
    return tokenizer
