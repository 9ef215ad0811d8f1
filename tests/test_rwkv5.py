"""RWKV-5.2 in torch: the chunked recurrence equals the step recurrence, also where decays are
extreme; batches, states and precisions behave as the engine contract says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from rwkv_world_factory import write_random_rwkv

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.models.rwkv.rwkv5 import CHUNK_LEN, wkv_chunked, wkv_step


def step_by_step(state, r, log_w, k, v, u):
    ys = []
    for t in range(r.shape[1]):
        y, state = wkv_step(state, r[:, t], log_w[:, t], k[:, t], v[:, t], u)
        ys.append(y)
    return torch.stack(ys, dim=1), state


@pytest.mark.parametrize("length", [2, CHUNK_LEN - 1, CHUNK_LEN, CHUNK_LEN + 1, 5 * CHUNK_LEN + 3])
def test_chunked_recurrence_equals_steps_with_extreme_decays(length):
    gen = torch.Generator().manual_seed(length)
    B, H, N = 2, 3, 8
    r, k, v = (torch.randn(B, length, H, N, generator=gen, dtype=torch.float64) for _ in range(3))
    # log-log decays from -8 (remembers for thousands of tokens) to +4 (w = e^-55: forgets at once);
    # a chunk's running product then reaches e^-800, far below what a float can divide by
    log_w = -torch.empty(B, length, H, N, dtype=torch.float64).uniform_(-8, 4, generator=gen).exp()
    u = torch.randn(H, N, generator=gen, dtype=torch.float64)
    state = torch.randn(B, H, N, N, generator=gen, dtype=torch.float64)

    y, new = wkv_chunked(state, r, log_w, k, v, u)
    y_ref, new_ref = step_by_step(state, r, log_w, k, v, u)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, y_ref, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(new, new_ref, atol=1e-9, rtol=1e-9)


@pytest.fixture(scope="module")
def backend(tmp_path_factory, one_torch_thread):
    path = tmp_path_factory.mktemp("v5") / "m.pth"
    write_random_rwkv(path, version=5, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=2)
    return TorchBackend(load_checkpoint(path))


def test_rows_of_a_batch_are_independent_and_the_given_state_is_unchanged(backend):
    tokens = np.random.default_rng(0).integers(0, 50, (3, 40))
    start = backend.forward(tokens[:, :5], backend.zero_state(3))[1]
    before = start.clone()
    batched, state = backend.forward(tokens[:, 5:], start)
    for row in range(3):
        alone, alone_state = backend.forward(tokens[row : row + 1, 5:], start.select([row]))
        np.testing.assert_allclose(batched[row], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(state.select([row]).wkv, alone_state.wkv, atol=1e-5, rtol=0)
    for name in ("att_shift", "wkv", "ffn_shift"):
        assert torch.equal(getattr(start, name), getattr(before, name))


def test_prefill_then_steps_equals_one_prefill(backend):
    tokens = np.random.default_rng(1).integers(0, 50, (1, 30))
    whole, whole_state = backend.forward(tokens, backend.zero_state(1))
    logits, state = backend.forward(tokens[:, :20], backend.zero_state(1))
    for token in tokens[0, 20:]:
        logits, state = backend.forward([[token]], state)
    np.testing.assert_allclose(logits, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(state.wkv, whole_state.wkv, atol=1e-5, rtol=0)


def test_fp16_with_rescaling_follows_fp32(tmp_path, one_torch_thread):
    """Seven layers: the fp16 model halves its residual stream after the sixth, as the package does."""
    path = tmp_path / "deep.pth"
    write_random_rwkv(path, version=5, n_layer=7, n_embd=64, head_size=32, vocab_size=50, seed=4, dtype=torch.float16)
    checkpoint = load_checkpoint(path)
    assert checkpoint.tensors["head.weight"].dtype == torch.float16
    fp32, fp16 = TorchBackend(checkpoint), TorchBackend(checkpoint, precision="fp16")
    assert fp16.model.rescale and fp16.model.blocks[6].att.out_scale == 0.5
    assert fp16.model.head.weight.data_ptr() == checkpoint.tensors["head.weight"].data_ptr()  # no copy made
    tokens = np.random.default_rng(3).integers(0, 50, (1, 25))
    a, _ = fp32.forward(tokens, fp32.zero_state(1))
    b, _ = fp16.forward(tokens, fp16.zero_state(1))
    assert np.abs(a - b).max() < 0.05 * np.abs(a).max()
