"""The AI-Writer 2022-02-15 window model against the conformance references (conformance README §4, §6.1).

The references are the original code's logits on a tiny synthetic checkpoint (tests/data/aiwriter,
copied from shared/conformance). The engine reads only the new positions until the window slides.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import DATA

from ai_writer.models.aiwriter.window import AConfig, AIWriterA, time_ww
from ai_writer.backends.aiwriter_torch import WindowTorchBackend
from ai_writer.errors import ModelFileError
from ai_writer.models.aiwriter.restricted_pickle import read_pth

HERE = DATA / "aiwriter"
REF = np.load(HERE / "a_reference.npz")
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))
CASES = range(len(MANIFEST["a"]["cases"]))
TOL = 1e-4


@pytest.fixture(scope="module")
def tensors(one_torch_thread):
    return {key: torch.from_numpy(value) for key, value in read_pth(HERE / "a_tiny_state_dict.pth").items()}


@pytest.fixture(scope="module")
def config(tensors) -> AConfig:
    return AConfig.from_shapes({key: tuple(t.shape) for key, t in tensors.items()}, "a_tiny_state_dict.pth")


@pytest.fixture(scope="module")
def model(config, tensors) -> AIWriterA:
    return AIWriterA(config, tensors)


@pytest.fixture(scope="module")
def backend(config, tensors) -> WindowTorchBackend:
    return WindowTorchBackend(config, tensors)


def test_config_is_inferred_from_the_shapes(config):
    expected = MANIFEST["a"]["config"]
    assert (config.vocab_size, config.ctx_len, config.n_layer, config.n_head, config.n_embd, config.n_attn,
            config.ffn_dim, config.head_qk_dim) == (expected["vocab_size"], expected["ctx_len"], expected["n_layer"],
                                                    expected["n_head"], expected["n_embd"], expected["n_attn"],
                                                    expected["ffn_hidden"], expected["head_qk_dim"])


def test_load_time_transform_matches_time_ww(model, config):
    L = config.ctx_len
    derived = torch.stack([time_ww(model.w[f"blocks.{i}.attn.time_w"], model.w[f"blocks.{i}.attn.time_alpha"],
                                   model.w[f"blocks.{i}.attn.time_beta"], 0, L, L) for i in range(config.n_layer)])
    np.testing.assert_allclose(derived.numpy(), REF["time_ww"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_every_position_matches_the_original(model, case):
    ids = torch.as_tensor(REF[f"case{case}_model_input"])[None]
    with torch.inference_mode():
        logits, _ = model.forward(ids, None, all_positions=True)
    assert np.abs(logits[0].numpy() - REF[f"case{case}_logits"]).max() <= TOL


@pytest.mark.parametrize("case", CASES)
def test_float64_matches_the_original_run_in_float64(tensors, config, case):
    model64 = AIWriterA(config, tensors, dtype=torch.float64)
    ids = torch.as_tensor(REF[f"case{case}_model_input"])[None]
    logits, _ = model64.forward(ids, None, all_positions=True)
    assert np.abs(logits[0].numpy() - REF[f"case{case}_logits_f64"]).max() <= 1e-6


@pytest.mark.parametrize("case", [c for c in CASES if f"case{c}_padded_logits" in REF])
def test_right_padded_windows_as_the_directml_mode_feeds_them(model, config, case):
    ids = np.zeros((1, config.ctx_len), dtype=np.int64)
    given = REF[f"case{case}_model_input"]
    ids[0, : len(given)] = given
    logits, _ = model.forward(torch.as_tensor(ids), None, all_positions=True)
    assert np.abs(logits[0].numpy() - REF[f"case{case}_padded_logits"]).max() <= TOL


@pytest.mark.parametrize("case", CASES)
def test_backend_one_character_at_a_time_and_all_at_once(backend, case):
    """Decoding reads one new position per character (the cache), prefill the whole context; the last
    position's logits are the original's either way, the window sliding included (case 3: 25 ids)."""
    context = REF[f"case{case}_context_ids"].tolist()
    expected = REF[f"case{case}_logits"]
    state, rows = backend.zero_state(1), []
    for token in context:
        logits, state = backend.forward([[token]], state)
        rows.append(logits[0])
    fits = len(context) <= backend.config.ctx_len
    if fits:  # every prefix is a reference row
        assert np.abs(np.stack(rows) - expected).max() <= TOL
    assert np.abs(rows[-1] - expected[-1]).max() <= TOL
    at_once, at_once_state = backend.forward([context], backend.zero_state(1))
    assert at_once.dtype == np.float32 and at_once.shape == (1, backend.config.vocab_size)
    assert np.abs(at_once[0] - expected[-1]).max() <= TOL
    assert at_once_state.ids.tolist() == [context[-backend.config.ctx_len:]]
    assert (at_once_state.cache is not None) == fits


def test_a_step_reads_one_position_until_the_window_slides(backend, monkeypatch):
    """The honest cost: one position per character while the text fits, the whole window after."""
    widths = []
    original = backend.model.forward

    def counting(ids, cache, **options):
        widths.append(ids.shape[1])
        return original(ids, cache, **options)

    monkeypatch.setattr(backend.model, "forward", counting)
    L = backend.config.ctx_len
    _, state = backend.forward([[1, 12, 13]], backend.zero_state(1))
    for token in range(L + 2):
        _, state = backend.forward([[token % 30]], state)
    assert widths == [3] + [1] * (L - 3) + [L] * 5


def test_states_are_values_when_branches_continue_from_one_state(backend):
    """Two continuations from one state, and going back to it, each give what a fresh read gives."""
    prefix = [1, 12, 13, 14, 15, 16]

    def fresh(ids):
        return backend.forward([ids], backend.zero_state(1))[0][0]

    _, start = backend.forward([prefix], backend.zero_state(1))
    a1, after_a = backend.forward([[20]], start)
    b1, after_b = backend.forward([[21]], start)  # the other branch writes the same position
    a2, _ = backend.forward([[22]], after_a)  # the first branch goes on
    b2, _ = backend.forward([[23, 24]], after_b)
    again, _ = backend.forward([[20]], start)  # back to the start once more
    for got, ids in ((a1, prefix + [20]), (b1, prefix + [21]), (a2, prefix + [20, 22]),
                     (b2, prefix + [21, 23, 24]), (again, prefix + [20])):
        np.testing.assert_allclose(got[0], fresh(ids), rtol=0, atol=1e-5)
    assert start.ids.tolist() == [prefix] and after_a.ids.tolist() == [prefix + [20]]


def test_batches_select_and_repeat(backend):
    _, one = backend.forward([[1, 12, 13]], backend.zero_state(1))
    three = one.repeat(3)
    assert three.batch_size == 3
    logits, after = backend.forward([[20], [21], [22]], three)
    for row, token in enumerate((20, 21, 22)):
        expected, _ = backend.forward([[token]], one)
        np.testing.assert_allclose(logits[row], expected[0], rtol=0, atol=1e-5)
    picked = after.select([2, 0])
    logits2, _ = backend.forward([[5], [5]], picked)
    np.testing.assert_allclose(logits2[0], backend.forward([[1, 12, 13, 22, 5]], backend.zero_state(1))[0][0],
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(logits2[1], backend.forward([[1, 12, 13, 20, 5]], backend.zero_state(1))[0][0],
                               rtol=0, atol=1e-5)


def test_bad_ids_and_shapes_are_refused(backend):
    with pytest.raises(ValueError, match="0..49"):
        backend.forward([[50]], backend.zero_state(1))
    with pytest.raises(ValueError, match="batch=1"):
        backend.forward([[1], [2]], backend.zero_state(1))


def test_a_wrong_or_missing_tensor_is_named(tensors):
    shapes = {key: tuple(t.shape) for key, t in tensors.items()}
    wrong = dict(shapes, **{"blocks.1.attn.time_beta": (2, 15, 1)})
    with pytest.raises(ModelFileError, match=r"blocks\.1\.attn\.time_beta.*\[2, 15, 1\]"):
        AConfig.from_shapes(wrong, "bad.pth")
    missing = {k: v for k, v in shapes.items() if k != "head_k.bias"}
    with pytest.raises(ModelFileError, match="'head_k.bias' is missing"):
        AConfig.from_shapes(missing, "old.pth")
    older = dict(shapes, **{"blocks.0.attn.mask": (16, 16)})  # pre-2022-02-15 layout
    with pytest.raises(ModelFileError, match="unexpected tensor 'blocks.0.attn.mask'"):
        AConfig.from_shapes(older, "older.pth")
