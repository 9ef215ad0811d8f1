"""The parallel and step forms agree, long inputs stay bounded, and states are independent values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ai_writer.backends import rwkv_torch as torch_backend
from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.models.rwkv.rwkv7 import wkv_chunked, wkv_step

# thousands of one-token steps of a tiny model: on two threads, they stall whenever other work holds a core
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_chunked_recurrence_equals_step_by_step():
    torch.manual_seed(0)
    B, T, H, N = 2, 100, 3, 16
    r, k, v = (torch.randn(B, T, H, N) for _ in range(3))
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, N)
    log_w = -0.6065 * torch.rand(B, T, H, N)
    start = torch.randn(B, H, N, N) * 0.1

    state, ys = start, []
    for t in range(T):
        y, state = wkv_step(state, r[:, t], log_w[:, t].exp(), k[:, t], v[:, t], a[:, t], b[:, t])
        ys.append(y)
    for chunk_len in (1, 16, 32):
        y, final = wkv_chunked(start, r, log_w, k, v, a, b, chunk_len=chunk_len)
        torch.testing.assert_close(y, torch.stack(ys, 1), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(final, state, atol=2e-5, rtol=1e-5)


def test_long_prefill_equals_token_by_token(tiny_model, monkeypatch):
    backend = TorchBackend(load_checkpoint(tiny_model))
    tokens = np.random.default_rng(1).integers(0, 50, 1500).tolist()
    monkeypatch.setattr(torch_backend, "PREFILL_SEGMENT", 256)  # several segments, state carried across

    logits, parallel = backend.forward([tokens], backend.zero_state(1))
    state = backend.zero_state(1)
    for token in tokens:
        step_logits, state = backend.forward([[token]], state)
    np.testing.assert_allclose(logits, step_logits, atol=1e-4)
    for name in ("att_shift", "wkv", "ffn_shift"):
        torch.testing.assert_close(getattr(parallel, name), getattr(state, name), atol=1e-4, rtol=1e-4)


def test_a_prefill_mixes_with_steps(tiny_model):
    backend = TorchBackend(load_checkpoint(tiny_model))
    tokens = list(range(40)) * 3
    whole, _ = backend.forward([tokens], backend.zero_state(1))
    _, state = backend.forward([tokens[:50]], backend.zero_state(1))
    for token in tokens[50:90]:
        _, state = backend.forward([[token]], state)
    rest, _ = backend.forward([tokens[90:]], state)
    np.testing.assert_allclose(rest, whole, atol=1e-4)


def test_states_are_independent_values(tiny_model):
    backend = TorchBackend(load_checkpoint(tiny_model))
    _, start = backend.forward([[1, 2, 3, 4]], backend.zero_state(1))
    snapshot = start.clone()

    a_logits, a_state = backend.forward([[5]], start)
    b_logits, _ = backend.forward([[6]], start)
    again, _ = backend.forward([[5]], start)  # the start state was not consumed or changed

    assert not np.allclose(a_logits, b_logits)
    np.testing.assert_array_equal(a_logits, again)
    for name in ("att_shift", "wkv", "ffn_shift"):
        assert torch.equal(getattr(start, name), getattr(snapshot, name))
        assert not torch.equal(getattr(a_state, name), getattr(start, name))


def test_batch_rows_evolve_like_single_rows(tiny_model):
    backend = TorchBackend(load_checkpoint(tiny_model))
    _, start = backend.forward([[7, 8, 9]], backend.zero_state(1))
    batch = start.repeat(3)
    logits, batch = backend.forward([[1], [2], [3]], batch)
    for row, token in enumerate((1, 2, 3)):
        single, _ = backend.forward([[token]], start)
        np.testing.assert_allclose(logits[row], single[0], atol=1e-5)
    picked = batch.select([2, 0])
    assert picked.batch_size == 2
    torch.testing.assert_close(picked.wkv[:, 0], batch.wkv[:, 2])


def test_states_of_separate_texts_join_into_one_batch(tiny_model):
    backend = TorchBackend(load_checkpoint(tiny_model))
    _, first = backend.forward([[7, 8, 9]], backend.zero_state(1))
    _, second = backend.forward([[1, 2]], backend.zero_state(1))
    joined = first.concat(second.repeat(2))
    assert joined.batch_size == 3
    logits, _ = backend.forward([[4], [5], [6]], joined)
    for row, (state, token) in enumerate(((first, 4), (second, 5), (second, 6))):
        np.testing.assert_allclose(logits[row], backend.forward([[token]], state)[0][0], atol=1e-5)
