"""`--precision auto`: the format is chosen from the model's size and the memory available (faked here)."""

from __future__ import annotations

import pytest

from ai_writer.backends import precision
from ai_writer.backends.open import load_model
from ai_writer.backends.precision import check_fits, choose_precision, need, weight_bytes
from ai_writer.errors import BackendError
from ai_writer.models.config import ModelConfig

GB = 10**9
# the rwkv-5-h-world 1.5B layout, and the RWKV-7 1.5B one
H_WORLD_15B = ModelConfig(vocab_size=65536, n_layer=24, n_embd=2048, head_size=64, ffn_dim=7168, dim_w=0, dim_a=0,
                          dim_v=0, dim_g=0, version=5)
V7_15B = ModelConfig(vocab_size=65536, n_layer=24, n_embd=2048, head_size=64, ffn_dim=8192, dim_w=96, dim_a=96,
                     dim_v=64, dim_g=256, version=7)


def memory(gb: float):
    return lambda: int(gb * GB)


@pytest.mark.parametrize("config", [H_WORLD_15B, V7_15B])
def test_weight_sizes_follow_the_formats(config):
    fp32, int8, int4, bf16 = (weight_bytes(config, p) for p in ("fp32", "int8", "int4", "bf16"))
    assert 5.5 * GB < fp32 < 6.6 * GB  # about 1.5 G weights of 4 bytes
    assert bf16 * 2 == pytest.approx(fp32, rel=1e-9)
    assert fp32 / 4 < int8 < fp32 / 2.5 and int4 < int8 * 0.75  # 8.1 and 5.1 bits a matrix weight, fp16 embedding


def test_auto_takes_the_most_precise_format_that_fits_comfortably():
    assert choose_precision("cpu", H_WORLD_15B, available=memory(64)).precision == "fp32"
    assert choose_precision("cpu", H_WORLD_15B, available=memory(7.1)).precision == "int8"
    assert choose_precision("cpu", H_WORLD_15B, available=memory(2.4)).precision == "int4"
    assert choose_precision("torch-cpu", H_WORLD_15B, available=memory(7.1)).precision == "bf16"
    assert choose_precision("cuda", H_WORLD_15B, available=memory(1)).precision == "fp16"  # GPU memory: not RAM


def test_auto_says_why():
    reason = choose_precision("cpu", H_WORLD_15B, available=memory(7.1)).reason
    assert reason.startswith("fp32 would need ") and "int8 needs" in reason and "of 7.1 GB available" in reason


def test_a_tight_fit_is_taken_and_said():
    tight = need(H_WORLD_15B, "int4", "cpu") / 0.9 / GB  # fits, but not comfortably
    choice = choose_precision("cpu", H_WORLD_15B, available=memory(tight))
    assert choice.precision == "int4" and "tight" in choice.reason


def test_nothing_fits_is_one_line_naming_the_need():
    with pytest.raises(BackendError) as error:
        choose_precision("cpu", H_WORLD_15B, available=memory(0.8))
    message = str(error.value)
    assert "\n" not in message and "int4" in message and "needs" in message and "0.8 GB is available" in message


def test_a_precision_asked_for_must_fit():
    check_fits("cpu", "fp32", H_WORLD_15B, available=memory(64))
    with pytest.raises(BackendError, match=r"in fp32: it needs .* GB and 4.0 GB is available; int8 fits"):
        check_fits("cpu", "fp32", H_WORLD_15B, available=memory(4))


def test_small_models_keep_fp32_on_the_cpu(tiny_model, monkeypatch, tmp_path):
    loaded = load_model(tiny_model, onnx_cache=tmp_path)
    assert loaded.choice.backend == "cpu" and loaded.choice.precision == "fp32"
    assert "fp32 needs" in loaded.choice.precision_reason
    monkeypatch.setattr(precision, "available_memory", lambda: int(need(loaded.config, "int8") / 0.8) + 1)  # tiny
    assert load_model(tiny_model, onnx_cache=tmp_path).choice.precision == "int8"
    with pytest.raises(BackendError, match="not enough memory"):
        monkeypatch.setattr(precision, "available_memory", lambda: 1000)
        load_model(tiny_model, onnx_cache=tmp_path)
