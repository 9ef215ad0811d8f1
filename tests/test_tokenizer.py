"""CharTokenizer: the AI-Writer vocabulary files (conformance README §2) and their errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from helpers import DATA

from ai_writer.errors import VocabularyError
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer

TINY = DATA / "tiny_vocab.json"

# file, vocab_size, unknown id, newline id, space id
REAL_VOCABS = [
    ("wangwen-2022-02-15.json", 8849, 8778, 2, 5),
    ("word-2022-02-16.json", 8849, 8814, 1, 2),
    ("tiny_vocab.json", 50, 33, 1, 2),
]


@pytest.fixture(scope="module")
def tiny() -> CharTokenizer:
    return CharTokenizer.from_file(TINY)


@pytest.mark.parametrize("name, size, unknown, newline, space", REAL_VOCABS)
def test_reads_the_original_utf16_vocabularies(
    name: str, size: int, unknown: int, newline: int, space: int
) -> None:
    assert (DATA / name).read_bytes()[:2] == b"\xff\xfe"
    tok = CharTokenizer.from_file(DATA / name)
    assert tok.vocab_size == size == len(tok.chars)
    assert tok.unknown_id == unknown and tok.chars[unknown] == UNKNOWN_CHAR
    assert tok.newline_id == newline
    assert tok.encode(" \n") == [space, newline]


@pytest.mark.parametrize("name", [row[0] for row in REAL_VOCABS])
def test_to_json_reproduces_the_original_file_byte_for_byte(name: str) -> None:
    tok = CharTokenizer.from_file(DATA / name)
    assert b"\xff\xfe" + tok.to_json().encode("utf-16-le") == (DATA / name).read_bytes()


def test_tiny_vocab_ids(tiny: CharTokenizer) -> None:
    assert tiny.chars[:6] == ("\x07", "\n", " ", "!", '"', "\\")
    assert tiny.encode("这是一颗魔法") == [12, 13, 14, 15, 16, 17]
    assert tiny.encode("Az影") == [44, 45, 49]


def test_encodes_the_cleaned_openings_like_the_original(tiny: CharTokenizer) -> None:
    cases = json.loads((DATA / "refine_context_vectors.json").read_text(encoding="utf-8"))["cases"]
    for case in cases:
        assert tiny.encode(case["refine_context_new"]) == case["encoded_tiny_vocab_new"], case["input"]


def test_unknown_characters_become_the_unknown_id(tiny: CharTokenizer) -> None:
    assert tiny.encode("这X是😀") == [12, 33, 13, 33]
    assert tiny.count_unknown("这X是😀") == 2
    assert tiny.count_unknown("这是") == 0
    assert tiny.decode(tiny.encode("这X")) == "这" + UNKNOWN_CHAR


def test_round_trip(tiny: CharTokenizer) -> None:
    text = "\n林黛玉朝着那剑，竟如此精妙!“只见”\\ Az"
    assert tiny.decode(tiny.encode(text)) == text
    assert tiny.decode(range(tiny.vocab_size)) == "".join(tiny.chars)
    again = CharTokenizer.from_json_text(tiny.to_json(), "memory")
    assert again.chars == tiny.chars and again.unknown_id == tiny.unknown_id


def test_encode_is_fast_on_long_texts() -> None:
    tok = CharTokenizer.from_file(DATA / "word-2022-02-16.json")
    text = "".join(tok.chars) * (100_000 // tok.vocab_size + 1)
    start = time.perf_counter()
    ids = tok.encode(text)
    elapsed = time.perf_counter() - start
    assert ids[: tok.vocab_size] == list(range(tok.vocab_size))
    assert len(ids) == len(text) > 100_000
    assert elapsed < 1.0  # a dict lookup per character: a few milliseconds in practice


def test_decode_rejects_ids_outside_the_table(tiny: CharTokenizer) -> None:
    for bad in (-1, 50):
        with pytest.raises(VocabularyError, match="outside the table"):
            tiny.decode([1, bad])


def _write(tmp_path: Path, table: dict[str, str], encoding: str) -> Path:
    path = tmp_path / f"vocab-{encoding}.json"
    path.write_bytes(json.dumps(table, ensure_ascii=False).encode(encoding))
    return path


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-be-bom"])
def test_reads_utf8_and_utf16_files_with_keys_in_any_order(tmp_path: Path, encoding: str) -> None:
    table = {"2": "好", "0": "\n", "3": UNKNOWN_CHAR, "1": "你"}
    if encoding == "utf-16-be-bom":
        path = tmp_path / "be.json"
        path.write_bytes(b"\xfe\xff" + json.dumps(table, ensure_ascii=False).encode("utf-16-be"))
    else:
        path = _write(tmp_path, table, encoding)
    tok = CharTokenizer.from_file(path)
    assert tok.chars == ("\n", "你", "好", UNKNOWN_CHAR)
    assert tok.encode("你好吗") == [1, 2, 3]


def test_custom_unknown_char_and_no_newline() -> None:
    tok = CharTokenizer(["a", "b", "?"], unknown_char="?")
    assert tok.unknown_id == 2 and tok.newline_id is None
    assert tok.encode("abc") == [0, 1, 2]


BAD_FILES = [
    ("not-json", b"{0: 'a'}", "not JSON"),
    ("array", b'["a", "\xee\x82\x83"]', "expected a JSON object"),
    ("empty-object", b"{}", "empty"),
    ("bad-utf8", b'{"0": "\xff\xfe\xfd"}', "not valid UTF-8"),
    ("odd-utf16", b"\xff\xfe{\x00}", "not valid UTF-16"),
    ("gap", '{"0": "a", "2": "\ue083"}'.encode(), 'not contiguous: "1" is missing'),
    ("not-decimal", '{"0": "a", "01": "\ue083"}'.encode(), 'key "01" is not a decimal id'),
    ("multi-char", '{"0": "\ue083", "1": "ab"}'.encode(), 'key "1" maps to "ab", expected one character'),
    ("empty-value", '{"0": "\ue083", "1": ""}'.encode(), 'key "1" maps to "", expected one character'),
    ("number-value", '{"0": "\ue083", "1": 7}'.encode(), 'key "1" maps to 7, expected one character'),
    ("duplicate-char", '{"0": "\ue083", "1": "a", "2": "a"}'.encode(), 'ids 1 and 2 are both "a"'),
    ("duplicate-key", '{"0": "\ue083", "0": "a"}'.encode(), 'key "0" appears twice'),
    ("no-unknown", b'{"0": "a", "1": "\\n"}', "no entry for the unknown character U+E083"),
]


@pytest.mark.parametrize("name, content, expected", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_bad_files_give_one_line_errors_naming_the_file(
    tmp_path: Path, name: str, content: bytes, expected: str
) -> None:
    path = tmp_path / f"{name}.json"
    path.write_bytes(content)
    with pytest.raises(VocabularyError) as info:
        CharTokenizer.from_file(path)
    message = str(info.value)
    assert message.startswith(f"vocabulary {path}: ")
    assert expected in message
    assert len(message.splitlines()) == 1


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(VocabularyError, match="file not found") as info:
        CharTokenizer.from_file(tmp_path / "nope.json")
    assert str(tmp_path / "nope.json") in str(info.value)
    with pytest.raises(VocabularyError, match="cannot read") as info:
        CharTokenizer.from_file(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_invisible_characters_in_errors_stay_on_one_line() -> None:
    with pytest.raises(VocabularyError) as info:
        CharTokenizer(["\u2028", "\u2028", UNKNOWN_CHAR])
    assert str(info.value) == 'vocabulary: ids 0 and 1 are both "\\u2028" (U+2028)'


@pytest.mark.parametrize(
    "chars, expected",
    [
        (["a", "bc", UNKNOWN_CHAR], 'id 1 is "bc", expected one character'),
        (["a", "a", UNKNOWN_CHAR], 'ids 0 and 1 are both "a" (U+0061)'),
        (["a", "b"], "no entry for the unknown character U+E083"),
        ([], "the table is empty"),
    ],
)
def test_constructor_validates_the_table(chars: list[str], expected: str) -> None:
    with pytest.raises(VocabularyError, match="^vocabulary: ") as info:
        CharTokenizer(chars)
    assert expected in str(info.value)
