"""The AI-Writer `_new_` RWKV-RNN against the conformance references (conformance README §5, §6.2):
both variants (FFN_PRE + HEAD_QK on, both off), step mode, parallel mode and prefill-then-step."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import DATA

import ai_writer.models.aiwriter.rnn as aiwriter_b
from ai_writer.models.aiwriter.rnn import PRESETS, AIWriterB, BConfig
from ai_writer.backends.aiwriter_torch import RnnTorchBackend
from ai_writer.errors import ModelFileError
from ai_writer.models.aiwriter.restricted_pickle import read_pth

HERE = DATA / "aiwriter"
MANIFEST = json.loads((HERE / "manifest.json").read_text(encoding="utf-8"))["b"]
VARIANTS = ("b_on", "b_off")
TOL = 1e-4


def tensors_of(variant: str) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(value) for key, value in read_pth(HERE / f"{variant}_tiny.pth").items()}


def config_of(tensors, source="tiny.pth") -> BConfig:
    return BConfig.from_shapes({key: tuple(t.shape) for key, t in tensors.items()}, source)


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request, one_torch_thread):
    tensors = tensors_of(request.param)
    config = config_of(tensors)
    return request.param, RnnTorchBackend(config, tensors), np.load(HERE / f"{request.param}_reference.npz")


def test_variants_and_constants_are_inferred_from_the_keys():
    for name in VARIANTS:
        config, expected = config_of(tensors_of(name)), MANIFEST[name]
        assert (config.ffn_pre, config.head_qk, config.b_eps, config.n_layer, config.n_embd, config.vocab_size) == (
            expected["FFN_PRE"], expected["HEAD_QK"], expected["b_eps"], expected["n_layer"], expected["n_embd"],
            expected["vocab_size"])
        assert config.model_type == expected["cfg_type"] + "-like"  # same variant, not the released size
    assert config_of(tensors_of("b_on")).ctx_len == MANIFEST["b_on"]["ctx_len"]  # from copy_mask


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_the_released_types_are_recognised_exactly(name):
    preset = PRESETS[name]
    template = BConfig(8849, preset.n_layer, preset.n_embd, preset.ctx_len, preset.ffn_pre, preset.head_qk,
                       preset.b_eps, name)
    config = BConfig.from_shapes(template.expected_shapes(), f"{name}.pth")
    assert config == template


def test_load_time_transforms_match_the_original(variant):
    name, backend, ref = variant
    prefixes = {key.split(".att.")[0][len("derived_"):] for key in ref.files if key.startswith("derived_")}
    assert prefixes  # both variants have time-mix layers
    for prefix in prefixes:
        w = backend.model.w
        np.testing.assert_allclose(w[prefix + ".att.time_decay"].numpy(),
                                   ref[f"derived_{prefix}.att.rnn_time_decay"], rtol=1e-6)
        np.testing.assert_allclose(w[prefix + ".att.time_first"].numpy(),
                                   ref[f"derived_{prefix}.att.rnn_time_first"], rtol=1e-6)


@pytest.mark.parametrize("seq", "ABC")
def test_step_mode_matches_the_original(variant, seq):
    _, backend, ref = variant
    state, rows = backend.zero_state(1), []
    for token in ref[f"seq{seq}_ids"].tolist():
        logits, state = backend.forward([[token]], state)
        rows.append(logits[0])
    assert np.abs(np.stack(rows) - ref[f"seq{seq}_step_logits"]).max() <= TOL


@pytest.mark.parametrize("seq", "ABC")
def test_parallel_mode_matches_the_original(variant, seq):
    """A fresh pass over each window ids[:n][-ctx_len:] (seqC: longer than ctx_len)."""
    _, backend, ref = variant
    ids = ref[f"seq{seq}_ids"].tolist()
    ctx_len = MANIFEST[variant[0]]["ctx_len"]
    rows = [backend.forward([ids[:n][-ctx_len:]], backend.zero_state(1))[0][0] for n in range(1, len(ids) + 1)]
    assert np.abs(np.stack(rows) - ref[f"seq{seq}_parallel_logits"]).max() <= TOL


@pytest.mark.parametrize("seq", "AB")
def test_prefill_then_step_matches_the_original_and_its_state(variant, seq):
    name, backend, ref = variant
    ids, k0 = ref[f"seq{seq}_ids"].tolist(), int(ref[f"seq{seq}_mixed_K0"])
    logits, state = backend.forward([ids[:k0]], backend.zero_state(1))
    rows = [logits[0]]
    packed = ref[f"seq{seq}_state_after_prefill"]
    for key, row in MANIFEST[name]["state_index"].items():  # e.g. "att.1aa": the original's packed rows
        kind, layer, slot = key.split(".")[0], int(key.split(".")[1][:-2]), key[-2:]
        ours = {("ffnPre", "xx"): state.first_shift, ("att", "xx"): state.first_shift, ("att", "aa"): state.aa,
                ("att", "bb"): state.bb, ("ffn", "xx"): state.ffn_shift}[kind, slot][layer, 0].numpy()
        np.testing.assert_allclose(ours, packed[row], rtol=1e-5, atol=1e-6, err_msg=key)
    if f"seq{seq}_hk_after_prefill" in ref:
        np.testing.assert_allclose(state.hk[0].numpy(), ref[f"seq{seq}_hk_after_prefill"], rtol=1e-5, atol=1e-5)
    for token in ids[k0:]:
        logits, state = backend.forward([[token]], state)
        rows.append(logits[0])
    assert np.abs(np.stack(rows) - ref[f"seq{seq}_mixed_logits"]).max() <= TOL


@pytest.mark.parametrize("name", VARIANTS)
def test_float64_matches_the_original_run_in_float64(name):
    tensors = tensors_of(name)
    model = AIWriterB(config_of(tensors), tensors, dtype=torch.float64)
    ref = np.load(HERE / f"{name}_reference.npz")
    for seq in "AB":
        ids = torch.as_tensor(ref[f"seq{seq}_ids"])[None]
        state, rows = model.zero_state(1), []
        for t in range(ids.shape[1]):
            logits, state = model.forward(ids[:, t:t + 1], state)
            rows.append(logits[0].numpy())
        assert np.abs(np.stack(rows) - ref[f"seq{seq}_step_logits_f64"]).max() <= 1e-9
        parallel = model.forward(ids, model.zero_state(1))[0][0].numpy()
        assert np.abs(parallel - ref[f"seq{seq}_parallel_logits_f64"][-1]).max() <= 1e-9


def test_chunked_reading_equals_stepping_past_ctx_len(variant, monkeypatch):
    """Reading in chunks (here of 5) from any state equals the recurrence, beyond ctx_len too."""
    _, backend, _ = variant
    monkeypatch.setattr(aiwriter_b, "CHUNK", 5)
    ids = [(7 * i + 3) % 50 for i in range(37)]
    stepped = backend.zero_state(1)
    for token in ids:
        step_logits, stepped = backend.forward([[token]], stepped)
    _, half = backend.forward([ids[:11]], backend.zero_state(1))
    read_logits, read = backend.forward([ids[11:]], half)
    assert np.abs(read_logits - step_logits).max() <= TOL
    for field in ("aa", "bb", "first_shift", "ffn_shift", "hk"):
        np.testing.assert_allclose(getattr(read, field).numpy(), getattr(stepped, field).numpy(), rtol=1e-4,
                                   atol=1e-5)
    assert read.window.tolist() == stepped.window.tolist()


def test_batches_select_and_repeat(variant):
    _, backend, _ = variant
    _, one = backend.forward([[1, 12, 13]], backend.zero_state(1))
    logits, after = backend.forward([[20], [21]], one.repeat(2))
    np.testing.assert_allclose(logits[1], backend.forward([[21]], one)[0][0], rtol=0, atol=1e-5)
    again, _ = backend.forward([[5]], after.select([1]))
    np.testing.assert_allclose(again[0], backend.forward([[1, 12, 13, 21, 5]], backend.zero_state(1))[0][0],
                               rtol=0, atol=1e-5)
    assert one.batch_size == 1 and after.batch_size == 2


def test_a_missing_or_extra_tensor_is_named():
    shapes = {key: tuple(t.shape) for key, t in tensors_of("b_on").items()}
    with pytest.raises(ModelFileError, match="'blocks.2.att.output.weight' is missing"):
        BConfig.from_shapes({k: v for k, v in shapes.items() if k != "blocks.2.att.output.weight"}, "cut.pth")
    with pytest.raises(ModelFileError, match="unexpected tensor 'blocks.0.ln0.weight'"):
        BConfig.from_shapes(dict(shapes, **{"blocks.0.ln0.weight": (32,)}), "rwkv4.pth")
