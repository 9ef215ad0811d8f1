"""The training corpus: text files read once, split, given a vocabulary and tokenized to arrays.

A corpus file is UTF-8 text with one paragraph per line (see corpus/README.md). Each file is
split by the project's held-out rule: its last ceil(5 % of the lines) are validation text,
everything before them training text. Every line contributes its characters followed by
"\\n"; the files are joined in the order given.

The vocabulary is built from the training text only: every character seen at least
`min_char_count` times, plus "\\n" and the unknown character, with ids in code-point order.
Other characters become the unknown character.

With `punctuation="modern"` every line is rewritten with modern punctuation first
(text/punctuation.modernize: 「」 become “”, ． becomes 。...), the training and the held-out
text alike, and the tokenizer says so (its old marks are then never sampled).

Tokenizing a large corpus takes a while, so the arrays and the vocabulary are cached in a
directory under a key made of the file contents and the settings: a second run with the same
text skips the work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ai_writer.errors import AiWriterError, InputTextError
from ai_writer.files import atomic_files
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.punctuation import MAPPING_VERSION, MODERN, modernize

VALIDATION_PERCENT = 5
CACHE_FORMAT = "ai-writer-corpus-1"  # part of the cache key: change it when the array layout changes
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class CorpusFile:
    """One file of the corpus, after the split (counts in characters, newlines included)."""

    path: Path
    lines: int
    train_lines: int
    val_lines: int
    train_chars: int
    val_chars: int


@dataclass
class Corpus:
    tokenizer: CharTokenizer
    train: np.ndarray  # (n_train,) token ids, uint16 or uint32
    val: np.ndarray  # (n_val,) token ids of the held-out text
    files: list[CorpusFile]
    key: str  # hash of the file contents and settings; names the cache entry
    from_cache: bool  # True when the arrays were read from the cache

    @property
    def n_unknown_train(self) -> int:
        return int(np.count_nonzero(self.train == self.tokenizer.unknown_id))


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, without their newlines.

    A missing final newline is tolerated; "\\r\\n" and lone "\\r" count as line ends; a UTF-8
    byte-order mark is dropped. Bytes that are not UTF-8 raise InputTextError naming the offset.
    """
    return _lines_of(_read_bytes(Path(path)), Path(path))


