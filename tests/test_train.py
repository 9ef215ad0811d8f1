"""Training: a tiny model learns, an interrupted run resumes bit-identically, the files it writes."""

import dataclasses
import math
import os
import random
import signal

import click
import pytest
import torch
from click.testing import CliRunner

from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.cli.train import train_command
from ai_writer.training.corpus import load_corpus
from ai_writer.errors import InputTextError, ModelFileError, SettingsError
from ai_writer.training.evaluate import evaluate_file
from ai_writer.models.rwkv.rwkv7 import RWKV7
from ai_writer.models.rwkv.init import init_weights, new_model_config
from ai_writer.training.train import (
    TrainOptions,
    checkpoint_path,
    eval_windows,
    lr_at,
    make_optimizer,
    train,
    window_loss,
)
from ai_writer.training.progress import QuietProgress

TINY = dict(n_layer=2, n_embd=64, head_size=32, ctx_len=32, batch_size=8, lr=3e-3, warmup_steps=4, threads=1,
            eval_tokens=512)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """Sentences with a fixed pattern: a model that learns the pattern predicts most characters."""
    rng = random.Random(0)
    names, verbs = ["alice", "bob", "carol", "dave"], ["sees", "likes", "finds", "greets"]
    lines = []
    for _ in range(300):
        a, b = rng.choice(names), rng.choice(names)
        lines.append(f"{a} {rng.choice(verbs)} {b}. {b} says hello to {a}.")
    path = tmp_path_factory.mktemp("corpus") / "story.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def options_for(tmp_path, corpus_file, name="model", **changes):
    return TrainOptions(corpus=(str(corpus_file),), out=str(tmp_path / f"{name}.safetensors"),
                        cache_dir=str(tmp_path / "cache"), **{**TINY, **changes})


def test_a_tiny_model_learns_the_pattern(tmp_path, corpus_file):
    result = train(options_for(tmp_path, corpus_file, steps=40, eval_every=10))
    vocab = load_corpus([corpus_file]).tokenizer.vocab_size
    losses = [h["val_loss"] for h in result.history]
    assert [h["step"] for h in result.history] == [10, 20, 30, 40]
    assert losses[-1] < 0.6 * losses[0] and losses[-1] < 0.4 * math.log(vocab)
    assert result.best_val_loss == min(losses) and not result.interrupted
    assert result.best_val_bpc == pytest.approx(result.best_val_loss / math.log(2))

    checkpoint = load_checkpoint(result.out)  # the native file: config with ctx_len, and the vocabulary
    assert checkpoint.config == new_model_config(vocab, 2, 64, 32, ctx_len=32)
    assert checkpoint.tokenizer.chars == load_corpus([corpus_file]).tokenizer.chars
    state = torch.load(checkpoint_path(result.out), weights_only=True)
    assert state["step"] == state["total_steps"] == 40
    assert state["vocab"] == list(checkpoint.tokenizer.chars)
    model = RWKV7(checkpoint.config)
    model.load_state_dict(checkpoint.tensors)
    bpc = evaluate_file(model.eval(), checkpoint.tokenizer, corpus_file).bits_per_character
    assert bpc < 0.4 * math.log2(vocab)


class StopAt(QuietProgress):
    """Interrupts the run after a given step, by a real SIGINT or by raising KeyboardInterrupt."""

    def __init__(self, step, how):
        super().__init__()
        self.stop_step, self.how = step, how

    def update(self, stats):
        super().update(stats)
        if stats.step == self.stop_step:
            if self.how == "signal":
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the loop finishes the step and stops
            else:
                raise KeyboardInterrupt


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_interrupted_and_resumed_run_ends_identical(tmp_path, corpus_file, how):
    common = dict(steps=24, eval_every=8, checkpoint_every=5)
    straight = train(options_for(tmp_path, corpus_file, "straight", **common))

    options = options_for(tmp_path, corpus_file, "resumed", **common)
    stopped = train(options, StopAt(11, how))
    assert stopped.interrupted and stopped.step == 11
    assert torch.load(checkpoint_path(options.out), weights_only=True)["step"] == 11
    with pytest.raises(SettingsError, match="exists"):
        train(options)  # not without resume: that would throw the run away
    resumed = train(dataclasses.replace(options, resume=True, steps=None, n_layer=5))  # stored settings win
    assert not resumed.interrupted and resumed.step == 24
    assert resumed.history == straight.history

    a = torch.load(checkpoint_path(straight.out), weights_only=True)
    b = torch.load(checkpoint_path(resumed.out), weights_only=True)
    for key, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][key]), key
    assert torch.equal(a["data_rng"], b["data_rng"])
    for key, slot in a["optimizer"]["state"].items():
        for name, value in slot.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name])
    best_a, best_b = load_checkpoint(straight.out), load_checkpoint(resumed.out)
    for key, tensor in best_a.tensors.items():
        assert torch.equal(tensor, best_b.tensors[key]), key


