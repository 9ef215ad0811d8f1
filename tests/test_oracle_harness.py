"""Sanity checks of the random RWKV-7 checkpoint factory and the rwkv-package oracle."""

import numpy as np
import pytest
import torch
from rwkv7_factory import default_lora_dims, write_random_rwkv7
from rwkv_oracle import oracle_greedy, oracle_logits

L, C, N, V = 2, 64, 32, 50
PROMPT = [3, 17, 42, 8, 8, 0, 49, 25, 11, 30]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("rwkv7") / "tiny.pth"
    sd = write_random_rwkv7(path, n_layer=L, n_embd=C, head_size=N, vocab_size=V, seed=7)
    return path, sd


@pytest.fixture(scope="module")
def tiny_logits(tiny):
    path, _ = tiny
    return oracle_logits(path, PROMPT, threads=1)


def test_factory_layout(tiny):
    path, sd = tiny
    H = C // N
    Dw, Da, Dv, Dg = default_lora_dims(C)
    assert len(sd) == 33 * L + 6
    assert sd["emb.weight"].shape == (V, C)
    assert sd["head.weight"].shape == (V, C)
    assert sd["blocks.0.ln0.weight"].shape == (C,)
    assert sd["blocks.1.att.r_k"].shape == (H, N)
    assert sd["blocks.1.att.x_r"].shape == (1, 1, C)
    assert sd["blocks.1.att.w1"].shape == (C, Dw)
    assert sd["blocks.1.att.a2"].shape == (Da, C)
    assert sd["blocks.1.att.v1"].shape == (C, Dv)
    assert sd["blocks.1.att.g2"].shape == (Dg, C)
    assert sd["blocks.1.ffn.key.weight"].shape == (4 * C, C)
    assert sd["blocks.1.ffn.value.weight"].shape == (C, 4 * C)
    for i in range(L):
        for n in "rwkvag":
            x = sd[f"blocks.{i}.att.x_{n}"]
            assert 0.0 <= x.min() and x.max() <= 1.0
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in sd.values())
    # the file holds the same tensors
    loaded = torch.load(path, map_location="cpu")
    assert loaded.keys() == sd.keys()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


def test_factory_deterministic_and_options(tmp_path):
    a = write_random_rwkv7(tmp_path / "a.pth", n_layer=1, n_embd=64, head_size=32,
                           vocab_size=20, seed=3)
    b = write_random_rwkv7(tmp_path / "b.pth", n_layer=1, n_embd=64, head_size=32,
                           vocab_size=20, seed=3)
    c = write_random_rwkv7(tmp_path / "c.pth", n_layer=1, n_embd=64, head_size=32,
                           vocab_size=20, seed=4, layer0_value_residual=False,
                           ffn_dim=96, lora_dims=(32, 32, 32, 64), dtype=torch.bfloat16)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["head.weight"], c["head.weight"].float())
    assert "blocks.0.att.v0" not in c and len(c) == 33 + 6 - 3
    assert c["blocks.0.ffn.key.weight"].shape == (96, 64)
    assert c["blocks.0.att.g1"].shape == (64, 64)
    assert c["emb.weight"].dtype == torch.bfloat16


def test_default_lora_dims_table():
    assert default_lora_dims(512) == (32, 32, 32, 96)
    assert default_lora_dims(768) == (64, 64, 32, 128)
    assert default_lora_dims(1024) == (64, 64, 32, 160)
    assert default_lora_dims(2048) == (96, 96, 64, 256)


@pytest.mark.oracle
def test_oracle_logits_shape_finite_spread(tiny_logits):
    pre, steps = tiny_logits["prefill"], tiny_logits["steps"]
    assert pre.shape == (V,) and pre.dtype == np.float32
    assert steps.shape == (len(PROMPT), V) and steps.dtype == np.float32
    assert np.isfinite(pre).all() and np.isfinite(steps).all()
    spread = steps.std(axis=1)
    assert (spread > 0.5).all() and (spread < 5.0).all(), spread
    # the rows differ: the model reacts to its input
    assert np.abs(np.diff(steps, axis=0)).mean() > 0.1


@pytest.mark.oracle
def test_oracle_prefill_matches_steps(tiny_logits):
    np.testing.assert_allclose(tiny_logits["prefill"], tiny_logits["steps"][-1], rtol=0, atol=1e-5)


@pytest.mark.oracle
def test_oracle_without_pth_suffix(tiny, tiny_logits, tmp_path):
    path, _ = tiny
    other = tmp_path / "model.bin"
    other.write_bytes(path.read_bytes())
    res = oracle_logits(other, PROMPT, threads=1)
    np.testing.assert_array_equal(res["steps"], tiny_logits["steps"])


@pytest.mark.oracle
def test_oracle_greedy_deterministic(tiny, tiny_logits):
    path, _ = tiny
    a = oracle_greedy(path, PROMPT, 12, threads=1)
    b = oracle_greedy(path, PROMPT, 12, threads=1)
    assert a == b
    assert len(a) == 12 and all(0 <= t < V for t in a)
    assert a[0] == int(np.argmax(tiny_logits["prefill"]))


@pytest.mark.oracle
def test_oracle_failure_raises_runtime_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="rwkv package oracle failed"):
        oracle_logits(bad, [1, 2], threads=1)
