"""Model files: the native single file round-trips; bad files are one-line errors, never code execution."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from helpers import DATA, RunsAShellCommand

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint, save_native
from ai_writer.errors import ModelFileError
from ai_writer.text.char_tokenizer import CharTokenizer


def test_native_file_round_trips_config_vocabulary_and_logits(tiny_model, tmp_path):
    original = load_checkpoint(tiny_model)
    tokenizer = CharTokenizer.from_file(DATA / "tiny_vocab.json")
    native = tmp_path / "tiny.safetensors"
    save_native(native, original.config, original.tensors, tokenizer)

    loaded = load_checkpoint(native)
    assert loaded.config == original.config
    assert loaded.tokenizer.chars == tokenizer.chars
    tokens = [[1, 12, 13, 14, 15]]
    a, _ = TorchBackend(original).forward(tokens, TorchBackend(original).zero_state(1))
    b, _ = TorchBackend(loaded).forward(tokens, TorchBackend(loaded).zero_state(1))
    np.testing.assert_allclose(a, b, atol=1e-6)  # same weights (memory alignment may change rounding)
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left nothing behind


def test_bf16_checkpoint_loads(tiny_model, tmp_path):
    tensors = {k: t.to(torch.bfloat16) for k, t in torch.load(tiny_model, weights_only=True).items()}
    torch.save(tensors, tmp_path / "half.pth")
    backend = TorchBackend(load_checkpoint(tmp_path / "half.pth"))
    logits, _ = backend.forward([[1, 2, 3]], backend.zero_state(1))
    assert np.isfinite(logits).all()


def one_line_error(path) -> str:
    with pytest.raises(ModelFileError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message
    return message


def test_missing_file(tmp_path):
    assert "no such model file" in one_line_error(tmp_path / "nothing.pth")


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("这不是模型")
    assert "not a model file" in one_line_error(path)


def test_truncated_pth(tiny_model, tmp_path):
    path = tmp_path / "cut.pth"
    path.write_bytes(tiny_model.read_bytes()[:50_000])
    assert "truncated or corrupt" in one_line_error(path)


def test_truncated_safetensors(tiny_model, tmp_path):
    native = tmp_path / "whole.safetensors"
    original = load_checkpoint(tiny_model)
    save_native(native, original.config, original.tensors, CharTokenizer.from_file(DATA / "tiny_vocab.json"))
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(native.read_bytes()[:-1000])
    assert "truncated or corrupt" in one_line_error(cut)


def test_a_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(2, 2), "payload": RunsAShellCommand(marker)}, path)
    message = one_line_error(path)
    assert "refused" in message and "system" in message
    assert not marker.exists()


def test_a_plain_pickle_is_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(RunsAShellCommand(marker)))
    assert "not a model file" in one_line_error(path)
    assert not marker.exists()


def test_other_architectures_are_named(tmp_path):
    path = tmp_path / "gpt.pth"
    torch.save({"wte.weight": torch.zeros(4, 4)}, path)
    assert "not an RWKV-7 checkpoint" in one_line_error(path)


def test_wrong_shape_is_named(tiny_model, tmp_path):
    tensors = torch.load(tiny_model, weights_only=True)
    tensors["blocks.1.ffn.value.weight"] = torch.zeros(64, 100)
    torch.save(tensors, tmp_path / "bad.pth")
    assert "blocks.1.ffn.value.weight" in one_line_error(tmp_path / "bad.pth")
