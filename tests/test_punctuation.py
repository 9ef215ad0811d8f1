"""Modern punctuation: the mapping, a model marked "modern" (old marks banned, openings modernized), an unmarked
model left as it was, and `ai-writer train --punctuation modern` marking the model it writes."""

from __future__ import annotations

import click
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_writer.errors import VocabularyError
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.cleanup import clean_opening
from ai_writer.text.punctuation import MODERN, OLD_PUNCTUATION, modernize, writes_modern

OLD_MARKS = "「」『』﹔︰﹕﹖﹗﹐﹑．\"'`"
NEVER_WRITTEN = "「」『』﹔︰．\"'"  # the list: none of these in a modern model's writing
OPENING = "他笑道：「你来了．」又道:\"坐吧！\"\n『好』"


# --- the mapping


@pytest.mark.parametrize("old, new", [
    ("「好」『对』", "“好”‘对’"),
    ("甲﹔乙︰丙﹕丁﹖戊﹗己﹐庚﹑辛", "甲；乙：丙：丁？戊！己，庚、辛"),
    ("此书立意本旨．待在下", "此书立意本旨。待在下"),  # 紅樓夢's full stop
    ("你说什么．．．我．．不", "你说什么……我……不"),  # 水滸傳's runs
    ('所云"蠢物"系何东西', "所云“蠢物”系何东西"),
    ('笑道：“玄机不可预泄？"那僧道：“若', "笑道：“玄机不可预泄？”那僧道：“若"),  # a " after “ closes it
    ("况有`美中不足'八个字，'好'", "况有‘美中不足’八个字，‘好’"),
    ("他说I don't know", "他说I don’t know"),  # an apostrophe, not a quote
    ("道:「太", "道：“太"),
    ("庙,殿;门?好!来:去", "庙，殿；门？好！来：去"),
    ("就??好", "就？？好"),
    ("第3,4回, 不变", "第3,4回, 不变"),  # not between two CJK characters
    ('"好"\n"坏"', "“好”\n“坏”"),  # quotes alternate within a line, each line starts afresh
    ('He said "hi", didn\'t he?', 'He said "hi", didn\'t he?'),  # English: left alone
])
def test_the_mapping(old, new):
    assert modernize(old) == new
    assert modernize(new) == new


CJK_TEXT = st.text(alphabet=st.sampled_from(list("你好道来。，：；？！“”‘’…、 \nab3" + OLD_MARKS + ",;:?!.")))


@settings(max_examples=300, deadline=None)
@given(CJK_TEXT)
def test_modernize_is_idempotent_and_keeps_the_lines(text):
    once = modernize(text)
    assert modernize(once) == once
    assert once.count("\n") == text.count("\n")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters=OLD_MARKS + ",;:?!")))
def test_text_without_the_old_marks_is_unchanged(text):
    assert modernize(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F)))
def test_english_text_is_left_alone(text):
    assert modernize(text) == text


@settings(max_examples=200, deadline=None)
@given(CJK_TEXT)
def test_no_old_mark_survives_in_a_cjk_line(text):
    for line in modernize(text).split("\n"):
        if any(c in line for c in "你好道来"):
            assert not set(line) & set(OLD_MARKS)


# --- the tokenizer and the opening


def test_a_modern_vocabulary_bans_the_old_marks_it_can_replace():
    chars = ["\n", UNKNOWN_CHAR, *"好「」“”『‘’．。\"'"]  # no 』: its ’ is there; ﹔ and its ； absent
    plain = CharTokenizer(chars)
    assert plain.punctuation is None and plain.banned_ids == (plain.unknown_id,)
    modern = plain.with_punctuation(MODERN)
    assert {modern.chars[i] for i in modern.banned_ids} == {UNKNOWN_CHAR, *"「」『．\"'"}
    assert writes_modern(modern) and not writes_modern(plain) and not writes_modern(None)
    only_corner = CharTokenizer(["\n", UNKNOWN_CHAR, *"好「」"], punctuation=MODERN)
    assert only_corner.banned_ids == (only_corner.unknown_id,)  # no “ ” to write instead: nothing made worse
    with pytest.raises(VocabularyError, match='punctuation "antique" is not known'):
        CharTokenizer(chars, punctuation="antique")


def test_openings_are_modernized_only_for_a_modern_model():
    assert clean_opening(OPENING) == "\n" + OPENING
    assert clean_opening(OPENING, modern_punctuation=True) == "\n他笑道：“你来了。”又道：“坐吧！”\n‘好’"


# --- models: a tiny one with and without the mark, and the shipped one


@pytest.fixture(scope="module")
def tiny_native(tmp_path_factory, one_torch_thread):
    """A random L1-D32 native model over a vocabulary with old and modern marks: (plain path, modern path)."""
    from ai_writer.models.checkpoint import save_native
    from ai_writer.models.config import ModelConfig
    from rwkv7_factory import write_random_rwkv7

    chars = sorted(set("\n" + UNKNOWN_CHAR + "他笑道你来了又坐吧好天下人说" + OLD_MARKS + "“”‘’；：？！，、。…"))
    folder = tmp_path_factory.mktemp("punctuation")
    tensors = write_random_rwkv7(folder / "random.pth", n_layer=1, n_embd=32, head_size=32,
                                 vocab_size=len(chars), seed=5)
    config = ModelConfig.from_tensors({k: tuple(t.shape) for k, t in tensors.items()}, "random")
    tensors = {k: t * 4 if k == "head.weight" else t for k, t in tensors.items()}  # sharper choices
    paths = folder / "plain.safetensors", folder / "modern.safetensors"
    save_native(paths[0], config, tensors, CharTokenizer(chars))
    save_native(paths[1], config, tensors, CharTokenizer(chars, punctuation=MODERN))
    return paths


