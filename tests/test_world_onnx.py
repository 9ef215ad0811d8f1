"""RWKV-5.2 and RWKV-6 through the ONNX export: the graph computes what the torch model computes
(fp32 within 1e-4, logits and every state tensor), and the ONNX Runtime backend runs a `.pth`
world checkpoint as it runs an RWKV-7 one."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import max_diff, run, session  # the same graph I/O as RWKV-7's
from rwkv_world_factory import write_random_rwkv

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ai_writer.export import onnx as onnx_export  # noqa: E402
from ai_writer.backends.rwkv_torch import TorchBackend  # noqa: E402
from ai_writer.models.checkpoint import load_checkpoint  # noqa: E402
from ai_writer.backends.open import load_model  # noqa: E402

TOLERANCE = 1e-4
SHAPES = {
    "v5.2": dict(version=5, n_layer=2, n_embd=64, head_size=32, vocab_size=60),
    "v6": dict(version=6, n_layer=2, n_embd=64, head_size=32, vocab_size=60, dim_mix=8, dim_decay=16),
    "v6-three-heads": dict(version=6, n_layer=1, n_embd=96, head_size=32, vocab_size=30, ffn_dim=200, dim_mix=4,
                           dim_decay=8),
}


@pytest.fixture(scope="module", params=SHAPES, ids=list(SHAPES))
def model(request, tmp_path_factory, one_torch_thread):
    """(path, torch backend, {precision: session})."""
    folder = tmp_path_factory.mktemp("world-onnx")
    path = folder / "m.pth"
    write_random_rwkv(path, seed=21, **SHAPES[request.param])
    checkpoint = load_checkpoint(path)
    sessions = {precision: session(onnx_export.export_checkpoint(checkpoint, folder / f"m.{precision}.onnx",
                                                                 precision=precision))
                for precision in ("fp32", "fp16", "int8", "int4")}
    return path, TorchBackend(checkpoint), sessions


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("length", [1, 2, 15, 16, 17, 45])
def test_prefill_and_steps_from_a_warm_state_match_torch(model, batch, length):
    _, backend, sessions = model
    V = backend.config.vocab_size
    rng = np.random.default_rng(length * 10 + batch)
    state = backend.forward(rng.integers(0, V, (batch, 9)), backend.zero_state(batch))[1]
    tokens = rng.integers(0, V, (batch, length))
    assert max_diff(run(sessions["fp32"], tokens, state), backend.forward(tokens, state)) < TOLERANCE


def test_greedy_continuation_equals_torch(model):
    _, backend, sessions = model
    prompt = np.random.default_rng(4).integers(0, backend.config.vocab_size, (1, 30))
    picks = {}
    for name, forward in (("torch", backend.forward), ("onnx", lambda t, s: run(sessions["fp32"], t, s))):
        logits, state = forward(prompt, backend.zero_state(1))
        chosen = []
        for _ in range(100):
            chosen.append(int(logits[0].argmax()))
            logits, state = forward([[chosen[-1]]], state)
        picks[name] = chosen
    assert picks["onnx"] == picks["torch"]


def exported_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))  # NAME.onnx and NAME.onnx.data


def test_fp16_int8_and_int4_exports_stay_close_to_fp32(model):
    path, backend, sessions = model
    tokens = np.random.default_rng(8).integers(0, backend.config.vocab_size, (2, 40))
    reference, _ = backend.forward(tokens, backend.zero_state(2))
    spread = reference.std()
    for precision, bound in (("fp16", 0.025), ("int8", 0.25), ("int4", 1.0)):  # measured 0.002, 0.04, 0.5 (random)
        logits, _ = run(sessions[precision], tokens, backend.zero_state(2))
        assert np.abs(logits - reference).max() < bound * spread, precision
    fp32, int8, int4 = (exported_bytes(path.parent / f"m.{p}.onnx") for p in ("fp32", "int8", "int4"))
    assert int4 < int8 < 0.6 * fp32  # the projections 8-bit, then 4-bit


def test_the_onnx_backend_runs_a_world_checkpoint(model, tmp_path):
    path, backend, _ = model
    loaded = load_model(path, backend="cpu", precision="fp32", threads=1, need_vocab=False, onnx_cache=tmp_path)
    assert loaded.config == backend.config and loaded.runs.suffix == ".onnx"
    tokens = np.random.default_rng(2).integers(0, backend.config.vocab_size, (2, 20))
    logits, state = loaded.backend.forward(tokens, loaded.backend.zero_state(2))
    ref_logits, ref_state = backend.forward(tokens, backend.zero_state(2))
    np.testing.assert_allclose(logits, ref_logits, atol=TOLERANCE, rtol=0)
    logits, _ = loaded.backend.forward([[1], [2]], state.select([1, 0]))
    ref_logits, _ = backend.forward([[1], [2]], ref_state.select([1, 0]))
    np.testing.assert_allclose(logits, ref_logits, atol=TOLERANCE, rtol=0)
