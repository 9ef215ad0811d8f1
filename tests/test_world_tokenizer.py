"""The RWKV world tokenizer: the rwkv package's ids, surrogates, streaming that never breaks a
character, and which tokenizer a model gets."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ai_writer.models.checkpoint import load_checkpoint, save_native
from ai_writer.errors import VocabularyError
from ai_writer.generation.generator import Generator, RunResult
from ai_writer.generation.guards import Guards
from ai_writer.backends.open import load_model
from ai_writer.repl.writer import model_fingerprint
from ai_writer.generation.sampler import SamplerSettings
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer
from ai_writer.text.world_tokenizer import (
    VOCAB_NAME,
    WORLD_VOCAB_SIZE,
    WorldTokenizer,
    default_world_tokenizer,
    text_bytes,
)
from helpers import DATA, ROOT, cli_env

CORPUS = ROOT.parent / "shared" / "corpus" / "zh-hans"  # optional: real Chinese prose when it is there


@pytest.fixture(scope="module")
def tok() -> WorldTokenizer:
    return default_world_tokenizer()


@pytest.fixture(scope="module")
def oracle():
    """BlinkDL's tokenizer from the rwkv package, with the vocabulary file it ships."""
    rwkv = pytest.importorskip("rwkv.rwkv_tokenizer")
    return rwkv.TRIE_TOKENIZER(str(Path(rwkv.__file__).parent / f"{VOCAB_NAME}.txt"))


# ----- a large mixed text, made from code points -----

_HANZI = "".join(chr(c) for c in (0x7684, 0x4E00, 0x662F, 0x4E0D, 0x4E86, 0x4EBA, 0x6211, 0x5728, 0x6709, 0x4ED6,
                                  0x8FD9, 0x4E2D, 0x5927, 0x6765, 0x4E0A, 0x8BF4, 0x4EEC, 0x4F60, 0x5730, 0x9053,
                                  0x5E74, 0x5F97, 0x5C31, 0x90A3, 0x8981, 0x4E0B, 0x81EA, 0x7740, 0x53BB, 0x8FC7,
                                  0x5BB6, 0x5B66, 0x5BF9, 0x53EF, 0x5979, 0x91CC, 0x540E, 0x5C0F, 0x5FC3, 0x9EDB,
                                  0x7389, 0x5B9D, 0x7389, 0x9B54, 0x6CD5, 0x7CBE, 0x5999))
_PUNCT = "，。！？；：“”‘’（）《》、…—"
_WORDS = ("the quick brown fox jumps over a lazy dog while rain falls on London and Mr. Holmes said "
          "nothing; however, 1,234 readers didn't agree").split()
_CODE = ['def f(x):\n    return {"a": x * 2, \'b\': [1, 2, 3]}\n', "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
         "SELECT id FROM users WHERE age >= 18;\r\n", "    " * 12 + "pass\n", "#" * 90 + "\n", "-" * 85, " " * 140,
         "\x00\x01\x7f", "\r\n\r\n", "\t\t\n"]
_EMOJI = ["\U0001F468\u200D\U0001F469\u200D\U0001F467\u200D\U0001F466", "\U0001F3F3\uFE0F\u200D\U0001F308",
          "\U0001F469\U0001F3FD\u200D\U0001F4BB", "\U0001F1E8\U0001F1F3", "\u2764\uFE0F", "1\uFE0F\u20E3",
          "\U0001F44D\U0001F3FF", "\U0001F600", "\U0001F602"]
_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x4FF), (0x590, 0x6FF), (0x900, 0x97F), (0x3040, 0x30FF),
           (0xAC00, 0xD7A3), (0x4E00, 0x9FFF), (0xE000, 0xF8FF), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF),
           (0x20000, 0x2A6DF), (0x10000, 0x10FFFF)]


def _chinese_source():
    files = sorted(CORPUS.glob("*.txt")) if CORPUS.is_dir() else []
    if files:
        prose = files[0].read_text(encoding="utf-8")[:300_000]
        return lambda rng: prose[(at := rng.randrange(len(prose) - 200)): at + rng.randint(20, 200)]
    return lambda rng: "".join(rng.choice(_HANZI) if rng.random() > 0.12 else rng.choice(_PUNCT)
                               for _ in range(rng.randint(5, 80)))


