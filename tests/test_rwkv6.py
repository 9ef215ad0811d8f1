"""RWKV-6 in torch: the data-dependent decay and token shift give the same results read in one
sequence, token by token, or in a batch, from any state; fp16 keeps the stored weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rwkv_world_factory import write_random_rwkv

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.models.rwkv.rwkv6 import RWKV6


@pytest.fixture(scope="module")
def backend(tmp_path_factory, one_torch_thread):
    path = tmp_path_factory.mktemp("v6") / "m.pth"
    write_random_rwkv(path, version=6, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=5, dim_mix=8,
                      dim_decay=16)
    backend = TorchBackend(load_checkpoint(path))
    assert isinstance(backend.model, RWKV6)
    return backend


@pytest.mark.parametrize("length", [2, 17, 50])
def test_a_sequence_from_a_warm_state_equals_its_tokens_one_by_one(backend, length):
    rng = np.random.default_rng(length)
    start = backend.forward(rng.integers(0, 50, (2, 7)), backend.zero_state(2))[1]
    tokens = rng.integers(0, 50, (2, length))
    whole, whole_state = backend.forward(tokens, start)
    state = start
    for t in range(length):
        logits, state = backend.forward(tokens[:, t : t + 1], state)
    np.testing.assert_allclose(logits, whole, atol=1e-5, rtol=0)
    for name in ("att_shift", "wkv", "ffn_shift"):
        torch.testing.assert_close(getattr(state, name), getattr(whole_state, name), atol=1e-5, rtol=1e-5)


def test_rows_of_a_batch_are_independent(backend):
    tokens = np.random.default_rng(9).integers(0, 50, (3, 20))
    batched, _ = backend.forward(tokens, backend.zero_state(3))
    for row in range(3):
        alone, _ = backend.forward(tokens[row : row + 1], backend.zero_state(1))
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-5, rtol=0)


def test_bf16_weights_are_used_as_stored(tmp_path, one_torch_thread):
    path = tmp_path / "bf16.pth"
    write_random_rwkv(path, version=6, n_layer=1, n_embd=64, head_size=32, vocab_size=50, dtype=torch.bfloat16)
    checkpoint = load_checkpoint(path)
    fp32, bf16 = TorchBackend(checkpoint), TorchBackend(checkpoint, precision="bf16")
    stored = checkpoint.tensors["blocks.0.att.key.weight"]
    assert bf16.model.blocks[0].att.key.weight.data_ptr() == stored.data_ptr()  # mmap'd, not copied
    assert not bf16.model.rescale  # rescaling is for fp16 only, as in the package
    tokens = np.random.default_rng(3).integers(0, 50, (1, 20))
    a, _ = fp32.forward(tokens, fp32.zero_state(1))
    b, _ = bf16.forward(tokens, bf16.zero_state(1))
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max()