def test_a_resumed_run_can_be_given_a_new_length(tmp_path, corpus_file):
    options = options_for(tmp_path, corpus_file, steps=30, eval_every=0, checkpoint_every=0)
    train(options, StopAt(12, "exception"))
    with pytest.raises(SettingsError, match="--steps 12: this run has already done 12 steps"):
        train(dataclasses.replace(options, resume=True, steps=12))
    shorter = train(dataclasses.replace(options, resume=True, steps=20))
    assert (shorter.step, shorter.total_steps) == (20, 20)
    assert lr_at(19, 20, options) < lr_at(19, 30, options)  # the decay follows the new length


def test_bf16_autocast_trains(tmp_path, corpus_file):
    result = train(options_for(tmp_path, corpus_file, dtype="bf16", steps=6, eval_every=3))
    assert all(math.isfinite(h["val_loss"]) for h in result.history)
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert load_checkpoint(result.out).tensors["head.weight"].dtype == torch.float32  # fp32 master weights


def test_minutes_fix_the_step_count_before_training(tmp_path, corpus_file):
    progress = QuietProgress()
    result = train(options_for(tmp_path, corpus_file, minutes=0.03, eval_every=0), progress)
    state = torch.load(checkpoint_path(result.out), weights_only=True)
    assert result.step == result.total_steps == state["total_steps"] >= 1
    assert any("steps fit" in m for m in progress.messages)


def test_lr_schedule_warms_up_then_decays_to_a_tenth():
    options = TrainOptions(corpus=("x",), out="x", lr=1e-3, warmup_steps=10)
    assert lr_at(0, 100, options) == pytest.approx(1e-4)
    assert lr_at(9, 100, options) == pytest.approx(1e-3)
    assert lr_at(55, 100, options) == pytest.approx(5.5e-4)
    assert lr_at(100, 100, options) == pytest.approx(1e-4)
    rates = [lr_at(s, 100, options) for s in range(10, 100)]
    assert rates == sorted(rates, reverse=True)


