"""Banned phrases and the loop guard: never written, never shown, undone by rewinding the RNN state.

The detection rules against brute-force readings of the same text; rewinding through scripted and
pseudo-random models (character and world tokenizers, characters split over tokens); the shipped
model's favourite phrases and its greedy loop; the `continue` options.
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
from helpers import ROOT, cli_env, favourite_phrases
from hypothesis import given, settings
from hypothesis import strategies as st

from ai_writer.errors import InputTextError, SettingsError
from ai_writer.generation.decode import DecodeBatch, Prefilled
from ai_writer.generation.generator import Generator, RunResult
from ai_writer.generation.guards import (LOOP_MAX_PERIOD, MAX_PHRASE_CHARS, MAX_PHRASES, Guards, PhraseMatcher, Watch,
                                         read_ban_file)
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.world_tokenizer import default_world_tokenizer

GREEDY = SamplerSettings(temperature=0)


# ---- brute-force readings of the rules ----------------------------------------------------------------


def loop_period(text: str) -> int:
    """The shortest L such that `text` ends with a span of L characters repeated >= 3 times in a row,
    covering >= 12 characters (0: none), straight from the definition."""
    for period in range(1, min(LOOP_MAX_PERIOD, len(text)) + 1):
        for copies in range(3, len(text) // period + 1):
            if copies * period >= 12 and text.endswith(text[-period:] * copies):
                return period
    return 0


def longest_ban_at_end(text: str, bans) -> int:
    return max((len(b) for b in bans if text.endswith(b)), default=0)


def loops_anywhere(text: str) -> bool:
    return any(loop_period(text[:end]) for end in range(1, len(text) + 1))


def bans_in(context: str, text: str, bans) -> list[str]:
    """The banned phrases that end inside `text` (they may begin in `context`)."""
    whole = context + text
    return [b for b in bans if any(whole.endswith(b, 0, end) for end in range(len(context) + 1, len(whole) + 1))]


# ---- settings and ban files ----------------------------------------------------------------------------


def test_phrases_are_stripped_deduplicated_and_empty_ones_dropped():
    guards = Guards.from_phrases(["  不知道 ", "", "   ", "不知道", "我们"], loop_guard=False)
    assert guards == Guards(("不知道", "我们"), loop_guard=False)
    assert Guards().loop_guard and Guards().bans == ()


@pytest.mark.parametrize("phrases, words", [
    ([f"p{i}" for i in range(MAX_PHRASES + 1)], "at most 200"),
    (["长" * (MAX_PHRASE_CHARS + 1)], "101 characters long; at most 100"),
])
def test_too_many_or_too_long_phrases_are_one_line_errors(phrases, words):
    with pytest.raises(SettingsError, match=words) as caught:
        Guards.from_phrases(phrases)
    assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError):
        Guards(("",))


def test_a_ban_file_has_one_phrase_a_line_and_comments(tmp_path):
    path = tmp_path / "bans.txt"
    path.write_bytes("\ufeff# clichés\n不知道\n\n  我们是  \n   # also a comment\n#\n".encode())
    assert read_ban_file(path) == ["不知道", "我们是"]
    with pytest.raises(InputTextError, match="no such ban file") as caught:
        read_ban_file(tmp_path / "missing.txt")
    assert str(tmp_path / "missing.txt") in str(caught.value)
    path.write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(InputTextError, match="not UTF-8"):
        read_ban_file(path)
    path.write_text("ok\n" + "长" * 101 + "\n", encoding="utf-8")
    with pytest.raises(InputTextError, match="line 2: the phrase is 101 characters long"):
        read_ban_file(path)


# ---- the detection rules against brute force -------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(text=st.text("abc", max_size=60), phrases=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1,
                                                           max_size=5, unique=True))
def test_the_phrase_matcher_reads_like_brute_force(text, phrases):
    matcher = PhraseMatcher(tuple(phrases))
    node = 0
    for end in range(1, len(text) + 1):
        node = matcher.next(node, text[end - 1])
        read = text[:end]
        assert matcher.found[node] == longest_ban_at_end(read, phrases)
        assert matcher.depth[node] == max(k for k in range(0, min(end, 5) + 1)
                                          if any(p.startswith(read[end - k:]) for p in phrases))
        assert matcher.node_after(read) == node


@settings(max_examples=300, deadline=None)
@given(text=st.text("abc", max_size=90) | st.builds(lambda a, n, b: a + b * n, st.text("abc", max_size=8),
                                                   st.integers(1, 14), st.text("abc", min_size=1, max_size=7)))
def test_the_loop_rule_reads_like_brute_force(text):
    watch = Watch(Guards(loop_guard=True))
    for end in range(1, len(text) + 1):
        assert watch.push(text[end - 1]) == loop_period(text[:end])
        assert watch.undo_kind == ("loop" if loop_period(text[:end]) else "")


def test_the_loop_rule_on_its_examples():
    assert loop_period("ab" * 6) == 2 and loop_period("ab" * 5 + "a") == 0
    assert loop_period("哈哈哈") == 0 and loop_period("哈" * 12) == 1
    line = "我们是不知道的。"
    assert loop_period(line * 3) == 8 and loop_period(line * 2) == 0
    assert loop_period("x" * 20 + "y" * 65 * 3) == 1  # the shortest period
    long_span = "".join(chr(0x4E00 + i) for i in range(LOOP_MAX_PERIOD + 1))
    assert loop_period(long_span * 3) == 0  # periods longer than 64 are not looked for
    for text, period in [(line * 3, 8), ("ab" * 6, 2), (long_span * 3, 0), ("哈" * 11, 0)]:
        watch = Watch(Guards())
        assert [watch.push(c) for c in text][-1] == period


@settings(max_examples=150, deadline=None)
@given(text=st.text("ab", max_size=40), extension=st.text("ab", min_size=1, max_size=40))
def test_what_is_held_back_covers_every_later_loop(text, extension):
    watch = Watch(Guards(loop_guard=True))
    for end in range(1, len(text) + 1):
        if watch.push(text[end - 1]):
            return  # a loop already: the row would have been rewound
    held = watch.held()
    for k, char in enumerate(extension):
        undo = watch.push(char)
        if undo:  # the first later loop undoes nothing that was not held back
            assert len(text) + k + 1 - undo >= len(text) - held
            break


@settings(max_examples=150, deadline=None)
@given(context=st.text("abc", max_size=6), text=st.text("abc", max_size=30),
       phrases=st.lists(st.text("abc", min_size=1, max_size=5), min_size=1, max_size=4, unique=True),
       extension=st.text("abc", min_size=1, max_size=6))
def test_what_is_held_back_covers_every_later_ban_and_rebuilding_reads_alike(context, text, phrases, extension):
    guards = Guards(tuple(phrases), loop_guard=True)
    watch = Watch(guards, context)
    for end in range(1, len(text) + 1):
        if watch.push(text[end - 1]):
            return
    rebuilt = Watch.after(guards, context, text)
    assert (rebuilt.node, rebuilt.runs, rebuilt.held()) == (watch.node, watch.runs, watch.held())
    for k, char in enumerate(extension):
        undo = watch.push(char)
        if undo:
            assert len(text) + k + 1 - undo >= len(text) - rebuilt.held()
            break


# ---- rewinding, with models whose choices are known --------------------------------------------------------


@dataclass(frozen=True)
class HashState:
    """The state of a pseudo-random model: a hash of everything read, one per row."""

    h: np.ndarray  # (B,) uint64

    @property
    def batch_size(self):
        return len(self.h)

    def select(self, rows):
        return HashState(self.h[list(rows)])

    def repeat(self, n):
        return HashState(np.repeat(self.h, n))

    def joinable(self, other):
        return isinstance(other, HashState)

    def concat(self, other):
        return HashState(np.concatenate([self.h, other.h]))

    def clone(self):
        return HashState(self.h.copy())


class HashBackend:
    """A model whose logits are a pseudo-random function of what it read: the `favoured` ids get random
    logits, every other id a low one."""

    name, precision = "hash", "fp32"

    def __init__(self, vocab_size: int, favoured: list[int], *, markov: bool = False):
        self.vocab_size, self.favoured, self.markov = vocab_size, favoured, markov  # markov: only the last token counts

    def zero_state(self, batch_size):
        return HashState(np.zeros(batch_size, dtype=np.uint64))

    def forward(self, token_ids, state):
        tokens = np.asarray(token_ids, dtype=np.int64)
        hashes, logits = [], np.full((len(tokens), self.vocab_size), -8.0, dtype=np.float32)
        for row, (h, ids) in enumerate(zip(state.h, tokens)):
            for token in ids:
                seen = f"{0 if self.markov else h}:{token}".encode()
                h = int.from_bytes(hashlib.blake2b(seen, digest_size=8).digest(), "little")
            hashes.append(h)
            logits[row, self.favoured] = np.random.default_rng(int(h)).normal(0, 2, len(self.favoured))
        return logits, HashState(np.array(hashes, dtype=np.uint64))


class CountingScript(HashBackend):
    """A model that, after reading `opening` tokens and then n more, likes script[n] best and `alternative`
    second best; its state counts the tokens read, so a rewound row follows the script again from there."""

    def __init__(self, vocab_size: int, alternative: int, script: list[int], opening: int):
        super().__init__(vocab_size, [alternative])
        self.script, self.opening = script, opening

    def forward(self, token_ids, state):
        tokens = np.asarray(token_ids, dtype=np.int64)
        read = state.h + np.uint64(tokens.shape[1])
        logits = np.full((len(tokens), self.vocab_size), -8.0, dtype=np.float32)
        logits[:, self.favoured[0]] = 5.0
        logits[np.arange(len(tokens)), [self.script[(int(n) - self.opening) % len(self.script)] for n in read]] = 10.0
        return logits, HashState(read)


def char_tokenizer(chars: str) -> CharTokenizer:
    return CharTokenizer(["\n", *chars, UNKNOWN_CHAR])


def start_of(backend, tokenizer, text: str) -> Prefilled:
    ids = tokenizer.encode(text)
    logits, state = backend.forward([ids], backend.zero_state(1))
    return Prefilled(state, logits[0], ids[-1], len(ids), text[-MAX_PHRASE_CHARS:])


def write_rows(backend, tokenizer, starts, *, guards, max_chars, seeds, settings=SamplerSettings(), stop=()):
    """Each start written as its own row (own random generator) in one batch; (rows, shown text per row)."""
    batch = DecodeBatch(backend, tokenizer)
    rows = []
    for tag, (start, seed) in enumerate(zip(starts, seeds)):
        rows += batch.add(start, 1, settings=settings, rng=np.random.default_rng(seed), max_chars=max_chars,
                          stop=stop, tags=[tag], guards=guards, context=start.text_tail)
    shown = collections.defaultdict(str)
    while batch:
        for row, chunk in batch.step():
            shown[row.tag] += chunk
            assert row.text.startswith(shown[row.tag])  # nothing shown is ever undone
    return rows, [shown[row.tag] for row in rows]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), phrases=st.lists(st.text("abc\n", min_size=1, max_size=4), max_size=4, unique=True),
       loop_guard=st.booleans(), opening=st.text("abc", min_size=1, max_size=5), markov=st.booleans(),
       temperature=st.sampled_from([0.0, 0.3, 1.0]))
def test_rows_never_write_nor_show_what_the_guards_forbid(seed, phrases, loop_guard, opening, markov, temperature):
    tokenizer = char_tokenizer("abc")
    backend = HashBackend(tokenizer.vocab_size, [0, 1, 2, 3], markov=markov)  # markov: it loops readily
    guards = Guards(tuple(phrases), loop_guard)
    start = start_of(backend, tokenizer, opening)
    rows, shown = write_rows(backend, tokenizer, [start, start, start], guards=guards, max_chars=120,
                             seeds=[seed, seed + 1, seed + 2], settings=SamplerSettings(temperature=temperature))
    for row, text in zip(rows, shown):
        assert text == row.text and row.done
        assert not bans_in(opening, row.text, phrases)
        assert not (loop_guard and loops_anywhere(row.text))
        assert len(row.text) == 120 or row.finish_reason == "length"


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_world_tokens_split_characters_and_bans_span_tokens(seed):
    tok = default_world_tokenizer()
    pieces = "你好，林黛玉。 the 大观园\n"  # whole words, and characters split into bytes over several tokens
    favoured = sorted({*tok.encode(pieces), *(tok.encode_bytes(bytes([b]))[0] for b in "黛玉园".encode())})
    backend = HashBackend(tok.vocab_size, favoured)
    start = start_of(backend, tok, "开头")
    plain, _ = write_rows(backend, tok, [start], guards=Guards(loop_guard=False), max_chars=150, seeds=[seed])
    text = plain[0].text
    spans = [text[i:i + 3] for i in range(0, len(text) - 3, 7) if text[i:i + 3].strip()][:6]
    guards = Guards.from_phrases(spans)
    rows, shown = write_rows(backend, tok, [start, start], guards=guards, max_chars=150, seeds=[seed, seed + 1])
    for row, chunk in zip(rows, shown):
        assert chunk == row.text
        assert not bans_in("开头", row.text, guards.bans)
        assert not loops_anywhere(row.text)


@pytest.fixture(scope="module")
def world_model(tmp_path_factory):
    """A random RWKV-7 over the world vocabulary (65,536 tokens of one or more bytes), on torch."""
    from rwkv7_factory import write_random_rwkv7

    from ai_writer.backends.open import load_model

    path = tmp_path_factory.mktemp("world") / "world.pth"
    write_random_rwkv7(path, n_layer=1, n_embd=64, head_size=32, vocab_size=65536, seed=5)
    return load_model(path, backend="torch-cpu", threads=1)


@pytest.mark.slow
def test_a_random_world_model_never_writes_banned_phrases_that_span_tokens(world_model):
    tok, backend = world_model.tokenizer, world_model.backend
    start = start_of(backend, tok, "林黛玉笑道")
    plain, _ = write_rows(backend, tok, [start] * 2, guards=Guards(loop_guard=False), max_chars=80, seeds=[1, 2])
    spans = []
    for row in plain:  # 4 characters around a token boundary, or the characters of a split one
        decoder = tok.stream_decoder()
        ends = np.cumsum([len(decoder.decode(t)) for t in row.tokens])  # the characters after each token
        spans += [row.text[b - 2:b + 2] for b in ends[3:-3:5] if row.text[b - 2:b + 2].strip()]
    guards = Guards.from_phrases(spans[:12])
    rows, shown = write_rows(backend, tok, [start] * 2, guards=guards, max_chars=80, seeds=[1, 2])
    assert sum(row.rewinds for row in rows) >= 2
    for row, chunk in zip(rows, shown):
        assert chunk == row.text and len(row.text) == 80
        assert not bans_in("林黛玉笑道", row.text, guards.bans) and not loops_anywhere(row.text)


def test_a_rewind_goes_back_to_the_token_that_began_a_split_character():
    tok = default_world_tokenizer()
    byte = {b: tok.encode_bytes(bytes([b]))[0] for b in range(256)}
    script = tok.encode("你好，林") + [byte[b] for b in "黛".encode()] + tok.encode("玉。大观园")
    backend = CountingScript(tok.vocab_size, tok.encode("X")[0], script, len(tok.encode("开头")))
    rows, shown = write_rows(backend, tok, [start_of(backend, tok, "开头")], guards=Guards(("黛玉",), False),
                             max_chars=12, seeds=[0], settings=GREEDY)
    row = rows[0]
    # 黛 came in three one-byte tokens: the first of them is forbidden, and "X" written instead
    assert row.text.startswith("你好，林X") and "黛玉" not in row.text and shown[0] == row.text
    assert row.rewinds == 1 and row.loop_rewinds == 0
    assert row.forbidden[len(tok.encode("你好，林"))] == frozenset({byte["黛".encode()[0]]})


def test_a_ban_that_begins_in_the_text_read_rewinds_to_the_start():
    tok = char_tokenizer("林黛玉。X")
    backend = CountingScript(tok.vocab_size, tok.encode("X")[0], tok.encode("玉。林黛玉。"), 2)
    rows, shown = write_rows(backend, tok, [start_of(backend, tok, "林黛")], guards=Guards(("黛玉",), False),
                             max_chars=10, seeds=[0], settings=GREEDY)
    # 黛玉 at the start (黛 read before the row), then again after 林
    assert rows[0].text == "X。林X玉。玉。林黛" and shown[0] == rows[0].text and rows[0].rewinds == 2


def test_a_row_never_ends_before_its_first_character():
    tok = char_tokenizer("ab")
    backend = CountingScript(tok.vocab_size, tok.encode("a")[0], tok.encode("\nab\nb"), 1)
    for guards in (Guards(), Guards(loop_guard=False)):
        generator = Generator(backend, tok, GREEDY, guards)
        results: list[RunResult] = []
        list(generator.stream(generator.prefill("b"), max_chars=10, rng=np.random.default_rng(0), stop=["\n"],
                              results=results))
        assert results[0].text == "aab" and results[0].finish_reason == "stop"  # not "" (a newline first)
    rows, _ = write_rows(backend, tok, [start_of(backend, tok, "b")], guards=Guards(), max_chars=10, seeds=[0],
                         settings=GREEDY, stop=["\n"])
    assert rows[0].forbidden[0] == frozenset(tok.encode("\n"))


def test_a_row_that_keeps_needing_rewinds_ends(monkeypatch):
    from ai_writer.generation import decode

    monkeypatch.setattr(decode, "MAX_STUCK_REWINDS", 0)
    tok = char_tokenizer("ab")
    backend = CountingScript(tok.vocab_size, tok.encode("b")[0], tok.encode("a"), 1)
    rows, shown = write_rows(backend, tok, [start_of(backend, tok, "a")], guards=Guards(("a", "b")), max_chars=50,
                             seeds=[0], settings=GREEDY)
    # "a" is undone; "b" would need a second rewind without getting further: the row ends there
    assert rows[0].done and rows[0].finish_reason == "length" and rows[0].text == shown[0] == ""
    assert rows[0].rewinds == 1


def test_rows_without_guards_keep_no_history_and_write_as_before():
    tok = char_tokenizer("abc")
    backend = HashBackend(tok.vocab_size, [0, 1, 2, 3])
    start = start_of(backend, tok, "ab")
    unguarded, _ = write_rows(backend, tok, [start] * 3, guards=Guards(loop_guard=False), max_chars=80, seeds=[1, 2, 3])
    assert all(row.guard is None for row in unguarded)
    singles = [write_rows(backend, tok, [start], guards=Guards(loop_guard=False), max_chars=80, seeds=[s])[0][0]
               for s in (1, 2, 3)]
    assert [r.text for r in unguarded] == [r.text for r in singles]
    # one row rewinds (and moves in the batch): the others write what they write alone
    mixed, _ = write_rows(backend, tok, [start] * 3, guards=Guards(("ab", "ca"), loop_guard=True), max_chars=80,
                          seeds=[1, 2, 3])
    assert sum(r.rewinds for r in mixed) > 0
    batch = DecodeBatch(backend, tok)
    rows = []
    for seed in (1, 2, 3):
        guards = Guards(("ab", "ca")) if seed == 2 else Guards(loop_guard=False)
        rows += batch.add(start, 1, settings=SamplerSettings(), rng=np.random.default_rng(seed), max_chars=80,
                          guards=guards)
    while batch:
        batch.step()
    assert rows[1].rewinds > 0 and rows[0].text == singles[0].text and rows[2].text == singles[2].text


def test_memory_is_bounded_by_checkpointing_every_few_tokens(monkeypatch):
    from ai_writer.generation import decode

    tok = char_tokenizer("abc")
    backend = HashBackend(tok.vocab_size, [0, 1, 2, 3])
    start = start_of(backend, tok, "ab")
    monkeypatch.setattr(decode, "HISTORY_BYTES", 10 * (start.logits.nbytes + 8))  # room for about 10 checkpoints
    rows, shown = write_rows(backend, tok, [start], guards=Guards(("ab", "ca", "bb")), max_chars=200, seeds=[4])
    history = rows[0].guard.history
    assert history.every > 1 and len(history.points) <= 12
    assert rows[0].rewinds > 0 and shown[0] == rows[0].text and not bans_in("ab", rows[0].text, ("ab", "ca", "bb"))


# ---- the shipped model ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped():
    from ai_writer.backends.open import load_model
    from ai_writer.resources import default_model_path

    path = default_model_path()
    if path is None:
        pytest.skip("model/default.safetensors is not in this checkout")
    return load_model(path, backend="cpu", threads=1)


def write(loaded, opening, guards, *, settings=SamplerSettings(), runs=1, max_chars=1000, seed=0):
    from ai_writer.text.cleanup import clean_opening

    generator = Generator(loaded.backend, loaded.tokenizer, settings, guards)
    results: list[RunResult] = []
    shown = collections.defaultdict(str)
    for chunk in generator.stream(generator.prefill(clean_opening(opening)), max_chars=max_chars, runs=runs,
                                  rng=np.random.default_rng(seed), results=results):
        shown[chunk.run] += chunk.text
    results.sort(key=lambda r: r.run)
    assert [shown[r.run] for r in results] == [r.text for r in results]  # what was shown is what was written
    return results


@pytest.mark.slow
def test_the_shipped_model_never_writes_its_favourite_phrases_when_they_are_banned(shipped):
    opening = "林黛玉笑道：“你们在说什么？”"
    plain = write(shipped, opening, Guards(loop_guard=False), runs=3)
    favourites = favourite_phrases("\n".join(r.text for r in plain), 10)
    assert len(favourites) == 10 and all(p in "\n".join(r.text for r in plain) for p in favourites)
    banned = write(shipped, opening, Guards.from_phrases(favourites, loop_guard=False), runs=3)
    assert sum(len(r.text) for r in banned) == 3000 and all(r.finish_reason == "length" for r in banned)
    assert not any(p in r.text for r in banned for p in favourites)
    assert sum(r.rewinds for r in banned) >= 10 and not any(r.loop_rewinds for r in banned)


@pytest.mark.slow
def test_the_greedy_loop_of_the_shipped_model_is_undone(shipped):
    line = "那人道：“我们是东土大唐差往西天去的，你们可曾到？”那人道：“我们是东土大唐差往西天去的，我们在此住在东京，不曾见过。”"
    looping = write(shipped, "别", Guards(loop_guard=False), settings=GREEDY, max_chars=400)[0]
    assert line * 4 in looping.text and loops_anywhere(looping.text)
    guarded = write(shipped, "别", Guards(), settings=GREEDY, max_chars=400)[0]
    assert len(guarded.text) == 400 and not loops_anywhere(guarded.text)
    assert guarded.rewinds == guarded.loop_rewinds > 0 and line * 2 not in guarded.text


@pytest.mark.slow
def test_guards_that_never_trigger_change_nothing(shipped):
    plain = write(shipped, "宝玉道", Guards(loop_guard=False), runs=2, max_chars=300, seed=3)
    guarded = write(shipped, "宝玉道", Guards(("从来没有写过的句子",)), runs=2, max_chars=300, seed=3)
    assert sum(r.rewinds for r in guarded) == 0  # this seed never loops
    assert [r.text for r in guarded] == [r.text for r in plain]


# ---- the command line ----------------------------------------------------------------------------------------


def run(*args, stdin="别"):
    return subprocess.run([sys.executable, "-m", "ai_writer", "continue", *args], input=stdin.encode(),
                          capture_output=True, cwd=ROOT, env=cli_env(), timeout=300)


@pytest.mark.slow
def test_continue_bans_phrases_and_says_how_often_it_rewound(tmp_path):
    plain = run("--len", "300", "--temperature", "0", "--no-loop-guard", "-q")
    assert plain.returncode == 0 and "东土大唐" in plain.stdout.decode() and plain.stderr == b""
    bans = tmp_path / "bans.txt"
    bans.write_text("# the model's favourite\n东土大唐\n", encoding="utf-8")
    banned = run("--len", "300", "--temperature", "0", "--ban", "不曾见过", "--ban-file", str(bans))
    text, status = banned.stdout.decode(), banned.stderr.decode()
    assert banned.returncode == 0 and len(text) == 300
    assert "不曾见过" not in text and "东土大唐" not in text
    assert re.search(r"^ai-writer: \d+ rewinds?: \d+ for (a banned phrase|banned phrases)", status, re.M), status


@pytest.mark.slow
def test_continue_undoes_the_loop_unless_told_not_to():
    line = "那人道：“我们是东土大唐差往西天去的，你们可曾到？”那人道：“我们是东土大唐差往西天去的，我们在此住在东京，不曾见过。”"
    looping = run("--len", "400", "--temperature", "0", "--no-loop-guard")
    assert line * 4 in looping.stdout.decode() and "rewind" not in looping.stderr.decode()
    guarded = run("--len", "400", "--temperature", "0", "--format", "jsonl")
    record = [json.loads(x) for x in guarded.stdout.decode().splitlines()][-1]
    assert line * 2 not in record["text"] and record["rewinds"] > 0
    assert re.search(r"^ai-writer: \d+ rewinds?: \d+ for (a loop|loops)$", guarded.stderr.decode(), re.M)


@pytest.mark.parametrize("args, message", [
    (["--ban-file", "/nonexistent/bans.txt"], "Error: /nonexistent/bans.txt: no such ban file"),
    (["--ban", "  "], "Error: Invalid value for '--ban': the phrase is empty"),
    (["--ban", "长" * 101], "Error: the banned phrase"),
])
def test_bad_ban_options_are_one_line_errors(args, message):
    result = run(*args, "--len", "5")
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines
