"""`ai-writer bench --compare`: several configurations and the rwkv package side by side in one run."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

from ai_writer.bench.compare import parse_configs, stream_read_gbps, weight_bytes_per_token
from ai_writer.export import forms
from ai_writer.models.config import ModelConfig
from ai_writer.errors import SettingsError


def test_configurations_are_parsed():
    assert parse_configs("cpu:fp32, cpu:int8,torch-cpu") == [("cpu", "fp32"), ("cpu", "int8"), ("torch-cpu", None)]
    with pytest.raises(SettingsError):
        parse_configs(" , ")


def test_weight_bytes_follow_the_precision():
    config = ModelConfig(vocab_size=8849, n_layer=12, n_embd=768, head_size=64, ffn_dim=3072, dim_w=64, dim_a=64,
                         dim_v=32, dim_g=128)
    fp32 = weight_bytes_per_token(config, "fp32")
    # the projections (4 C^2 + 2 C F per layer) and the head dominate; the low-rank matrices add ~6 %
    big = 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 8849 * 768
    assert big * 4 < fp32 < big * 4 * 1.08
    # int8: a byte per matrix weight and a float32 scale per block of them; the low-rank matrices 8-bit too (in
    # smaller blocks), the vectors float32: the rest costs less than half its float32 bytes
    per_weight = 1 + 4 / forms.INT8_BLOCK
    assert big * per_weight < weight_bytes_per_token(config, "int8") < big * per_weight + (fp32 - big * 4) * 0.5
    assert weight_bytes_per_token(config, "int4") < weight_bytes_per_token(config, "int8")


def test_bandwidth_is_measured():
    assert stream_read_gbps(1, megabytes=64, repeats=2) > 0.5


@pytest.mark.slow
@pytest.mark.oracle  # --reference runs the rwkv package
def test_compare_prints_a_table_with_the_reference(tiny_model):
    result = subprocess.run(
        [sys.executable, "-m", "ai_writer", "bench", "--model", str(tiny_model), "--threads", "1",
         "--compare", "cpu:fp32,torch-cpu", "--reference", "--rounds", "1", "--decode-tokens", "4",
         "--prefill-tokens", "8", "--repeats", "1", "--bandwidth"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| ai-writer cpu fp32", "| ai-writer torch-cpu (default)",
                                                        "| rwkv-package fp32"]
    assert rows[-1].split(" | ")[2] == "1.00x"  # the package against itself
    assert "GB/s" in result.stderr
