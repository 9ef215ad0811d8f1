"""Bits per character: the scoring convention, unknown characters, segments, files and `ai-writer eval`."""

import math

import click
import pytest
import torch
from click.testing import CliRunner

from ai_writer.models.checkpoint import save_native
from ai_writer.cli.train import eval_command
from ai_writer.errors import InputTextError
from ai_writer.training.evaluate import bits_per_character, evaluate_file, evaluate_files
from ai_writer.backends.open import load_model
from ai_writer.models.rwkv.rwkv7 import RWKV7
from ai_writer.models.rwkv.init import new_model_config
from ai_writer.text.char_tokenizer import UNKNOWN_CHAR, CharTokenizer

TOKENIZER = CharTokenizer(["\n", " ", "a", "b", "c", "d", UNKNOWN_CHAR])
V = TOKENIZER.vocab_size


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_model(fill: str) -> RWKV7:
    torch.manual_seed(0)
    model = RWKV7(new_model_config(V, n_layer=2, n_embd=64, head_size=32, ctx_len=32))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if fill == "zero":
                p.zero_()
            elif name.endswith("w0"):
                p.uniform_(-3, 1)
            else:
                p.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def uniform():
    return make_model("zero")  # every weight 0: the logits are exactly 0, the prediction uniform


@pytest.fixture(scope="module")
def random_model():
    return make_model("random")


def test_uniform_model_scores_log2_of_the_vocabulary(uniform):
    text = "abc d\ndcba\n" * 50
    bpc, n_chars, n_unknown = bits_per_character(uniform, TOKENIZER, text)
    assert n_chars == len(text) and n_unknown == 0
    assert bpc == pytest.approx(math.log2(V), rel=1e-12)


def test_unknown_characters_are_scored_as_the_unknown_id_and_counted(uniform, random_model):
    bpc, n_chars, n_unknown = bits_per_character(uniform, TOKENIZER, "ab漢x\n字\n")
    assert (n_chars, n_unknown) == (7, 3)
    assert bpc == pytest.approx(math.log2(V), rel=1e-12)
    with_unknown = bits_per_character(random_model, TOKENIZER, "ab漢c\n")[0]
    with_unknown_id = bits_per_character(random_model, TOKENIZER, f"ab{UNKNOWN_CHAR}c\n")[0]
    assert with_unknown == with_unknown_id


def test_first_character_is_predicted_after_a_newline(random_model):
    def nats_first(char):
        logits, _ = random_model(torch.tensor([[TOKENIZER.newline_id]]), random_model.zero_state(1))
        return -torch.log_softmax(logits[0], -1)[TOKENIZER.encode(char)[0]].item()

    bpc, n_chars, _ = bits_per_character(random_model, TOKENIZER, "b")
    assert n_chars == 1
    assert bpc == pytest.approx(nats_first("b") / math.log(2), rel=1e-5)


def test_segments_carry_the_state(random_model):
    text = "abcd dcba\nab ab\n" * 12
    whole = bits_per_character(random_model, TOKENIZER, text, segment_len=4096)
    pieces = bits_per_character(random_model, TOKENIZER, text, segment_len=7)
    assert pieces[1:] == whole[1:]
    assert pieces[0] == pytest.approx(whole[0], rel=1e-5)
    fresh = sum(bits_per_character(random_model, TOKENIZER, line + "\n")[0] * (len(line) + 1)
                for line in text.splitlines()) / len(text)
    assert abs(fresh - whole[0]) > 1e-3  # a model that forgot between segments would score differently


def test_backend_paths_agree_with_the_module(tmp_path, random_model):
    path = tmp_path / "m.safetensors"
    save_native(path, random_model.config, random_model.state_dict(), TOKENIZER)
    loaded = load_model(path, backend="torch-cpu")
    text = "ab cd\ndd a\n" * 3

    class StepOnly:  # a backend that only returns last-position logits, like the ONNX one
        def __init__(self, backend):
            self.backend = backend

        def zero_state(self, n):
            return self.backend.zero_state(n)

        def forward(self, ids, state):
            return self.backend.forward(ids, state)

    reference = bits_per_character(random_model, TOKENIZER, text)
    for model in (loaded.backend, StepOnly(loaded.backend)):
        bpc, n_chars, n_unknown = bits_per_character(model, loaded.tokenizer, text)
        assert (n_chars, n_unknown) == reference[1:]
        assert bpc == pytest.approx(reference[0], rel=1e-5)


def test_files_score_the_held_out_lines_or_everything(tmp_path, uniform):
    path = tmp_path / "story.txt"
    lines = [f"{'ab' * (i + 1)}" for i in range(21)]  # 21 lines: the last 2 are held out
    path.write_text("\n".join(lines), encoding="utf-8")  # no final newline: still counted
    held_out = evaluate_file(uniform, TOKENIZER, path)
    assert held_out.n_chars == len(lines[19]) + len(lines[20]) + 2
    whole = evaluate_file(uniform, TOKENIZER, path, all=True)
    assert whole.n_chars == sum(len(line) + 1 for line in lines)
    results, total = evaluate_files(uniform, TOKENIZER, [path, path])
    assert total.n_chars == 2 * held_out.n_chars
    assert total.bits_per_character == pytest.approx(math.log2(V), rel=1e-12)
    with pytest.raises(InputTextError, match="missing.txt: no such file"):
        evaluate_file(uniform, TOKENIZER, tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert math.isnan(evaluate_file(uniform, TOKENIZER, empty).bits_per_character)


def test_eval_command_prints_one_line_per_file_and_a_total(tmp_path, uniform):
    model = tmp_path / "u.safetensors"
    save_native(model, uniform.config, uniform.state_dict(), TOKENIZER)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("abc\n" * 40, encoding="utf-8")
    b.write_text("漢字 ab\n" * 20, encoding="utf-8")
    group = click.Group(commands=[eval_command])
    result = CliRunner().invoke(group, ["eval", "--model", str(model), "--backend", "torch-cpu", str(a), str(b)])
    assert result.exit_code == 0, result.output
    rows = result.output.splitlines()
    assert len(rows) == 4 and rows[0].split() == ["file", "bits/char", "chars", "unknown"]
    assert rows[1].split() == [str(a), f"{math.log2(V):.4f}", "8", "0"]  # 2 held-out lines of "abc\n"
    assert rows[2].split() == [str(b), f"{math.log2(V):.4f}", "6", "2"]
    assert rows[3].split() == ["total", f"{math.log2(V):.4f}", "14", "2"]
    everything = CliRunner().invoke(group, ["eval", "-m", str(model), "--all", str(a)])
    row = next(line for line in everything.output.splitlines() if line.startswith(str(a)))  # after any notice
    assert row.split()[1:] == [f"{math.log2(V):.4f}", "160", "0"]  # the default (ONNX Runtime) backend agrees
    missing = CliRunner().invoke(group, ["eval", "-m", str(model), str(tmp_path / "nope.txt")])
    assert isinstance(missing.exception, InputTextError)