def write(loaded, opening: str, seed: int, chars: int = 2000, runs: int = 4) -> str:
    """`chars` characters in `runs` continuations of the cleaned opening, as `ai-writer continue` writes them."""
    from ai_writer.generation.generator import Generator

    generator = Generator(loaded.backend, loaded.tokenizer)
    start = generator.prefill(clean_opening(opening, modern_punctuation=writes_modern(loaded.tokenizer)))
    return "".join(chunk.text for chunk in generator.stream(start, max_chars=chars // runs, runs=runs,
                                                            rng=np.random.default_rng(seed)))


def test_an_unmarked_model_writes_as_before_and_a_marked_one_never_writes_the_old_marks(tiny_native):
    from ai_writer.backends.open import load_model

    plain = load_model(tiny_native[0], backend="torch-cpu", threads=1)
    modern = load_model(tiny_native[1], backend="torch-cpu", threads=1)
    assert plain.tokenizer.punctuation is None and modern.tokenizer.punctuation == MODERN

    text = write(plain, OPENING, seed=7)
    before = plain.tokenizer.chars, plain.tokenizer.unknown_char  # the tokenizer as it was made before the mark
    plain.tokenizer = CharTokenizer(*before)
    assert write(plain, OPENING, seed=7) == text  # same seed, same text
    assert set(text) & set(NEVER_WRITTEN)  # this random model does write old marks when nothing bans them

    written = write(modern, OPENING, seed=7)
    assert len(written) == 2000 and not set(written) & set(OLD_PUNCTUATION)


def test_the_mark_survives_the_onnx_export(tiny_native, tmp_path):
    from ai_writer.backends.open import load_model

    loaded = load_model(tiny_native[1], backend="cpu", threads=1, onnx_cache=tmp_path)
    assert loaded.tokenizer.punctuation == MODERN
    assert not set(write(loaded, OPENING, seed=3, chars=400)) & set(OLD_PUNCTUATION)


def test_the_shipped_model_writes_modern_punctuation(tmp_path):
    from ai_writer.backends.open import load_model
    from ai_writer.resources import default_model_path

    loaded = load_model(default_model_path(), backend="cpu", threads=1, onnx_cache=tmp_path)
    assert loaded.tokenizer.punctuation == MODERN
    written = write(loaded, OPENING, seed=1)
    assert len(written) == 2000 and not set(written) & set(NEVER_WRITTEN)


# --- training


@pytest.fixture
def old_style_corpus(tmp_path):
    lines = ["他笑道：「你来了．」又道:\"坐吧！\"", "『好』她说﹔天下人来了．．．"] * 40
    path = tmp_path / "old.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_punctuation_modern_marks_the_model_and_keys_the_cache(tmp_path, old_style_corpus, one_torch_thread):
    from ai_writer.cli.train import train_command
    from ai_writer.models.checkpoint import load_checkpoint
    from ai_writer.training.corpus import load_corpus

    group = click.Group(commands=[train_command])
    cache = tmp_path / "cache"

    def run(out, *extra):
        args = ["train", str(old_style_corpus), "--out", str(tmp_path / out), "--n-layer", "1", "--n-embd", "32",
                "--head-size", "32", "--ctx-len", "16", "--batch-size", "2", "--steps", "2", "--threads", "1",
                "--min-char-count", "1", "--cache-dir", str(cache), "-q", *extra]
        result = CliRunner().invoke(group, args)
        assert result.exit_code == 0, result.output
        return load_checkpoint(tmp_path / out).tokenizer

    modern = run("modern.safetensors", "--punctuation", "modern")
    assert modern.punctuation == MODERN
    assert not set(modern.chars) & set(OLD_MARKS) and {"“", "”", "‘", "’", "。", "…", "；"} <= set(modern.chars)
    assert run("plain.safetensors").punctuation is None  # the default: the text as it is
    assert "「" in run("plain2.safetensors", "--punctuation", "keep").chars
    tuned = run("tuned.safetensors", "--init-from", str(tmp_path / "modern.safetensors"))
    assert tuned.punctuation == MODERN  # a fine-tune keeps its model's punctuation
    assert run("kept.safetensors", "--init-from", str(tmp_path / "modern.safetensors"),
               "--punctuation", "keep").punctuation is None

    as_is = load_corpus([old_style_corpus], min_char_count=1, cache_dir=cache)
    modernized = load_corpus([old_style_corpus], min_char_count=1, cache_dir=cache, punctuation=MODERN)
    assert as_is.from_cache and modernized.from_cache and as_is.key != modernized.key
    assert modernized.tokenizer.punctuation == MODERN and as_is.tokenizer.punctuation is None
    assert len(modernized.train) < len(as_is.train)  # ．．． became ……


def test_eval_scores_the_modernized_held_out_text(tmp_path, old_style_corpus, one_torch_thread):
    from ai_writer.models.rwkv.init import init_weights, new_model_config
    from ai_writer.models.rwkv.rwkv7 import RWKV7
    from ai_writer.training.corpus import load_corpus
    from ai_writer.training.evaluate import evaluate_file

    tokenizer = load_corpus([old_style_corpus], min_char_count=1).tokenizer  # holds old and (some) modern marks
    model = RWKV7(new_model_config(tokenizer.vocab_size, 1, 32, 32, ctx_len=16))
    init_weights(model, 0)
    kept = evaluate_file(model.eval(), tokenizer, old_style_corpus)
    modern = evaluate_file(model, tokenizer, old_style_corpus, modern_punctuation=True)
    assert modern.n_chars < kept.n_chars  # the same lines: ．．． is …… there
    assert modern.n_unknown > kept.n_unknown == 0  # “ ” ‘ ’ are not in this vocabulary