def split_lines(lines: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training lines, validation lines): the last ceil(5 %) of the lines are held out."""
    n_val = (VALIDATION_PERCENT * len(lines) + 99) // 100
    cut = len(lines) - n_val
    return list(lines[:cut]), list(lines[cut:])


def join_lines(lines: Sequence[str]) -> str:
    """The text of a list of lines, each followed by "\\n"."""
    return "".join(line + "\n" for line in lines)


def build_vocabulary(text: str, min_char_count: int, unknown_char: str = UNKNOWN_CHAR) -> CharTokenizer:
    """Every character seen at least `min_char_count` times, plus "\\n" and the unknown character."""
    points = _code_points(text)
    if points.size:
        values, counts = np.unique(points, return_counts=True)
        kept = {chr(int(v)) for v in values[counts >= min_char_count]}
    else:
        kept = set()
    kept |= {"\n", unknown_char}
    return CharTokenizer(sorted(kept), unknown_char)


def encode_array(tokenizer: CharTokenizer, text: str) -> np.ndarray:
    """Token ids of `text` as the smallest unsigned array that holds the vocabulary."""
    table = np.array([ord(c) for c in tokenizer.chars], dtype=np.uint32)
    order = np.argsort(table)
    sorted_table = table[order]
    points = _code_points(text)
    where = np.searchsorted(sorted_table, points).clip(max=len(sorted_table) - 1)
    ids = np.where(sorted_table[where] == points, order[where], tokenizer.unknown_id)
    return ids.astype(array_dtype(tokenizer.vocab_size))


def array_dtype(vocab_size: int) -> type:
    return np.uint16 if vocab_size <= 2**16 else np.uint32


def load_corpus(
    paths: Sequence[str | os.PathLike],
    *,
    min_char_count: int = 5,
    cache_dir: str | os.PathLike | None = None,
    unknown_char: str = UNKNOWN_CHAR,
    vocabulary: CharTokenizer | None = None,
    punctuation: str | None = None,
) -> Corpus:
    """Read, split and tokenize the corpus, reusing the cache in `cache_dir` when it has this text.

    With `vocabulary` (fine-tuning a model), the text is tokenized with it instead of a
    vocabulary built from the training split; `min_char_count` is then unused.
    With `punctuation="modern"`, the text is modernized first (see the module's docstring).
    """
    if vocabulary is not None:
        unknown_char = vocabulary.unknown_char
    if not paths:
        raise InputTextError("no corpus files given")
    if min_char_count < 1:
        raise InputTextError(f"min_char_count must be at least 1, got {min_char_count}")
    if punctuation not in (None, MODERN):
        raise InputTextError(f"punctuation must be {MODERN!r} or None, got {punctuation!r}")
    paths = [Path(p) for p in paths]
    contents = [_read_bytes(p) for p in paths]
    key = _cache_key(contents, min_char_count, unknown_char, vocabulary, punctuation)
    names = _names(paths)

    cached = _read_cache(Path(cache_dir) / key, unknown_char) if cache_dir is not None else None
    if cached is not None and len(cached[3]) == len(paths):
        tokenizer, train, val, files = cached
        files = [dataclasses.replace(f, path=p) for f, p in zip(files, paths)]  # same text, maybe other names
        return Corpus(tokenizer.with_punctuation(punctuation), train, val, files, key, from_cache=True)

    train_parts, val_parts, files = [], [], []
    for path, data in zip(paths, contents):
        lines = _lines_of(data, path)
        if punctuation == MODERN:
            lines = [modernize(line) for line in lines]
        train_lines, val_lines = split_lines(lines)
        train_parts.append(join_lines(train_lines))
        val_parts.append(join_lines(val_lines))
        files.append(CorpusFile(path, len(lines), len(train_lines), len(val_lines),
                                len(train_parts[-1]), len(val_parts[-1])))
    train_text, val_text = "".join(train_parts), "".join(val_parts)
    if not train_text.strip("\n"):
        why = "is empty" if not (train_text + val_text).strip("\n") else "is too short: every line is held out for validation"
        raise InputTextError(f"{names}: the corpus {why} (the last 5 % of each file's lines are held out)")
    tokenizer = vocabulary if vocabulary is not None else build_vocabulary(train_text, min_char_count, unknown_char)
    tokenizer = tokenizer.with_punctuation(punctuation)
    n_chars = tokenizer.vocab_size - 2  # not counting "\n" and the unknown character
    if n_chars < 2:
        raise InputTextError(
            f"{names}: only {n_chars} distinct character(s) occur at least {min_char_count} times in the "
            "training text; a model needs at least 2 (give more text or lower the minimum character count)"
        )
    train, val = encode_array(tokenizer, train_text), encode_array(tokenizer, val_text)
    if cache_dir is not None:
        _write_cache(Path(cache_dir) / key, tokenizer, train, val, files)
    return Corpus(tokenizer, train, val, files, key, from_cache=False)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputTextError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputTextError(f"{path}: is a directory, expected a text file") from None
    except OSError as exc:
        raise InputTextError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _lines_of(data: bytes, path: Path) -> list[str]:
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        raise InputTextError(f"{path}: not UTF-8 text (byte 0x{data[offset]:02x} at offset {offset})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if text and not text.endswith("\n"):
        text += "\n"
    return text.split("\n")[:-1]


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _names(paths: Sequence[Path]) -> str:
    if len(paths) <= 3:
        return ", ".join(str(p) for p in paths)
    return f"{paths[0]} and {len(paths) - 1} more files"


def _cache_key(contents: Sequence[bytes], min_char_count: int, unknown_char: str,
               vocabulary: CharTokenizer | None, punctuation: str | None) -> str:
    given = "built" if vocabulary is None else vocabulary.to_json()
    text = "" if punctuation is None else f"\0punctuation {punctuation} {MAPPING_VERSION}"  # none: keys as before
    digest = hashlib.sha256(
        f"{CACHE_FORMAT}\0{min_char_count}\0{ord(unknown_char)}\0{len(contents)}\0{given}{text}".encode()
    )
    for data in contents:
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()[:32]


def _write_cache(folder: Path, tokenizer: CharTokenizer, train: np.ndarray, val: np.ndarray,
                 files: list[CorpusFile]) -> None:
    """Write the entry as a whole folder, atomically (files.atomic_files): a half-written entry is never read."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_files(folder) as staging:
            entry = staging / folder.name
            entry.mkdir()
            np.save(entry / "train.npy", train)
            np.save(entry / "val.npy", val)
            info = {
                "vocab": tokenizer.to_json(),
                "files": [[str(f.path), f.lines, f.train_lines, f.val_lines, f.train_chars, f.val_chars]
                          for f in files],
            }
            (entry / "corpus.json").write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")
    except OSError:
        pass  # the cache is an optimisation: a read-only or full disk only costs time


def _read_cache(folder: Path, unknown_char: str):
    try:
        info = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
        tokenizer = CharTokenizer.from_json_text(info["vocab"], str(folder), unknown_char)
        train = np.load(folder / "train.npy", allow_pickle=False)
        val = np.load(folder / "val.npy", allow_pickle=False)
        files = [CorpusFile(Path(p), *counts) for p, *counts in info["files"]]
    except (OSError, ValueError, KeyError, TypeError, AiWriterError):
        return None  # no entry, or a damaged one: tokenize again
    return tokenizer, train, val, files