def test_initial_weights_and_optimizer_groups():
    config = new_model_config(50, n_layer=3, n_embd=64, head_size=32, ctx_len=32)
    model, again = RWKV7(config), RWKV7(config)
    init_weights(model, seed=1)
    init_weights(again, seed=1)
    for (name, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), name  # deterministic for a seed
    blocks = model.blocks
    assert all(b.att.output.weight.abs().sum() == 0 and b.ffn.value.weight.abs().sum() == 0 for b in blocks)
    assert blocks[1].att.w1.abs().sum() == 0 and blocks[1].att.w2.abs().sum() > 0
    decay = -math.exp(-0.5) * torch.sigmoid(blocks[0].att.w0)  # log of the per-step decay
    assert decay.max() > -0.01 and decay.min() < -0.5  # slow and fast channels
    assert model.emb.weight.abs().max() <= 1e-4
    tokens = torch.randint(0, 50, (4, 33), generator=torch.Generator().manual_seed(0))
    assert abs(window_loss(model, tokens).item() - math.log(50)) < 0.3  # starts near uniform

    groups = make_optimizer(model, TrainOptions(corpus=("x",), out="x")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    assert "head.weight" in decayed and "blocks.0.att.key.weight" in decayed and "emb.weight" not in decayed
    assert not any("ln" in n or n.endswith(("w1", "w2", "x_k")) for n in decayed)
    assert groups[2]["lr_scale"] == 2 and {names[id(p)] for p in groups[2]["params"]} == {
        f"blocks.{i}.att.w0" for i in range(3)}


def test_eval_windows_are_fixed_and_cover_the_held_out_text():
    import numpy as np

    val = np.arange(1000, dtype=np.uint16)
    windows = eval_windows(val, ctx_len=32, eval_tokens=320)
    assert windows.shape == (10, 33) and windows[0, 0] == 0 and windows[-1, -1] == 999
    assert torch.equal(windows, eval_windows(val, 32, 320))
    assert eval_windows(val[:10], 32, 320).shape == (1, 10)


def test_bad_settings_and_files_are_one_line_errors(tmp_path, corpus_file):
    with pytest.raises(SettingsError, match="multiple of head_size"):
        train(options_for(tmp_path, corpus_file, n_embd=48, steps=1))
    with pytest.raises(SettingsError, match="not both"):
        train(options_for(tmp_path, corpus_file, steps=1, minutes=1))
    with pytest.raises(ModelFileError, match="no training checkpoint"):
        train(options_for(tmp_path, corpus_file, steps=1, resume=True))
    short = tmp_path / "short.txt"
    short.write_text("abcabc\n" * 25, encoding="utf-8")
    with pytest.raises(InputTextError, match="fewer than ctx_len"):
        train(dataclasses.replace(options_for(tmp_path, short, steps=1), ctx_len=200))
    with pytest.raises(SettingsError, match="does not exist"):
        train(dataclasses.replace(options_for(tmp_path, corpus_file, steps=1), out=str(tmp_path / "no" / "m.st")))

    options = options_for(tmp_path, corpus_file, "changed", steps=2)
    train(options)
    with pytest.raises(InputTextError, match="differ"):
        train(dataclasses.replace(options, corpus=(str(short),), resume=True))
    damaged = checkpoint_path(options.out)
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="cannot read"):
        train(dataclasses.replace(options, resume=True))


def test_train_command(tmp_path, corpus_file):
    group = click.Group(commands=[train_command])
    out = tmp_path / "cli.safetensors"
    args = ["train", str(corpus_file), "--out", str(out), "--n-layer", "1", "--n-embd", "32", "--head-size", "32",
            "--ctx-len", "16", "--batch-size", "4", "--steps", "3", "--threads", "1", "--cache-dir",
            str(tmp_path / "cache"), "-q"]
    result = CliRunner().invoke(group, args)
    assert result.exit_code == 0, result.output
    assert load_checkpoint(out).config.n_layer == 1
    both = CliRunner().invoke(group, args[:-1] + ["--minutes", "1"])
    assert isinstance(both.exception, SettingsError)


def test_fine_tuning_starts_from_the_given_model(tmp_path, corpus_file):
    base = train(options_for(tmp_path, corpus_file, name="base", steps=30, eval_every=30))
    other = tmp_path / "other.txt"  # new text with a character the base vocabulary lacks
    other.write_text("alice greets zed. zed says hello to alice.\n" * 60, encoding="utf-8")
    tuned = train(options_for(tmp_path, other, name="tuned", steps=1, eval_every=1, lr=1e-9, warmup_steps=0,
                              n_layer=1, n_embd=32, init_from=str(base.out)))
    before, after = load_checkpoint(base.out), load_checkpoint(tuned.out)
    assert after.config == before.config  # the base model's shape, whatever the shape options say
    assert after.tokenizer.chars == before.tokenizer.chars  # and its vocabulary: "z" stays unknown
    assert "z" not in after.tokenizer.chars
    for key, tensor in before.tensors.items():  # one step at lr 1e-9: the weights are the base model's
        assert torch.allclose(after.tensors[key], tensor, atol=1e-6), key
    learned = train(options_for(tmp_path, other, name="learned", steps=20, eval_every=20, init_from=str(base.out)))
    assert learned.best_val_loss < tuned.best_val_loss


def test_fine_tuning_needs_a_native_model(tmp_path, corpus_file, tiny_model):
    with pytest.raises(SettingsError, match="fine-tuning needs an ai-writer .safetensors model"):
        train(options_for(tmp_path, corpus_file, steps=1, init_from=str(tiny_model)))
    with pytest.raises(ModelFileError, match="no such model file"):
        train(options_for(tmp_path, corpus_file, steps=1, init_from=str(tmp_path / "missing.safetensors")))
