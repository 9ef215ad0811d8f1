"""bf16 on torch-cpu: told apart by the CPU's bf16 matrix instructions (faked here), and said to the writer."""

from __future__ import annotations

import pytest

from ai_writer.backends import cpu_features
from ai_writer.backends.cpu_features import NONE, bf16_matrix_instructions, slow_bf16_notice
from ai_writer.backends.open import load_model
from ai_writer.cli.main import main

XEON_AMX = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": True}
ZEN4 = {"architecture": "x86_64", "avx2": True, "avx512_f": True, "avx512_bf16": True, "amx_bf16": False}
LAPTOP_AVX2 = {"architecture": "x86_64", "avx2": True, "avx_vnni": True, "avx512_bf16": False, "amx_bf16": False}
GRAVITON3 = {"architecture": "arm64", "neon": True, "bf16": True, "sve": True, "sve_bf16": True}


@pytest.mark.parametrize("features, expected", [(XEON_AMX, "AMX"), (ZEN4, "AVX-512 BF16"), (LAPTOP_AVX2, NONE),
                                                (GRAVITON3, "SVE BF16"), ({"architecture": "x86_64"}, NONE)])
def test_the_best_bf16_instructions_are_named(features, expected):
    assert bf16_matrix_instructions(lambda: features) == expected


def test_an_unknown_cpu_is_not_guessed():
    assert bf16_matrix_instructions(lambda: None) is None
    assert slow_bf16_notice(None) is None


def test_only_a_cpu_without_bf16_instructions_gets_the_notice():
    assert slow_bf16_notice("AMX") is None and slow_bf16_notice("AVX-512 BF16") is None
    notice = slow_bf16_notice(NONE)
    assert "no bf16 matrix instructions" in notice and "--backend cpu" in notice and "\n" not in notice


def test_this_machines_features_come_from_torch():
    found = bf16_matrix_instructions()
    assert found is None or found == NONE or found in {name for _, name in cpu_features.BF16_MATRIX_FEATURES}


@pytest.mark.parametrize("features, precision, told", [(LAPTOP_AVX2, "bf16", True), (XEON_AMX, "bf16", False),
                                                       (ZEN4, "bf16", False), (LAPTOP_AVX2, "fp32", False)])
def test_loading_bf16_on_torch_cpu_tells_a_slow_cpu(tiny_model, monkeypatch, features, precision, told):
    monkeypatch.setattr(cpu_features, "_torch_capabilities", lambda: features)
    said = []
    loaded = load_model(tiny_model, backend="torch-cpu", precision=precision, notify=said.append)
    assert loaded.choice.precision == precision
    assert [m for m in said if "bf16 matrix instructions" in m] == ([slow_bf16_notice(NONE)] if told else [])


def info(capsys, model) -> tuple[int, str, str]:
    """`ai-writer info --backend torch-cpu --precision bf16` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main(["info", "--model", str(model), "--backend", "torch-cpu", "--precision", "bf16"])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def test_info_names_the_instructions_on_torch_cpu(tiny_model, monkeypatch, capsys):
    monkeypatch.setattr(cpu_features, "_torch_capabilities", lambda: LAPTOP_AVX2)
    code, out, err = info(capsys, tiny_model)
    assert code == 0
    assert any(line.split() == ["bf16", "matrix", "instructions", "none"] for line in out.splitlines())
    assert err.strip() == f"ai-writer: {slow_bf16_notice(NONE)}"
    monkeypatch.setattr(cpu_features, "_torch_capabilities", lambda: XEON_AMX)
    code, out, err = info(capsys, tiny_model)
    assert code == 0 and err == ""
    assert any(line.split() == ["bf16", "matrix", "instructions", "AMX"] for line in out.splitlines())