def mixed_text(n_chars: int, seed: int, invalid_bytes: bool = False) -> str:
    """Chinese, English, emoji (ZWJ sequences, flags, skin tones), code, CRLF, NUL, control characters,
    random code points of many scripts and planes; with invalid_bytes, runs of random bytes read as
    Python reads invalid UTF-8 with errors="surrogateescape" (U+DC80-U+DCFF)."""
    rng = random.Random(seed)
    chinese = _chinese_source()
    parts, size = [], 0
    while size < n_chars:
        kind = rng.randrange(7 if invalid_bytes else 6)
        if kind == 0:
            piece = chinese(rng)
        elif kind == 1:
            piece = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 30))) + rng.choice(".!?\n ")
        elif kind == 2:
            piece = "".join(rng.choice(_EMOJI) for _ in range(rng.randint(1, 6)))
        elif kind == 3:
            piece = rng.choice(_CODE)
        elif kind == 4:
            low, high = rng.choice(_RANGES)
            piece = "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 12)))
        elif kind == 5:
            piece = rng.choice(["\n", "\r\n", "\x00", " ", "\u3000", "\u200d", "\ufeff", "\ufffd"])
        else:
            piece = bytes(rng.randrange(256) for _ in range(rng.randint(1, 6))).decode("utf-8", "surrogateescape")
        parts.append(piece)
        size += len(piece)
    return "".join(parts)


# ----- the ids are the rwkv package's -----

@pytest.mark.oracle
def test_the_table_is_the_rwkv_package_vocabulary(tok, oracle):
    assert tok.vocab_size == WORLD_VOCAB_SIZE
    assert {i: tok.token_bytes(i) for i in range(1, 65530)} == oracle.idx2token
    assert tok.banned_ids == (0, 65530, 65531, 65532, 65533, 65534, 65535)
    assert tok.unknown_id is None and tok.newline_id == oracle.encode("\n")[0]
    assert all(tok.token_bytes(i).endswith(b"\n") for i in tok.line_end_ids) and tok.newline_id in tok.line_end_ids
    assert len(tok.line_end_ids) == sum(1 for piece in oracle.idx2token.values() if piece.endswith(b"\n"))


@pytest.mark.oracle
def test_ids_equal_the_rwkv_package_on_a_large_mixed_text(tok, oracle):
    text = mixed_text(300_000, seed=1)
    expected = oracle.encode(text)
    assert len(expected) > 100_000
    assert tok.encode(text) == expected
    assert tok.encode_bytes(text.encode("utf-8")) == expected  # the Python matcher, used for surrogates


@pytest.mark.oracle
def test_invalid_bytes_match_the_package_on_the_same_bytes(tok, oracle):
    text = mixed_text(100_000, seed=2, invalid_bytes=True)
    data = text.encode("utf-8", "surrogateescape")
    assert any("\udc80" <= ch <= "\udcff" for ch in text)
    with pytest.raises(UnicodeEncodeError):
        oracle.encode(text)  # the package encodes strict UTF-8: it cannot take them
    assert tok.encode(text) == oracle.encodeBytes(data)


