"""The character tokenizer of AI-Writer models: one character, one id.

A vocabulary is a table of single characters; a character's id is its index. Characters
missing from the table are read as the unknown character (U+E083 by default), which the
sampler never produces. `CharTokenizer.from_file` reads the original AI-Writer vocabulary
files (a JSON object {"0": ch, "1": ch, ...}, UTF-16 with a BOM) as well as UTF-8 ones.

A vocabulary of a model trained with modern punctuation (`punctuation="modern"`, stored in the
model file's metadata) also bans the old marks of text/punctuation.py (「」『』﹔︰．, half-width
quotes...), each one whose modern replacement the table has: such a model never writes them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from ai_writer.errors import VocabularyError
from ai_writer.text.punctuation import MODERN, OLD_PUNCTUATION

UNKNOWN_CHAR = "\ue083"

_DECIMAL_KEY = re.compile(r"0|[1-9][0-9]*")
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number"}
_JSON_KINDS.update({bool: "a boolean", type(None): "null"})


def _show(text: str) -> str:
    """Quote `text` for a one-line message; invisible characters become JSON escapes."""
    return json.dumps(text, ensure_ascii=not text.isprintable())


def _cut(text: str, limit: int = 40) -> str:
    """`text` cut short for a message: a key of a hostile file can be thousands of characters."""
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _json_text(value: object) -> str:
    try:
        return json.dumps(value)
    except (ValueError, RecursionError):  # a number of thousands of digits, deep nesting
        return "a JSON value too big to show"


def _code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


class CharTokenizer:
    """Maps text to ids and back, one character per id.

    >>> tok = CharTokenizer(["\\n", "你", "好", UNKNOWN_CHAR])
    >>> tok.encode("你好吗")
    [1, 2, 3]
    >>> tok.decode([0, 2])
    '\\n好'
    """

    def __init__(self, chars: Sequence[str], unknown_char: str = UNKNOWN_CHAR, *, source: str = "",
                 punctuation: str | None = None) -> None:
        """Build a tokenizer whose id `i` is `chars[i]`; `source` names the file in errors.

        `punctuation`: "modern" for a model trained on text/punctuation.modernize'd text (its
        old marks are banned), None for any other.
        """
        where = f"vocabulary {source}" if source else "vocabulary"
        if punctuation not in (None, MODERN):
            raise VocabularyError(f"{where}: punctuation {_show(_cut(str(punctuation)))} is not known "
                                  f"(expected \"{MODERN}\" or none)")
        if len(chars) == 0:
            raise VocabularyError(f"{where}: the table is empty")
        ids: dict[str, int] = {}
        for i, char in enumerate(chars):
            if not isinstance(char, str) or len(char) != 1:
                shown = _show(char) if isinstance(char, str) else repr(char)
                raise VocabularyError(f"{where}: id {i} is {shown}, expected one character")
            if char in ids:
                raise VocabularyError(
                    f"{where}: ids {ids[char]} and {i} are both {_show(char)} ({_code_point(char)})"
                )
            ids[char] = i
        if unknown_char not in ids:
            raise VocabularyError(
                f"{where}: no entry for the unknown character {_code_point(unknown_char)}"
            )
        self._chars = tuple(chars)
        self._ids = ids
        self._unknown_char = unknown_char
        self._unknown_id = ids[unknown_char]
        self._punctuation = punctuation
        self._banned = (self._unknown_id,) + (self._old_punctuation_ids() if punctuation == MODERN else ())

    def _old_punctuation_ids(self) -> tuple[int, ...]:
        """Ids of the old marks whose modern replacements are all in the table (never leave a model without
        a way to quote or end a sentence)."""
        return tuple(sorted(self._ids[old] for old, new in OLD_PUNCTUATION.items()
                            if old in self._ids and all(char in self._ids for char in new)))

    @property
    def vocab_size(self) -> int:
        return len(self._chars)

    def missing_characters(self, text: str) -> dict[str, int]:
        """The characters of `text` outside the table (each read as the unknown character), with their counts,
        in order of first appearance."""
        counts: dict[str, int] = {}
        for char in text:
            if char not in self._ids:
                counts[char] = counts.get(char, 0) + 1
        return counts

    @property
    def unknown_id(self) -> int:
        """The id every character outside the table is read as."""
        return self._unknown_id

    @property
    def unknown_char(self) -> str:
        return self._unknown_char

    @property
    def newline_id(self) -> int | None:
        """The id of "\\n", or None when the table has no newline."""
        return self._ids.get("\n")

    @property
    def punctuation(self) -> str | None:
        """"modern" when the model writes only modern punctuation (text/punctuation.py), else None."""
        return self._punctuation

    def with_punctuation(self, punctuation: str | None) -> "CharTokenizer":
        """The same table, for a model whose punctuation is `punctuation`."""
        return CharTokenizer(self._chars, self._unknown_char, punctuation=punctuation)

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Ids never to sample: the unknown character, and the old punctuation of a modern model."""
        return self._banned

    @property
    def line_end_ids(self) -> frozenset[int]:
        """Ids whose text ends with "\\n" (after them the sampler uses top_p_newline)."""
        return frozenset({self.newline_id}) - {None}

    @property
    def chars(self) -> tuple[str, ...]:
        return self._chars

    def __repr__(self) -> str:
        return (f"CharTokenizer(vocab_size={self.vocab_size}, unknown_id={self.unknown_id}"
                + (f", punctuation={self._punctuation!r})" if self._punctuation else ")"))

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text`; characters not in the table give `unknown_id`."""
        lookup = self._ids.get
        unknown = self._unknown_id
        return [lookup(char, unknown) for char in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of `ids`; an id outside the table raises VocabularyError."""
        chars = self._chars
        pieces = []
        for i in ids:
            if not 0 <= i < len(chars):
                raise VocabularyError(
                    f"vocabulary: token id {i} is outside the table (ids 0 to {len(chars) - 1})"
                )
            pieces.append(chars[i])
        return "".join(pieces)

    def stream_decoder(self) -> "CharStreamDecoder":
        """A decoder for ids that arrive one at a time: one id, one character."""
        return CharStreamDecoder(self)

    def count_unknown(self, text: str) -> int:
        """How many characters of `text` are read as the unknown character."""
        lookup = self._ids.get
        unknown = self._unknown_id
        return sum(1 for char in text if lookup(char, unknown) == unknown)

    def to_json(self) -> str:
        """The table as AI-Writer JSON text ({"0": ch, ...}, non-ASCII left raw); write it as UTF-8."""
        return json.dumps({str(i): char for i, char in enumerate(self._chars)}, ensure_ascii=False)

    @classmethod
    def from_json_text(cls, text: str, source: str, unknown_char: str = UNKNOWN_CHAR, *,
                       punctuation: str | None = None) -> "CharTokenizer":
        """Parse AI-Writer vocabulary JSON; `source` names where it came from in errors."""
        where = f"vocabulary {source}"

        def reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
            table: dict[str, object] = {}
            for key, value in pairs:
                if key in table:
                    raise VocabularyError(f"{where}: key {_show(_cut(key))} appears twice")
                table[key] = value
            return table

        try:
            table = json.loads(text, object_pairs_hook=reject_duplicate_keys)
        except json.JSONDecodeError as exc:
            raise VocabularyError(
                f"{where}: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
            ) from None
        except RecursionError:
            raise VocabularyError(f"{where}: not an AI-Writer vocabulary (JSON nested too deeply)") from None
        if not isinstance(table, dict):
            raise VocabularyError(
                f"{where}: expected a JSON object mapping ids to characters, got {_JSON_KINDS[type(table)]}"
            )
        largest = len(str(len(table)))  # an id has at most as many digits as the table's size
        for key in table:
            if not _DECIMAL_KEY.fullmatch(key):
                raise VocabularyError(f"{where}: key {_show(_cut(key))} is not a decimal id")
            if len(key) > largest:  # int() of 5,000 digits would raise; no such id can be in the table anyway
                raise VocabularyError(f"{where}: key {_show(_cut(key))} is not an id of a table of "
                                      f"{len(table)} entries")
        missing = set(range(len(table))).difference(map(int, table))
        if missing:
            raise VocabularyError(
                f'{where}: ids are not contiguous: "{min(missing)}" is missing '
                f"({len(table)} entries, largest key \"{max(map(int, table))}\")"
            )
        chars = [""] * len(table)
        for key, value in table.items():
            if not isinstance(value, str) or len(value) != 1:
                shown = _show(_cut(value)) if isinstance(value, str) else _cut(_json_text(value))
                raise VocabularyError(f"{where}: key {_show(key)} maps to {shown}, expected one character")
            chars[int(key)] = value
        return cls(chars, unknown_char, source=source, punctuation=punctuation)

    @classmethod
    def from_file(cls, path: str | Path, unknown_char: str = UNKNOWN_CHAR) -> "CharTokenizer":
        """Read a vocabulary file: UTF-16 with a BOM (the original releases) or UTF-8."""
        where = f"vocabulary {path}"
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise VocabularyError(f"{where}: file not found") from None
        except OSError as exc:
            raise VocabularyError(f"{where}: cannot read the file ({exc.strerror or exc})") from None
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"  # the BOM gives the byte order and is dropped
        elif data.startswith(b"\xef\xbb\xbf"):
            encoding = "utf-8-sig"
        else:
            encoding = "utf-8"
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError as exc:
            raise VocabularyError(
                f"{where}: not valid {exc.encoding.upper()} text ({exc.reason} at byte {exc.start}); "
                "expected UTF-16 with a BOM or UTF-8"
            ) from None
        return cls.from_json_text(text, str(path), unknown_char)


class CharStreamDecoder:
    """The streaming decoder of a character vocabulary (see world_tokenizer.Utf8StreamDecoder):
    every id is a whole character, so nothing is ever held back."""

    def __init__(self, tokenizer: CharTokenizer) -> None:
        self._tokenizer = tokenizer

    def decode(self, token_id: int) -> str:
        return self._tokenizer.decode([token_id])

    def flush(self) -> str:
        return ""
