"""The RWKV world tokenizer: vocabulary rwkv_vocab_v20230424, 65,536 ids over bytes.

RWKV world models (v5, v6, v7) read text as UTF-8 bytes cut into tokens by a greedy longest
match against a table of 65,529 byte strings (ids 1 to 65529; id 0 is the end-of-text marker
and ids 65530-65535 are unused rows of the model). A token can hold several characters or
only part of one, so streamed text goes through `stream_decoder()`, which holds back the
bytes of an unfinished character until it is complete.

The table is read from the vocabulary file the `pyrwkv-tokenizer` package ships, and that
package's Rust encoder does the matching; text that strict UTF-8 refuses (surrogates, see
`text_bytes`) and tables given as a file without that package are matched here in Python,
with the same result, only slower.
"""

from __future__ import annotations

import ast
import codecs
import contextlib
import functools
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from ai_writer.errors import VocabularyError

VOCAB_NAME = "rwkv_vocab_v20230424"
WORLD_VOCAB_SIZE = 65536  # rows of a world model's embedding: the table's ids 1-65529, and unused ones
PACKAGE = "pyrwkv-tokenizer"

_LONE_SURROGATE = re.compile("[\ud800-\udbff\udc00-\udc7f]")  # U+DC80-U+DCFF are escaped bytes


def text_bytes(text: str) -> bytes:
    """The UTF-8 bytes of `text`, which the world tokenizer matches.

    Text that strict UTF-8 cannot encode holds surrogates; they are read as follows: a high
    surrogate followed by a low one is the character the pair stands for; U+DC80-U+DCFF is the
    byte 0x80-0xFF it escapes (Python's errors="surrogateescape", e.g. a file of invalid
    UTF-8 read that way); any other lone surrogate is U+FFFD, the replacement character.
    """
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _LONE_SURROGATE.sub("\ufffd", paired).encode("utf-8", "surrogateescape")


class WorldTokenizer:
    """Maps text to world-model ids and back.

    >>> tok = default_world_tokenizer()
    >>> tok.encode("Hello 你好\\n")
    [33155, 33, 10464, 11685, 11]
    >>> tok.decode([10464, 11685])
    '你好'
    """

    def __init__(self, table: Sequence[bytes | None], *, source: str = VOCAB_NAME, fast_encoder=None) -> None:
        """`table[i]` is the bytes of id `i` (None: an id with no text); `fast_encoder` (optional) has
        `encode(str) -> list[int]` giving exactly the greedy match over `table` for text without surrogates."""
        self._table = tuple(table)
        self._ids = {piece: i for i, piece in enumerate(table) if piece is not None}
        missing = [bytes([b]) for b in range(256) if bytes([b]) not in self._ids]
        if missing:
            raise VocabularyError(f"vocabulary {source}: no token for the byte {missing[0]!r}; every byte needs one")
        self._source = source
        self._fast = fast_encoder
        self._prefix_table: dict[bytes, int] | None = None  # built on first use of the Python matcher
        self._newline_id = self._ids.get(b"\n")
        self._banned = tuple(i for i, piece in enumerate(table) if piece is None)
        self._line_ends = frozenset(i for i, piece in enumerate(table) if piece is not None and piece.endswith(b"\n"))

    @classmethod
    def from_file(cls, path: str | Path, vocab_size: int = WORLD_VOCAB_SIZE) -> "WorldTokenizer":
        """Read an RWKV vocabulary file (lines "ID LITERAL LENGTH", the literal a Python str or bytes)."""
        table = _read_vocabulary(Path(path), vocab_size)
        try:
            import pyrwkv_tokenizer
        except ImportError:
            fast = None  # the Python matcher alone: the same ids, slower
        else:
            try:
                with _quiet_stderr():  # a Rust panic prints its own lines there
                    fast = pyrwkv_tokenizer.WorldTokenizer(str(path))
            except Exception:  # a table it cannot take: the Python matcher reads every valid one
                fast = None
            except BaseException as exc:  # pyo3's PanicException derives from BaseException
                if not _is_rust_panic(exc):
                    raise
                fast = None
        return cls(table, source=str(path), fast_encoder=fast)

    @property
    def vocab_size(self) -> int:
        return len(self._table)

    @property
    def unknown_id(self) -> None:
        """None: every byte has a token, so no text is unknown."""
        return None

    @property
    def newline_id(self) -> int | None:
        """The id of "\\n"."""
        return self._newline_id

    @property
    def banned_ids(self) -> tuple[int, ...]:
        """Ids never to sample: those with no text (0, the end-of-text marker, and the unused rows)."""
        return self._banned

    @property
    def line_end_ids(self) -> frozenset[int]:
        """Ids whose text ends with "\\n" (after them the sampler uses top_p_newline)."""
        return self._line_ends

    @property
    def source(self) -> str:
        return self._source

    @property
    def name(self) -> str:
        """The vocabulary's name (its file name without .txt), as model metadata names it."""
        return Path(self._source).stem

    def __repr__(self) -> str:
        return f"WorldTokenizer({self._source}, vocab_size={self.vocab_size})"

    def describe(self) -> str:
        return f"RWKV world tokenizer {self.name}, {self.vocab_size} ids"

    def encode(self, text: str) -> list[int]:
        """The ids of `text` (surrogates are read as `text_bytes` says)."""
        if self._fast is not None:
            try:
                return self._fast.encode(text)
            except UnicodeEncodeError:  # surrogates, which the Rust encoder cannot take
                pass
            except BaseException as exc:
                if not _is_rust_panic(exc):
                    raise
                self._fast = None  # the Python matcher gives the same ids
        return self.encode_bytes(text_bytes(text))

    def encode_bytes(self, data: bytes) -> list[int]:
        """The ids of any bytes: at each position the longest token that matches."""
        prefixes = self._prefixes()
        ids, i, n = [], 0, len(data)
        while i < n:
            end, best = i + 1, prefixes[data[i : i + 1]]  # every byte is a token
            j = i + 2
            while j <= n:
                found = prefixes.get(data[i:j])
                if found is None:
                    break
                if found >= 0:
                    end, best = j, found
                j += 1
            ids.append(best)
            i = end
        return ids

    def _prefixes(self) -> dict[bytes, int]:
        """Every prefix of every token: its id if the prefix is a token itself, else -1."""
        if self._prefix_table is None:
            prefixes: dict[bytes, int] = {}
            for piece in self._ids:
                for k in range(1, len(piece)):
                    prefixes.setdefault(piece[:k], -1)
            prefixes.update(self._ids)
            self._prefix_table = prefixes
        return self._prefix_table

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one id; an id with no text raises VocabularyError."""
        piece = self._table[token_id] if 0 <= token_id < len(self._table) else None
        if piece is None:
            raise VocabularyError(
                f"vocabulary {self.name}: token id {token_id} has no text "
                f"(ids {min(self._ids.values())} to {max(self._ids.values())} have)"
            )
        return piece

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return b"".join(self.token_bytes(i) for i in ids)

    def decode(self, ids: Iterable[int], errors: str = "replace") -> str:
        """The text of `ids`. Bytes that are not UTF-8 become U+FFFD, or with
        errors="surrogateescape" the surrogates they came from (then decode(encode(x)) == x)."""
        return self.decode_bytes(ids).decode("utf-8", errors)

    def stream_decoder(self) -> "Utf8StreamDecoder":
        """A decoder for ids that arrive one at a time (see Utf8StreamDecoder)."""
        return Utf8StreamDecoder(self.token_bytes)


class Utf8StreamDecoder:
    """Turns ids arriving one by one into text, never splitting a character.

    `decode(id)` returns the complete characters the id finishes (maybe none); the bytes of a
    character still incomplete wait for the next ids. Bytes that can never form a character
    become U+FFFD as soon as that is certain. `flush()` ends the stream: what is still waiting
    comes out as U+FFFD.
    """

    def __init__(self, token_bytes) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def decode(self, token_id: int) -> str:
        return self._utf8.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


@functools.lru_cache(maxsize=1)
def default_world_tokenizer() -> WorldTokenizer:
    """The rwkv_vocab_v20230424 tokenizer, from the vocabulary file `pyrwkv-tokenizer` ships (read once)."""
    try:
        import pyrwkv_tokenizer
    except ImportError:
        raise VocabularyError(
            f"the RWKV world tokenizer needs the {PACKAGE} package: pip install {PACKAGE}"
        ) from None
    return WorldTokenizer.from_file(Path(pyrwkv_tokenizer.__file__).parent / f"{VOCAB_NAME}.txt")


def named_world_tokenizer(name: str, source: str) -> WorldTokenizer:
    """The tokenizer a model's metadata names; `source` names the model in errors."""
    if name != VOCAB_NAME:
        raise VocabularyError(f"{source}: the model names the tokenizer {name!r}; ai-writer knows {VOCAB_NAME}")
    return default_world_tokenizer()


def is_world_vocabulary(path: str | Path) -> bool:
    """Whether `path` looks like an RWKV vocabulary file (its first line "1 LITERAL 1") rather than JSON."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return re.match(rb"\d+ b?['\"]", head) is not None


def _is_rust_panic(exc: BaseException) -> bool:
    """Whether `exc` is a panic of the Rust encoder (pyo3_runtime.PanicException, which the package does not
    export): caught by its exact name, so that KeyboardInterrupt and SystemExit still go through."""
    return type(exc).__name__ == "PanicException" and type(exc).__module__ == "pyo3_runtime"


@contextlib.contextmanager
def _quiet_stderr():
    """The process's stderr (file descriptor 2) sent to the null device for the block: a Rust panic writes its
    message and backtrace there directly, past Python's sys.stderr."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _literal(text: str) -> str | bytes:
    """A Python str or bytes literal of the vocabulary file: read directly when it holds no escape (most of
    them: the file reads in a third of the time), else by ast.literal_eval (a literal only: never code)."""
    if "\\" not in text and len(text) >= 2:
        if text[0] == text[-1] and text[0] in "'\"":
            return text[1:-1]
        if text[0] == "b" and len(text) >= 3 and text[1] == text[-1] and text[1] in "'\"" and text[2:-1].isascii():
            return text[2:-1].encode("ascii")
    return ast.literal_eval(text)


def _read_vocabulary(path: Path, vocab_size: int) -> list[bytes | None]:
    where = f"vocabulary {path}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise VocabularyError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"{where}: cannot read it as UTF-8 text ({exc})") from None
    table: list[bytes | None] = [None] * vocab_size
    seen: dict[bytes, int] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            first, last = line.index(" "), line.rindex(" ")
            token_id, length = int(line[:first]), int(line[last:])
            piece = _literal(line[first:last].strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise VocabularyError(f"{where}: line {number} is not 'ID LITERAL LENGTH'") from None
        if isinstance(piece, str):
            piece = piece.encode("utf-8", "surrogatepass")
        if not isinstance(piece, bytes) or len(piece) != length or not piece:
            raise VocabularyError(f"{where}: line {number}: the token is not {length} bytes")
        if not 0 <= token_id < vocab_size:
            raise VocabularyError(f"{where}: line {number}: id {token_id} is outside 0 to {vocab_size - 1}")
        if table[token_id] is not None or piece in seen:
            raise VocabularyError(f"{where}: line {number}: id {token_id} or its token appears twice")
        table[token_id], seen[piece] = piece, token_id
    return table