@pytest.mark.oracle
def test_without_the_rust_package_the_python_matcher_gives_the_same_ids(tok, oracle, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrwkv_tokenizer", None)  # `import pyrwkv_tokenizer` now fails
    python_only = WorldTokenizer.from_file(tok.source)
    text = mixed_text(30_000, seed=3)
    assert python_only.encode(text) == oracle.encode(text)


@pytest.mark.oracle
@pytest.mark.parametrize("text, same_as", [
    ("a\ud800b", "a\ufffdb"),  # a lone high surrogate: U+FFFD
    ("x\udc00", "x\ufffd"),  # a lone low surrogate outside the escape range: U+FFFD
    ("\ud83d\ude00!", "\U0001F600!"),  # a surrogate pair: the character it stands for
])
def test_lone_surrogates_read_as_documented(tok, oracle, text, same_as):
    with pytest.raises(UnicodeEncodeError):
        oracle.encode(text)
    assert tok.encode(text) == oracle.encode(same_as)


@pytest.mark.oracle
def test_escaped_bytes_are_the_bytes_they_escape(tok, oracle):
    escaped = "中文".encode().decode("ascii", "surrogateescape")  # six U+DCxx
    assert tok.encode(escaped) == oracle.encode("中文")
    assert text_bytes("a\udcff\udc80") == b"a\xff\x80"


def test_round_trip(tok):
    text = mixed_text(100_000, seed=4)
    assert tok.decode(tok.encode(text)) == text
    raw = mixed_text(50_000, seed=5, invalid_bytes=True).encode("utf-8", "surrogateescape")
    read = raw.decode("utf-8", "surrogateescape")  # a file of invalid UTF-8, read the forgiving way
    assert tok.decode(tok.encode(read), errors="surrogateescape") == read
    assert tok.decode_bytes(tok.encode(read)) == raw


def test_ids_without_text_cannot_be_decoded(tok):
    for token in (0, 65530, 65535, 70000, -1):
        with pytest.raises(VocabularyError, match=f"token id {token} has no text"):
            tok.decode([token])


# ----- streaming: a model that splits characters -----

@dataclass(frozen=True)
class ScriptState:
    steps: np.ndarray  # (B,) forward calls each row has seen

    @property
    def batch_size(self) -> int:
        return len(self.steps)

    def select(self, rows):
        return ScriptState(self.steps[rows])

    def repeat(self, n):
        return ScriptState(np.repeat(self.steps, n))


class ScriptBackend:
    """A model whose most likely next token, whatever it read, is the next one of `script`."""

    name, precision = "script", "fp32"

    def __init__(self, script: list[int], vocab_size: int):
        self.script, self.vocab_size = script, vocab_size

    def zero_state(self, batch_size):
        return ScriptState(np.zeros(batch_size, dtype=np.int64))

    def forward(self, token_ids, state):
        logits = np.zeros((len(token_ids), self.vocab_size), dtype=np.float32)
        logits[np.arange(len(token_ids)), [self.script[s % len(self.script)] for s in state.steps]] = 10.0
        return logits, ScriptState(state.steps + 1)


def splitting_script(tok: WorldTokenizer) -> tuple[list[int], str]:
    """Tokens that split every multi-byte character (one byte a token, or a two-byte piece then single
    bytes), between multi-character tokens; and the text they spell."""
    byte_id = {b: tok.encode_bytes(bytes([b]))[0] for b in range(256)}
    script: list[int] = []
    text = "你好，林黛玉😀 the quick\n\nété 👨‍👩‍👧 中文。"
    for k, char in enumerate(text):
        data = char.encode("utf-8")
        if len(data) == 1 or k % 3 == 0:
            script += [byte_id[b] for b in data]
        else:
            head = tok.encode_bytes(data[:2])
            assert len(head) == 1  # the vocabulary has this partial character as one token
            script += head + [byte_id[b] for b in data[2:]]
    script += tok.encode(" the quick brown fox\n\n")  # whole words and a paragraph break, several characters a token
    return script, tok.decode(script)


def stream(generator, start, **kwargs):
    results: list[RunResult] = []
    chunks = list(generator.stream(start, rng=np.random.default_rng(0), results=results, **kwargs))
    return chunks, sorted(results, key=lambda r: r.run)


def test_streaming_never_shows_a_broken_character(tok):
    script, spelled = splitting_script(tok)
    assert "\ufffd" in "".join(tok.decode([t]) for t in script)  # token by token, characters would break
    expected = spelled * 3  # the script three times over: a loop, which the loop guard would undo
    generator = Generator(ScriptBackend(script, tok.vocab_size), tok, SamplerSettings(temperature=0),
                          guards=Guards(loop_guard=False))
    chunks, results = stream(generator, generator.prefill("开头"), max_chars=len(expected), runs=2)
    for run in (0, 1):
        pieces = [c.text for c in chunks if c.run == run]
        assert "".join(pieces) == results[run].text == expected
        assert all(piece and "\ufffd" not in piece for piece in pieces)
        assert all(piece.encode("utf-8") for piece in pieces)  # no surrogates: each one prints
    assert len(pieces) < results[0].tokens  # some tokens showed nothing yet: their character was incomplete


def test_the_length_counts_characters_even_inside_a_token(tok):
    script, spelled = splitting_script(tok)
    generator = Generator(ScriptBackend(script, tok.vocab_size), tok, SamplerSettings(temperature=0))
    start = generator.prefill("开头")
    for cut in range(1, len(spelled) + 1):  # after, inside and between the characters of every token
        chunks, results = stream(generator, start, max_chars=cut)
        assert results[0].text == "".join(c.text for c in chunks) == spelled[:cut]
        assert results[0].finish_reason == "length"


def test_a_stop_string_made_of_split_characters_ends_the_run(tok):
    script, spelled = splitting_script(tok)
    generator = Generator(ScriptBackend(script, tok.vocab_size), tok, SamplerSettings(temperature=0))
    chunks, results = stream(generator, generator.prefill("开头"), max_chars=500, stop=["玉😀 t"])
    assert results[0].text == "".join(c.text for c in chunks) == spelled[: spelled.index("玉😀 t")]
    assert results[0].finish_reason == "stop"


def test_bytes_that_never_form_a_character_show_as_one_replacement(tok):
    byte_id = {b: tok.encode_bytes(bytes([b]))[0] for b in range(256)}
    script = [byte_id[0xE4], byte_id[0xB8], byte_id[ord("a")], byte_id[0x80], byte_id[ord("b")]]
    generator = Generator(ScriptBackend(script, tok.vocab_size), tok, SamplerSettings(temperature=0))
    chunks, results = stream(generator, generator.prefill("开头"), max_chars=4)
    assert results[0].text == "".join(c.text for c in chunks) == "\ufffda\ufffdb"


def test_the_sampler_never_draws_an_id_without_text(tok):
    script = [0, 65535, tok.newline_id]  # a model that most wants the end-of-text id and an unused row
    generator = Generator(ScriptBackend(script, tok.vocab_size), tok, SamplerSettings(temperature=0))
    _, results = stream(generator, generator.prefill("开头"), max_chars=20)
    assert len(results[0].text) == 20  # never stuck, never a decode error


class TwoChoiceBackend(ScriptBackend):
    """A model that always gives "A" a probability of 0.75 and "B" 0.2."""

    def forward(self, token_ids, state):
        logits = np.full((len(token_ids), self.vocab_size), -30.0, dtype=np.float32)
        logits[:, self.script] = np.log([0.75, 0.2])
        return logits, ScriptState(state.steps + 1)


def test_after_any_token_that_ends_a_line_the_newline_threshold_applies(tok):
    (double_newline,) = tok.encode("\n\n")  # one token, not the id of "\n"
    assert double_newline != tok.newline_id and double_newline in tok.line_end_ids
    backend = TwoChoiceBackend(tok.encode("A") + tok.encode("B"), tok.vocab_size)
    generator = Generator(backend, tok, SamplerSettings(allow_p=1.0))  # top_p 0.7 keeps only A, 0.9 both

    def first_letters(opening):
        _, results = stream(generator, generator.prefill(opening), max_chars=1, runs=64)
        return {r.text for r in results}

    assert tok.encode("标题\n\n")[-1] == double_newline
    assert first_letters("标题\n\n") == {"A", "B"}
    assert first_letters("标题。") == {"A"}


# ----- which tokenizer a model gets -----

@pytest.fixture(scope="module")
def world_model(tmp_path_factory) -> Path:
    """A random RWKV-7 with the world vocabulary's 65,536 rows and no vocabulary beside it."""
    from rwkv7_factory import write_random_rwkv7  # torch: only the tests of a model need it

    path = tmp_path_factory.mktemp("world") / "world.pth"
    write_random_rwkv7(path, n_layer=1, n_embd=64, head_size=32, vocab_size=WORLD_VOCAB_SIZE, seed=5)
    return path


def test_a_model_of_65536_tokens_without_a_vocabulary_gets_the_world_tokenizer(world_model):
    loaded = load_model(world_model, backend="torch-cpu")
    assert isinstance(loaded.tokenizer, WorldTokenizer)
    generator = Generator(loaded.backend, loaded.tokenizer)
    _, results = stream(generator, generator.prefill("\n你好，world"), max_chars=30)
    assert len(results[0].text) == 30


def test_a_character_vocabulary_beside_the_model_wins(world_model, tmp_path):
    model = tmp_path / "chars.pth"
    model.write_bytes(world_model.read_bytes())
    chars = [chr(c) for c in range(0x20, 0x20 + WORLD_VOCAB_SIZE + 0x800) if not 0xD800 <= c <= 0xDFFF]
    chars = [c for c in chars if c != UNKNOWN_CHAR][: WORLD_VOCAB_SIZE - 2] + ["\n", UNKNOWN_CHAR]
    (tmp_path / "chars.json").write_text(CharTokenizer(chars).to_json(), encoding="utf-8")
    as_chars = load_model(model, backend="torch-cpu")
    as_world = load_model(model, backend="torch-cpu", tokenizer="world")
    assert isinstance(as_chars.tokenizer, CharTokenizer) and isinstance(as_world.tokenizer, WorldTokenizer)
    assert model_fingerprint(as_chars) != model_fingerprint(as_world)  # a REPL state saved under one is not the other's


def test_the_override_chooses(world_model, tiny_model, tok):
    assert isinstance(load_model(world_model, backend="torch-cpu", tokenizer=tok.source).tokenizer, WorldTokenizer)
    assert isinstance(load_model(tiny_model, backend="torch-cpu", tokenizer="char").tokenizer, CharTokenizer)
    chars = load_model(tiny_model, backend="torch-cpu", tokenizer=DATA / "tiny_vocab.json").tokenizer
    assert isinstance(chars, CharTokenizer) and chars.vocab_size == 50
    with pytest.raises(VocabularyError, match="no vocabulary found"):
        load_model(world_model, backend="torch-cpu", tokenizer="char")


def test_a_tokenizer_of_the_wrong_size_is_a_one_line_error(tiny_model):
    with pytest.raises(VocabularyError) as error:
        load_model(tiny_model, backend="torch-cpu", tokenizer="world")
    message = str(error.value)
    assert "\n" not in message and "65536" in message and "50" in message and "tiny.pth" in message


def test_native_metadata_names_the_tokenizer(world_model, tok, tmp_path):
    checkpoint = load_checkpoint(world_model)
    native = tmp_path / "world.safetensors"
    save_native(native, checkpoint.config, checkpoint.tensors, tok)
    assert isinstance(load_checkpoint(native).tokenizer, WorldTokenizer)
    assert isinstance(load_model(native, backend="torch-cpu").tokenizer, WorldTokenizer)


# ----- the command line -----

def run(*args, stdin: str = "\n林黛玉说：“Hello 😀”\n"):
    env = cli_env(OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "ai_writer", *args], input=stdin.encode(), capture_output=True,
                          cwd=ROOT, env=env, timeout=300)


