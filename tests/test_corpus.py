"""The training corpus: the held-out split rule, the vocabulary, tokenizing, the cache, bad files."""

import numpy as np
import pytest

from ai_writer.training.corpus import (
    build_vocabulary,
    encode_array,
    load_corpus,
    read_lines,
    split_lines,
)
from ai_writer.errors import InputTextError
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


@pytest.mark.parametrize(
    "n_lines, n_val",
    [(0, 0), (1, 1), (2, 1), (19, 1), (20, 1), (21, 2), (40, 2), (41, 3), (100, 5), (101, 6), (2710, 136)],
)
def test_split_holds_out_the_last_ceil_5_percent_of_lines(n_lines, n_val):
    lines = [f"line {i}" for i in range(n_lines)]
    train, val = split_lines(lines)
    assert len(val) == n_val == -(-5 * n_lines // 100)
    assert train + val == lines


def test_read_lines_handles_a_missing_final_newline_crlf_and_a_bom(tmp_path):
    assert read_lines(write(tmp_path / "a.txt", "one\ntwo\n")) == ["one", "two"]
    assert read_lines(write(tmp_path / "b.txt", "one\ntwo")) == ["one", "two"]
    assert read_lines(write(tmp_path / "c.txt", "\ufeffone\r\ntwo\r\n")) == ["one", "two"]
    assert read_lines(write(tmp_path / "d.txt", "")) == []
    assert read_lines(write(tmp_path / "e.txt", "one\n\nthree\n")) == ["one", "", "three"]


def test_vocabulary_keeps_frequent_characters_sorted_by_code_point():
    tok = build_vocabulary("bbbaaa\nzz\nccc\n", min_char_count=3)
    assert tok.chars == tuple(sorted(["\n", "a", "b", "c", UNKNOWN_CHAR]))
    assert tok.unknown_char == UNKNOWN_CHAR
    assert tok.encode("z")[0] == tok.unknown_id  # seen only twice


def test_unknown_char_in_the_text_is_just_the_unknown_id():
    text = ("ab" + UNKNOWN_CHAR) * 10
    tok = build_vocabulary(text, min_char_count=1)
    assert tok.vocab_size == 4  # a, b, "\n", UNKNOWN_CHAR: not twice
    ids = encode_array(tok, text + "q")
    assert ids.tolist() == tok.encode(text + "q")
    assert ids[-1] == ids[2] == tok.unknown_id


def test_encode_array_matches_the_tokenizer_and_is_compact():
    text = "漢字 and ASCII, 😀 astral\n" * 3
    tok = build_vocabulary(text, min_char_count=1)
    ids = encode_array(tok, text + "未")
    assert ids.dtype == np.uint16
    assert ids.tolist() == tok.encode(text + "未")


def test_load_corpus_splits_each_file_and_builds_the_vocabulary_from_training_text(tmp_path):
    a = write(tmp_path / "a.txt", "".join(f"aaaaa {i % 10}\n" for i in range(20)) + "zzzzzzzzzz\n")  # 21 lines
    b = write(tmp_path / "b.txt", "bbbbb\nbbbbb\nyyyyyyyyyy")  # 3 lines, no final newline
    corpus = load_corpus([a, b], min_char_count=2)
    assert [(f.lines, f.train_lines, f.val_lines) for f in corpus.files] == [(21, 19, 2), (3, 2, 1)]
    tok = corpus.tokenizer
    assert "z" not in tok.chars and "y" not in tok.chars  # only in held-out lines
    assert "9" not in tok.chars and "8" in tok.chars  # "9" is in one training line, "8" in two
    train_text = tok.decode(corpus.train.tolist())
    assert train_text.startswith("aaaaa 0\naaaaa 1\n")
    assert train_text.endswith(f"aaaaa {UNKNOWN_CHAR}\naaaaa 0\naaaaa 1\n" + "aaaaa 2\naaaaa 3\naaaaa 4\n"
                               "aaaaa 5\naaaaa 6\naaaaa 7\naaaaa 8\nbbbbb\nbbbbb\n")
    unknown = UNKNOWN_CHAR
    assert tok.decode(corpus.val.tolist()) == f"aaaaa {unknown}\n{unknown * 10}\n{unknown * 10}\n"
    assert len(corpus.train) == sum(f.train_chars for f in corpus.files)


def test_second_load_reads_the_cache_and_a_changed_file_does_not(tmp_path):
    path = write(tmp_path / "a.txt", "hello world\n" * 30)
    cache = tmp_path / "cache"
    first = load_corpus([path], cache_dir=cache)
    second = load_corpus([path], cache_dir=cache)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert np.array_equal(first.train, second.train) and np.array_equal(first.val, second.val)
    assert first.tokenizer.chars == second.tokenizer.chars
    assert load_corpus([path], cache_dir=cache, min_char_count=2).from_cache is False  # another setting
    write(path, "hello there\n" * 30)
    changed = load_corpus([path], cache_dir=cache)
    assert changed.from_cache is False and changed.key != first.key


def test_cache_is_keyed_by_contents_not_names(tmp_path):
    a = write(tmp_path / "a.txt", "hello world\n" * 30)
    b = write(tmp_path / "b.txt", "hello world\n" * 30)
    load_corpus([a], cache_dir=tmp_path / "cache")
    again = load_corpus([b], cache_dir=tmp_path / "cache")
    assert again.from_cache and again.files[0].path == b


def test_a_damaged_cache_entry_is_rebuilt(tmp_path):
    path = write(tmp_path / "a.txt", "hello world\n" * 30)
    first = load_corpus([path], cache_dir=tmp_path / "cache")
    (tmp_path / "cache" / first.key / "train.npy").write_bytes(b"garbage")
    again = load_corpus([path], cache_dir=tmp_path / "cache")
    assert again.from_cache is False and np.array_equal(again.train, first.train)


def one_line_error(call, *names):
    with pytest.raises(InputTextError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for name in names:
        assert str(name) in message
    return message


def test_bad_corpus_errors_are_one_line_and_name_the_file(tmp_path):
    good = write(tmp_path / "good.txt", "hello world\n" * 30)
    missing = tmp_path / "missing.txt"
    assert "no such file" in one_line_error(lambda: load_corpus([good, missing]), missing)
    assert "directory" in one_line_error(lambda: load_corpus([tmp_path]), tmp_path)

    latin1 = write(tmp_path / "latin1.txt", "caf\xe9\n", encoding="latin-1")
    message = one_line_error(lambda: load_corpus([good, latin1]), latin1)
    assert "not UTF-8" in message and "0xe9" in message and "offset 3" in message
    bom_bad = write(tmp_path / "bom.txt", b"\xef\xbb\xbfab\xffcd\n")
    assert "offset 5" in one_line_error(lambda: read_lines(bom_bad), bom_bad)

    empty = write(tmp_path / "empty.txt", "")
    assert "empty" in one_line_error(lambda: load_corpus([empty]), empty)
    blank = write(tmp_path / "blank.txt", "\n\n\n")
    assert "empty" in one_line_error(lambda: load_corpus([blank]), blank)
    one_line = write(tmp_path / "one.txt", "a single paragraph\n")
    assert "held out" in one_line_error(lambda: load_corpus([one_line]), one_line)

    monotone = write(tmp_path / "mono.txt", "aaaa\n" * 30)
    assert "distinct" in one_line_error(lambda: load_corpus([monotone]), monotone)
    rare = write(tmp_path / "rare.txt", "ab\n" * 30)
    assert "30 times" not in one_line_error(lambda: load_corpus([rare], min_char_count=100), rare, "100")
    assert "no corpus files" in one_line_error(lambda: load_corpus([]))
