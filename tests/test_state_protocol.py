"""The one state protocol (backends/base.py State) over the five state classes: select, repeat, concat
and clone give the values they should and share no memory with their input; a joined batch reads like its
rows; RNN states always join, window states only when their windows are as long."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import DATA

from ai_writer.backends.aiwriter_onnx import WindowIds, WindowOnnxBackend
from ai_writer.backends.aiwriter_torch import RnnTorchBackend, WindowState, WindowTorchBackend
from ai_writer.backends.rwkv_onnx import OnnxBackend, OnnxState
from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.export.aiwriter import export_window_onnx
from ai_writer.models.aiwriter.restricted_pickle import read_pth
from ai_writer.models.aiwriter.rnn import BConfig, BState
from ai_writer.models.aiwriter.window import AConfig
from ai_writer.models.checkpoint import load_checkpoint
from ai_writer.models.rwkv.rwkv7 import RWKV7State

AIWRITER = DATA / "aiwriter"
KINDS = ("rwkv-torch", "rwkv-onnx", "window-torch", "window-onnx", "rnn-torch", "rnn-torch-copy")
RNN_KINDS = ("rwkv-torch", "rwkv-onnx", "rnn-torch")  # "rnn-torch-copy" keeps a copy window: see below
WINDOW_KINDS = ("window-torch", "window-onnx", "rnn-torch-copy")


@pytest.fixture(scope="module")
def backends(tiny_model, tiny_onnx, tmp_path_factory, one_torch_thread) -> dict:
    """One backend per state class; "rnn-torch" is a _new_ model without HEAD_QK, "rnn-torch-copy" one with it."""
    a = {key: torch.from_numpy(value) for key, value in read_pth(AIWRITER / "a_tiny_state_dict.pth").items()}
    a_onnx = export_window_onnx(AIWRITER / "a_tiny_state_dict.pth", tmp_path_factory.mktemp("window") / "a.onnx")

    def rnn(variant):
        tensors = {key: torch.from_numpy(value) for key, value in read_pth(AIWRITER / f"{variant}_tiny.pth").items()}
        return RnnTorchBackend(BConfig.from_shapes({k: tuple(t.shape) for k, t in tensors.items()}, variant), tensors)

    cpu = dict(backend="cpu", providers=["CPUExecutionProvider"], threads=1)
    return {"rwkv-torch": TorchBackend(load_checkpoint(tiny_model)), "rwkv-onnx": OnnxBackend(tiny_onnx, **cpu),
            "window-torch": WindowTorchBackend(AConfig.from_shapes({k: tuple(t.shape) for k, t in a.items()}, "a"), a),
            "window-onnx": WindowOnnxBackend(a_onnx, **cpu), "rnn-torch": rnn("b_off"), "rnn-torch-copy": rnn("b_on")}


def read(backend, *texts):
    return backend.forward([list(t) for t in texts], backend.zero_state(len(texts)))[1]


def leaves(state) -> list[tuple]:
    """Every array of a state, with its batch axis (of the window cache, the positions it holds)."""
    if isinstance(state, (RWKV7State, OnnxState)):
        return [(t, 1) for t in (state.att_shift, state.wkv, state.ffn_shift)]
    if isinstance(state, BState):
        return [(t, 1) for t in state.layered()] + [(t, 0) for t in state.windowed()]
    if isinstance(state, WindowIds):
        return [(state.ids, 0)]
    assert isinstance(state, WindowState)
    cache, n = state.cache, state.ids.shape[1]
    if cache is None:
        return [(state.ids, 0)]
    return [(state.ids, 0), (cache.shift1, 1), (cache.shift2, 1), (cache.ksum, 1), (cache.store.kv[:, :, :n], 1),
            (cache.store.kappa[:, :n], 0), (cache.store.ids[:, :n], 0)]


def values(state) -> list[np.ndarray]:
    return [t.cpu().numpy().copy() if isinstance(t, torch.Tensor) else np.array(t) for t, _ in leaves(state)]


def rows(state, picked: list[int]) -> list[np.ndarray]:
    return [np.take(v, picked, axis=axis) for v, (_, axis) in zip(values(state), leaves(state))]


def assert_values(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def assert_independent(result, *inputs) -> None:
    """Overwriting every array of `result` changes none of `inputs`."""
    before = [values(s) for s in inputs]
    with torch.inference_mode():
        for t, _ in leaves(result):
            if isinstance(t, torch.Tensor):
                t.fill_(7)
            else:
                t[...] = 7
    for state, kept in zip(inputs, before):
        assert_values(values(state), kept)


@pytest.mark.parametrize("kind", KINDS)
def test_select_repeat_concat_and_clone_copy_the_rows(backends, kind):
    backend = backends[kind]
    pair, one = read(backend, [1, 2, 3], [4, 5, 6]), read(backend, [7, 8, 9])
    joined = [np.concatenate([a, b], axis=axis) for a, b, (_, axis) in zip(values(pair), values(one), leaves(pair))]
    cases = ((pair.select([1, 0, 1]), 3, rows(pair, [1, 0, 1]), (pair,)), (one.repeat(3), 3, rows(one, [0] * 3), (one,)),
             (pair.concat(one), 3, joined, (pair, one)), (pair.clone(), 2, values(pair), (pair,)))
    for result, batch_size, expected, inputs in cases:
        assert type(result) is type(pair) and result.batch_size == batch_size
        assert_values(values(result), expected)
        assert_independent(result, *inputs)


@pytest.mark.parametrize("kind", KINDS)
def test_a_joined_batch_reads_like_its_rows(backends, kind):
    backend = backends[kind]
    first, second = read(backend, [1, 2, 3]), read(backend, [4, 5, 6])
    joined = first.concat(second.repeat(2))
    assert first.joinable(second) and joined.batch_size == 3
    logits, after = backend.forward([[7], [8], [9]], joined)
    for row, (state, token) in enumerate(((first, 7), (second, 8), (second, 9))):
        np.testing.assert_allclose(logits[row], backend.forward([[token]], state)[0][0], rtol=0, atol=1e-5)
    again, _ = backend.forward([[10], [11]], after.select([2, 0]))  # and goes on reading
    np.testing.assert_allclose(again[0], backend.forward([[4, 5, 6, 9, 10]], backend.zero_state(1))[0][0],
                               rtol=0, atol=1e-5)
    clone_logits, _ = backend.forward([[7]], first.clone())
    np.testing.assert_array_equal(clone_logits, backend.forward([[7]], first)[0])


@pytest.mark.parametrize("kind", RNN_KINDS)
def test_rnn_states_join_whatever_they_read(backends, kind):
    backend = backends[kind]
    short, long = read(backend, [1]), read(backend, [1, 2, 3, 4, 5])
    assert short.joinable(long) and long.joinable(short)
    assert short.concat(long).batch_size == 2


@pytest.mark.parametrize("kind", WINDOW_KINDS)
def test_window_states_join_only_windows_of_one_length(backends, kind):
    """Window models, and the _new_ model's copy window (HEAD_QK), while the texts are shorter than ctx_len."""
    backend = backends[kind]
    three, other_three, five = read(backend, [1, 2, 3]), read(backend, [4, 5, 6]), read(backend, [1, 2, 3, 4, 5])
    assert three.joinable(other_three)
    assert not three.joinable(five) and not five.joinable(three)
    with pytest.raises(ValueError, match="cannot share a batch"):
        three.concat(five)
    ctx_len = backend.config.ctx_len
    full, slid = read(backend, range(ctx_len)), read(backend, range(1, ctx_len + 2))
    assert full.joinable(read(backend, range(2, ctx_len + 2)))  # once the windows are full, they join
    assert slid.joinable(read(backend, range(3, ctx_len + 4)))
    if kind == "window-torch":  # a window read in one piece keeps its cache; a slid one has none
        assert full.cache is not None and slid.cache is None
        assert not full.joinable(slid) and not slid.joinable(full)
        with pytest.raises(ValueError, match="cannot share a batch"):
            full.concat(slid)


def test_states_of_different_classes_never_join(backends):
    states = {kind: backends[kind].zero_state(1) for kind in KINDS if kind != "rnn-torch-copy"}
    for a, state in states.items():
        for b, other in states.items():
            assert state.joinable(other) == (a == b), (a, b)
            if a != b:
                with pytest.raises(ValueError):
                    state.concat(other)