def test_continue_with_the_world_tokenizer(world_model):
    result = run("continue", "--model", str(world_model), "--tokenizer", "world", "--len", "80", "--seed", "3",
                 "--format", "jsonl")  # on the default backend: ONNX Runtime here
    assert result.returncode == 0, result.stderr.decode()
    lines = [json.loads(line) for line in result.stdout.decode("utf-8").splitlines()]
    deltas = [line["delta"] for line in lines if "delta" in line]
    done = lines[-1]
    assert done["done"] and done["chars"] == 80 and "".join(deltas) == done["text"]
    assert all(delta.encode("utf-8") for delta in deltas)
    assert " tokens) in " in result.stderr.decode()  # the opening is counted in characters and in tokens


def test_info_names_the_tokenizer_the_model_follows(world_model):
    result = run("info", "--model", str(world_model))
    assert result.returncode == 0, result.stderr.decode()
    assert f"RWKV world tokenizer {VOCAB_NAME}, 65536 ids" in result.stdout.decode()


def test_the_tokenizer_option_is_checked(world_model, tiny_model):
    result = run("continue", "--model", str(tiny_model), "--tokenizer", "nonsense", "--len", "5")
    assert result.returncode == 2 and "neither char, world nor a vocabulary file" in result.stderr.decode()
    result = run("continue", "--model", str(tiny_model), "--tokenizer", "world", "--backend", "torch-cpu")
    assert result.returncode == 2 and "Traceback" not in result.stderr.decode()
    assert result.stderr.decode().splitlines() == [
        (f"Error: the world tokenizer {VOCAB_NAME} has 65536 ids but model {tiny_model} has a vocabulary of 50; "
         "it needs its character vocabulary (--tokenizer char, --vocab)")]


