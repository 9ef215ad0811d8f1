"""--state (a state-tuned start) and --template (what the model reads around the story)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import cli_env

from ai_writer.backends.open import load_model
from ai_writer.errors import ModelFileError, SettingsError
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.generator import Generator
from ai_writer.generation.reading import Reader
from ai_writer.models.state_file import read_state_file
from ai_writer.text.templates import SHIPPED, template_named

OPENING = "\n这是一颗魔法"


def save_state_file(path, layers: np.ndarray) -> None:
    """A state file as state tuning writes it: blocks.N.att.time_state, [H, N, N] per layer."""
    from safetensors.numpy import save_file

    save_file({f"blocks.{i}.att.time_state": np.ascontiguousarray(layer) for i, layer in enumerate(layers)}, str(path))


def cli(*args, stdin: str = OPENING):
    return subprocess.run([sys.executable, "-m", "ai_writer", *args], input=stdin.encode(), capture_output=True,
                          env=cli_env(), timeout=300)


@pytest.fixture(scope="module")
def tuned(tiny_model, tiny_onnx_cache, tmp_path_factory):
    """A state file holding the wkv state the tiny model reaches after reading some text, and that start as a
    state: zero token shifts, that wkv (what a tuned start is)."""
    loaded = load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache)
    after = Reader(loaded.backend, loaded.tokenizer).feed(None, "\n林黛玉笑道：你们在说什么？" * 3)
    wkv = after.state.wkv  # (L, 1, H, N, N), RWKV-7: [value, key], as the file stores it
    path = tmp_path_factory.mktemp("state") / "style.safetensors"
    save_state_file(path, wkv[:, 0])
    start = loaded.backend.zero_state(1)
    start = type(start)(att_shift=np.zeros_like(start.att_shift), wkv=wkv.copy(), ffn_shift=np.zeros_like(start.ffn_shift))
    return loaded, path, start


def write(loaded, start_state, seed: int) -> str:
    generator = Generator(loaded.backend, loaded.tokenizer)
    ids = loaded.tokenizer.encode(OPENING)
    logits, state = loaded.backend.forward([ids], start_state)
    begin = Prefilled(state, logits[0], ids[-1], len(ids))
    return "".join(c.text for c in generator.stream(begin, max_chars=60, rng=np.random.default_rng(seed)))


def test_a_state_file_writes_exactly_as_reading_from_that_state(tuned, tiny_model, tiny_onnx_cache):
    plain, path, start = tuned
    expected = write(plain, start, seed=5)
    with_state = load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache, state_file=path)
    assert with_state.state_file == path
    assert write(with_state, with_state.backend.zero_state(1), seed=5) == expected
    assert write(plain, plain.backend.zero_state(1), seed=5) != expected  # the state does change the text


def test_continue_with_state_on_the_cli(tuned, tiny_model):
    plain, path, start = tuned
    result = cli("continue", "--model", str(tiny_model), "--len", "60", "--seed", "5", "--raw", "--state", str(path),
                 "--threads", "1", "-q")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == write(plain, start, seed=5)


def test_the_torch_backend_starts_from_the_same_state(tuned, tiny_model):
    pytest.importorskip("torch")
    _, path, _ = tuned
    onnx = load_model(tiny_model, backend="cpu", threads=1, state_file=path)
    torch_model = load_model(tiny_model, backend="torch-cpu", threads=1, state_file=path)
    ids = [[3, 1, 4, 1, 5]]
    a, _ = onnx.backend.forward(ids, onnx.backend.zero_state(1))
    b, _ = torch_model.backend.forward(ids, torch_model.backend.zero_state(1))
    assert np.abs(a - b).max() < 1e-4


def test_a_state_for_another_model_is_one_line(tuned, tiny_model, tmp_path):
    loaded, path, _ = tuned
    L, H, N = loaded.config.n_layer, loaded.config.n_head, loaded.config.head_size
    save_state_file(tmp_path / "deeper.safetensors", np.zeros((L + 1, H, N, N), np.float32))
    save_state_file(tmp_path / "wider.safetensors", np.zeros((L, H, N + 1, N + 1), np.float32))
    (tmp_path / "weights.safetensors").write_bytes((tmp_path / "wider.safetensors").read_bytes())
    for name, words in (("deeper", "this state has 3 layers"), ("wider", "it was tuned for another model")):
        result = cli("continue", "--model", str(tiny_model), "--len", "5", "--state", str(tmp_path / f"{name}.safetensors"))
        lines = result.stderr.decode().strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and words in lines[0], lines
    with pytest.raises(ModelFileError, match="no blocks.N.att.time_state"):
        read_state_file(tiny_model, loaded.config)  # a model is not a state


@pytest.mark.oracle
def test_rwkv6_state_files_are_transposed_as_the_package_reads_them(tmp_path):
    """The oracle: the rwkv package reads a v6 file carrying time_state itself; ai-writer reads the plain model
    with the same tensors given as --state, and both must give the same logits."""
    pytest.importorskip("rwkv")
    torch = pytest.importorskip("torch")
    from rwkv_oracle import oracle_logits
    from rwkv_world_factory import write_random_rwkv

    tensors = write_random_rwkv(tmp_path / "m.pth", version=6, n_layer=2, n_embd=128, vocab_size=512, seed=3)
    rng = np.random.default_rng(0)
    state = (rng.standard_normal((2, 2, 64, 64)) * 0.3).astype(np.float32)  # (L, H, N, N), the file's layout
    merged = dict(tensors)
    merged.update({f"blocks.{i}.att.time_state": torch.from_numpy(state[i]) for i in range(2)})
    torch.save(merged, tmp_path / "m_with_state.pth")
    save_state_file(tmp_path / "style.safetensors", state)
    ids = [int(t) for t in rng.integers(0, 512, 12)]
    expected = oracle_logits(tmp_path / "m_with_state.pth", ids, threads=1, rwkv7=False)["prefill"]
    for backend in ("cpu", "torch-cpu"):
        loaded = load_model(tmp_path / "m.pth", backend=backend, threads=1, need_vocab=False, onnx_cache=tmp_path,
                            state_file=tmp_path / "style.safetensors")
        logits, _ = loaded.backend.forward([ids], loaded.backend.zero_state(1))
        assert np.abs(logits[0] - expected).max() < 1e-4, backend


# ---- templates ----------------------------------------------------------------------------------------------


def test_templates_by_name_and_from_a_file(tmp_path):
    assert SHIPPED["plain"].wrap("x") == "x" and template_named(None) is SHIPPED["plain"]
    assert template_named("longer").wrap("故事") == "User: make this content longer:\n故事\n\nAssistant: ok, longer content is"
    (tmp_path / "mine.txt").write_text("前言：{story}\n续：\n", encoding="utf-8")
    mine = template_named(tmp_path / "mine.txt")
    assert (mine.before, mine.after) == ("前言：", "\n续：")  # the file's last newline is not part of it
    (tmp_path / "bad.txt").write_text("no marker", encoding="utf-8")
    with pytest.raises(SettingsError, match=r"holds \{story\} exactly once"):
        template_named(tmp_path / "bad.txt")
    with pytest.raises(SettingsError, match="unknown template 'shorter': use plain, longer"):
        template_named("shorter")


def test_continue_reads_the_wrapped_story_and_prints_only_the_new_text(tiny_model, tmp_path):
    (tmp_path / "t.txt").write_text("这是{story}魔法\n", encoding="utf-8")
    wrapped = cli("continue", "--model", str(tiny_model), "--len", "40", "--seed", "3", "--template",
                  str(tmp_path / "t.txt"), "-q", stdin="一颗")
    by_hand = cli("continue", "--model", str(tiny_model), "--len", "40", "--seed", "3", "--raw", "-q",
                  stdin="这是\n一颗魔法")  # the clean-up puts a newline before the opening, then the template wraps it
    assert wrapped.returncode == 0 and wrapped.stdout == by_hand.stdout and len(wrapped.stdout.decode()) == 40


def test_an_unknown_template_is_one_line(tiny_model):
    result = cli("continue", "--model", str(tiny_model), "--template", "shorter")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2 and lines == ["Error: unknown template 'shorter': use plain, longer or a template "
                                                "file holding {story} where the story goes"]


def test_the_story_state_never_holds_the_template(tiny_model, tiny_onnx_cache):
    loaded = load_model(tiny_model, backend="cpu", threads=1, onnx_cache=tiny_onnx_cache)
    template = template_named("longer")
    reader, plain = Reader(loaded.backend, loaded.tokenizer, template), Reader(loaded.backend, loaded.tokenizer)
    story = reader.feed(None, OPENING)
    same = plain.feed(None, template.before + OPENING)
    assert np.array_equal(story.logits, same.logits) and story.n_tokens == same.n_tokens
    writing = reader.writing_start(story)
    assert np.array_equal(writing.logits, plain.feed(same, template.after).logits)
    assert np.array_equal(reader.feed(story, "众人").logits, plain.feed(same, "众人").logits)  # the story goes on


def test_the_server_reads_the_story_through_its_template(tiny_model, tmp_path):
    from server_helpers import json_request, running_server

    (tmp_path / "t.txt").write_text("这是{story}魔法", encoding="utf-8")
    body = {"text": "一颗", "settings": {"length": 30, "seed": 4, "raw": True}, "stream": False}
    with running_server(tiny_model, template=template_named(tmp_path / "t.txt")) as server:
        status, _, wrapped = json_request(server, "POST", "/api/continue", body)
    with running_server(tiny_model) as server:
        _, _, by_hand = json_request(server, "POST", "/api/continue", {**body, "text": "这是一颗魔法"})
    assert status == 200 and wrapped["variants"][0]["text"] == by_hand["variants"][0]["text"]
