"""The steering block: lorebook formats and activation, the block's order, and how an RNN reads it.

The exactness test: writing with a block gives exactly the text (same seed) of reading the story
before the paragraph, the block and the paragraph from scratch, then writing. The cost test: the
tokens read per write are the block plus the paragraph, whatever the story's length.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ai_writer.errors import InputTextError
from ai_writer.story.document import MODEL, WRITER, Document, Span
from ai_writer.story.lorebook import Lorebook, parse_lorebook, parse_line
from ai_writer.story.steering import Steering, SteeredReader, paragraph_start

LORE_TEXT = """# the hero's things
青锋, 剑: 青锋是林远的剑，三尺长。
*: 故事发生在北宋末年。
Kevin|kev: Kevin is a pilot.
"""


def test_plain_lorebook_format():
    book = parse_lorebook(LORE_TEXT, "lore.txt")
    assert [e.keys for e in book.entries] == [("青锋", "剑"), (), ("Kevin", "kev")]
    assert book.entries[1].constant
    assert [e.text for e in book.active("他拔出了剑")] == ["青锋是林远的剑，三尺长。", "故事发生在北宋末年。"]
    assert [e.text for e in book.active("KEVIN said")][-1] == "Kevin is a pilot."  # keys ignore case
    assert [e.text for e in book.active("无关的话")] == ["故事发生在北宋末年。"]


@pytest.mark.parametrize("record", [
    {"entries": [{"keys": ["剑"], "text": "剑的故事", "secondary": ["夜"]}]},  # ai-writer's own
    {"worldinfo": [{"key": "剑, 刀", "keysecondary": "夜", "content": "剑的故事", "selective": True,
                    "constant": False}]},  # KoboldAI
    {"entries": {"0": {"uid": 0, "key": ["剑"], "keysecondary": ["夜"], "content": "剑的故事", "selective": True,
                       "constant": False, "disable": False},
                 "1": {"key": ["x"], "content": "disabled", "disable": True}}},  # SillyTavern
    {"data": {"character_book": {"entries": [{"keys": ["剑"], "secondary_keys": ["夜"], "content": "剑的故事",
                                              "enabled": True, "selective": True}]}}},  # a character card
])
def test_world_info_shapes(record):
    book = parse_lorebook(json.dumps(record, ensure_ascii=False), "wi.json")
    assert len(book) == 1
    assert book.active("他在夜里拔剑")[0].text == "剑的故事"
    assert book.active("他拔剑") == []  # a secondary key must match too


@pytest.mark.parametrize("text, message", [
    ("no colon here", "no ':' found"),
    (": text without keys", "has no keys"),
    ("剑:   ", "has no text"),
    ('{"entries": [{"keys": 3, "content": "x"}]}', "keys must be text"),
    ('{"nothing": []}', "no lorebook entries found"),
    ("{not json", "not valid JSON"),
])
def test_bad_lorebooks_are_one_line(text, message):
    with pytest.raises(InputTextError, match=message) as error:
        parse_lorebook(text, "bad.txt")
    assert "\n" not in str(error.value) and "bad.txt" in str(error.value)


def test_block_order_and_remote_prompt():
    steering = Steering(memory="记忆。", note="作者注。", lorebook=Lorebook((parse_line("剑: 剑的事。"),)))
    story = "第一段。\n他拔剑而起，"
    assert steering.block(story) == "记忆。\n剑的事。\n作者注。\n"
    assert steering.block("没有钥匙。") == "记忆。\n作者注。\n"
    assert Steering().block(story) == "" and Steering().is_empty
    assert steering.remote_prompt(story) == "记忆。\n剑的事。\n第一段。\n作者注。\n他拔剑而起，"
    assert paragraph_start(story) == len("第一段。\n") and paragraph_start("一段") == 0
    assert Steering.from_json(steering.to_json(), "s") == steering


def test_lore_scans_only_the_recent_story():
    steering = Steering(lorebook=Lorebook((parse_line("剑: 剑的事。"),)), scan=10)
    assert steering.block("剑" + "。" * 20) == ""
    assert steering.block("。" * 20 + "剑") == "剑的事。\n"


@pytest.fixture(scope="module")
def model():
    from ai_writer.backends.open import load_model
    from ai_writer.resources import default_model_path

    return load_model(default_model_path(), backend="cpu")


def _writer(model):
    from ai_writer.generation.generator import Generator
    from ai_writer.generation.reading import CountingBackend, Reader

    backend = CountingBackend(model.backend)
    return backend, Reader(backend, model.tokenizer), Generator(backend, model.tokenizer)


def _write(generator, start, seed):
    return "".join(c.text for c in generator.stream(start, max_chars=80, rng=np.random.default_rng(seed)))


STEERING = Steering(memory="林黛玉寄居贾府，多愁善感。", note="下一段写黛玉生气离开。",
                    lorebook=parse_lorebook("宝玉: 贾宝玉衔玉而生，住在怡红院。\n*: 时值深秋。", "lore"))


@pytest.mark.parametrize("story", ["林黛玉笑道：“你们在说什么？”\n宝玉听了，忙起身道：“妹妹来得正好。”\n黛玉",
                                   "林黛玉笑道：“你们在说什么？”\n", "宝玉笑道"])
def test_writing_with_a_block_is_exactly_reading_it_in_between(model, story):
    backend, reader, generator = _writer(model)
    steered = SteeredReader(reader).start(Document([Span(WRITER, story)]), STEERING)
    cut = paragraph_start(story)
    from_scratch = reader.feed(reader.feed(reader.feed(None, story[:cut]), STEERING.block(story)), story[cut:])
    for seed in (1, 2):
        assert _write(generator, steered, seed) == _write(generator, from_scratch, seed)
    # and the block changes what is written (it is read at all)
    plain = SteeredReader(reader).start(Document([Span(WRITER, story)]), Steering())
    assert _write(generator, plain, 1) != _write(generator, steered, 1)


def test_a_write_costs_the_block_and_the_paragraph_whatever_the_story(model):
    backend, reader, _ = _writer(model)
    block_tokens = len(model.tokenizer.encode(STEERING.block("宝玉")))  # the story names 宝玉: its entry is active
    costs = []
    for paragraphs in (3, 300):
        document = Document([Span(WRITER, "宝玉听了，忙起身道：“妹妹来得正好。”\n" * paragraphs)])
        document.state_at_end(reader)  # the story was read once, as the REPL does on opening
        steered = SteeredReader(reader)
        backend.fed = 0
        steered.start(document, STEERING)
        costs.append(backend.fed)
        document.append(Span(MODEL, "黛玉道：“我不去。”\n"))  # the model wrote a paragraph: the next write
        backend.fed = 0
        steered.start(document, STEERING)
        costs.append(backend.fed)
        backend.fed = 0
        steered.start(document, STEERING)  # a rewrite from the same place: the block is cached
        costs.append(backend.fed)
    assert costs[:3] == costs[3:]
    assert costs[0] == block_tokens  # the story ends a paragraph: the block alone is read
    assert costs[1] == block_tokens + len(model.tokenizer.encode("黛玉道：“我不去。”\n"))  # + the new paragraph
    assert costs[2] == 0  # the same block from the same snapshot: nothing is read again


def _continue(*args: str, stdin: str) -> "subprocess.CompletedProcess[str]":
    import subprocess
    import sys

    from helpers import ROOT, cli_env

    return subprocess.run([sys.executable, "-m", "ai_writer", "continue", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=cli_env(), timeout=300)


def test_continue_reads_the_block_before_the_last_paragraph(model, tmp_path):
    """`continue --memory --lore --note` writes what reading story-before + block + paragraph gives (same seed)."""
    from ai_writer.text.cleanup import clean_opening

    (tmp_path / "memory.txt").write_text(STEERING.memory + "\n", encoding="utf-8")
    (tmp_path / "lore.txt").write_text("宝玉: 贾宝玉衔玉而生，住在怡红院。\n*: 时值深秋。\n", encoding="utf-8")
    opening = "林黛玉笑道：“你们在说什么？”\n宝玉听了，忙起身道：“妹妹来得正好。”\n黛玉"
    done = _continue("--memory", str(tmp_path / "memory.txt"), "--lore", str(tmp_path / "lore.txt"), "--note",
                     STEERING.note, "--seed", "7", "--len", "60", "--backend", "cpu", stdin=opening)
    assert done.returncode == 0, done.stderr
    _, reader, generator = _writer(model)
    story = clean_opening(opening)
    cut = paragraph_start(story)
    start = reader.feed(reader.feed(reader.feed(None, story[:cut]), STEERING.block(story)), story[cut:])
    assert done.stdout == "".join(c.text for c in generator.stream(start, max_chars=60, rng=np.random.default_rng(7)))
    plain = _continue("--seed", "7", "--len", "60", "--backend", "cpu", stdin=opening)
    assert plain.stdout != done.stdout and STEERING.note not in done.stdout


@pytest.mark.parametrize("args, message", [
    (["--lore", "/nonexistent/lore.txt"], "no such lorebook file"),
    (["--memory", "/nonexistent/memory.txt"], "no such memory file"),
    (["--lore-scan", "0"], "--lore-scan"),
])
def test_continue_steering_bad_input_is_one_line(args, message):
    done = _continue(*args, stdin="林黛玉笑道")
    assert done.returncode == 2 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_continue_names_the_characters_outside_the_vocabulary():
    done = _continue("--seed", "1", "--len", "5", stdin="Kevin拿着iPhone喝咖啡")
    assert done.returncode == 0
    line = next(line for line in done.stderr.splitlines() if "not in the model's vocabulary" in line)
    assert "K" in line and "咖" in line and "啡" in line