def test_info_describes_a_model_without_exporting_it(world_model, tmp_path):
    """`info` on a model whose export is not made yet answers from the file's header: nothing is exported
    (minutes for a big model); once `continue` has made the export, info names it."""
    env = cli_env(OMP_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path))

    def info():
        result = subprocess.run([sys.executable, "-m", "ai_writer", "info", "--model", str(world_model)],
                                capture_output=True, cwd=ROOT, env=env, timeout=300)
        assert result.returncode == 0, result.stderr.decode()
        return dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.decode().splitlines())

    rows = info()
    assert rows["ONNX file"].startswith("not made yet: the first `continue` exports the model (fp32)")
    assert rows["precision"].startswith("fp32 (fp32 needs") and VOCAB_NAME in rows["vocabulary"]
    assert not [path for path in tmp_path.rglob("*") if path.name.endswith((".onnx", ".onnx.data"))]
    written = subprocess.run([sys.executable, "-m", "ai_writer", "continue", "--model", str(world_model), "--len", "5"],
                             input="林黛玉说：".encode(), capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert written.returncode == 0, written.stderr.decode()
    rows = info()
    made = Path(rows["ONNX file"])
    assert made.is_file() and tmp_path in made.parents and "CPUExecutionProvider" in rows["session providers"]
