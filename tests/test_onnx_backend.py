"""The ONNX Runtime backend as users meet it: chosen by auto, exported once into the cache, never
importing torch, agreeing with torch, and one-line errors for a bad or mismatched .onnx."""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, cli_env

from ai_writer.backends.open import load_model
from ai_writer.errors import ModelFileError
from ai_writer.export.cache import export_model, export_name, fingerprint

OPENING = "林黛玉笑道：“你们在说什么？”\n"


def cli(*args, stdin: str = OPENING, env_extra: dict | None = None, code: str | None = None):
    env = cli_env(**(env_extra or {}))
    command = [sys.executable, "-c", code, *args] if code else [sys.executable, "-m", "ai_writer", *args]
    return subprocess.run(command, input=stdin.encode(), capture_output=True, cwd=ROOT, env=env, timeout=240)


def test_cpu_path_never_imports_torch(tmp_path):
    """The default model from a fresh user folder: exported on first use, then run, all without torch."""
    watcher = (
        "import sys\n"
        "from ai_writer.cli.main import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "finally:\n"
        "    sys.stderr.write('\\nTORCH_IMPORTED=%s\\n' % ('torch' in sys.modules))\n"
    )
    for attempt in ("first use", "cached"):
        result = cli("continue", "--len", "20", "--seed", "1", code=watcher,
                     env_extra={"XDG_CACHE_HOME": str(tmp_path)})
        stderr = result.stderr.decode()
        assert result.returncode == 0, stderr
        assert "TORCH_IMPORTED=False" in stderr, attempt
        assert "backend cpu fp32" in stderr
        assert ("exporting default.safetensors to ONNX" in stderr) == (attempt == "first use")
        assert len(result.stdout.decode()) == 20
    assert list((tmp_path / "ai-writer" / "onnx").glob("*-fp32-v*.onnx"))


def run_both_ways(backend, prompt):
    """Logits after a prefill of `prompt`, then after each of three single steps."""
    logits, state = backend.forward(prompt, backend.zero_state(1))
    results = [logits]
    for token in (3, 7, 11):
        logits, state = backend.forward([[token]], state)
        results.append(logits)
    return results


def test_onnx_and_torch_backends_agree(tiny_model, tmp_path):
    onnx = load_model(tiny_model, backend="cpu", onnx_cache=tmp_path, threads=1)
    torch_ = load_model(tiny_model, backend="torch-cpu")
    assert onnx.runs is not None and onnx.runs.parent == tmp_path
    prompt = [[int(t) for t in np.random.default_rng(0).integers(0, 50, 45)]]
    for a, b in zip(run_both_ways(onnx.backend, prompt), run_both_ways(torch_.backend, prompt)):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)


def test_onnx_state_rows_are_independent_copies(tiny_model, tiny_onnx_cache):
    backend = load_model(tiny_model, backend="cpu", onnx_cache=tiny_onnx_cache, threads=1).backend
    _, state = backend.forward([[1, 2, 3], [4, 5, 6]], backend.zero_state(2))
    kept = [t.copy() for t in (state.att_shift, state.wkv, state.ffn_shift)]
    picked = state.select([1, 1, 0])
    assert picked.batch_size == 3
    np.testing.assert_array_equal(picked.wkv[:, 0], state.wkv[:, 1])
    single, _ = backend.forward([[9]], state.select([1]))
    batch, _ = backend.forward([[9], [9], [9]], picked)
    np.testing.assert_allclose(batch[0], single[0], atol=1e-5)
    for before, after in zip(kept, (state.att_shift, state.wkv, state.ffn_shift)):
        np.testing.assert_array_equal(before, after)  # running never changed the given state


def test_an_export_beside_the_model_is_used(tiny_model, tmp_path):
    model = tmp_path / "m.pth"
    shutil.copy(tiny_model, model)
    shutil.copy(tiny_model.with_suffix(".json"), tmp_path / "m.json")
    result = cli("export", "onnx", str(model), "--precision", "fp32")
    assert result.returncode == 0, result.stderr.decode()
    assert export_name(model, "fp32").is_file()
    loaded = load_model(model, backend="cpu", onnx_cache=tmp_path / "cache")
    assert loaded.runs == tmp_path / "m.onnx"
    assert not (tmp_path / "cache").exists()


def test_a_mismatched_export_is_refused(tiny_model, tmp_path):
    other = tmp_path / "other.pth"
    from rwkv7_factory import write_random_rwkv7

    write_random_rwkv7(other, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=99)
    shutil.copy(tiny_model.with_suffix(".json"), tmp_path / "other.json")
    export_model(tiny_model, tmp_path / "other.onnx", "fp32")  # the wrong model's export, beside it
    result = cli("continue", "--model", str(other), "--backend", "cpu", "--len", "5")
    assert result.returncode == 2
    assert result.stderr.decode().strip().splitlines() == [
        f"Error: {tmp_path / 'other.onnx'}: this ONNX file was not exported from {other}; re-export it with "
        f"`ai-writer export onnx {other}` or remove it"
    ]
    assert result.stdout == b""


@pytest.mark.parametrize("content", [b"", b"not an onnx file at all", b"\x08\x07" * 100])
def test_a_corrupt_onnx_file_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    result = cli("continue", "--model", str(bad), "--len", "5")
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 2
    assert len(lines) == 1 and lines[0].startswith(f"Error: {bad}: not an ONNX model file (truncated or corrupt?)")


def test_an_onnx_file_runs_directly_and_carries_its_vocabulary(default_onnx):
    out = default_onnx["fp32"]
    loaded = load_model(out, threads=1)
    assert loaded.choice.backend == "cpu"
    assert loaded.tokenizer is not None and loaded.tokenizer.vocab_size == loaded.config.vocab_size
    with pytest.raises(ModelFileError, match="runs on the cpu or dml backend"):
        load_model(out, backend="torch-cpu")


def test_fingerprint_follows_the_content_not_the_name(tiny_model, tmp_path):
    copy = tmp_path / "copy.pth"
    shutil.copy(tiny_model, copy)
    assert fingerprint(copy) == fingerprint(tiny_model)
    data = bytearray(copy.read_bytes())
    data[-200] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert fingerprint(copy) != fingerprint(tiny_model)


def test_info_reports_the_choice(tiny_model):
    result = cli("info", "--model", str(tiny_model), "--backend", "cpu", "--threads", "1")
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "backend" in out and "cpu (asked for with --backend)" in out
    assert "CPUExecutionProvider" in out
    assert "L2-D64" in out


def test_quiet_continue_prints_no_export_notice(tiny_model, tmp_path):
    result = cli("continue", "--model", str(tiny_model), "--len", "5", "-q",
                 env_extra={"XDG_CACHE_HOME": str(tmp_path)})  # a fresh user folder: the export happens here
    assert result.returncode == 0, result.stderr.decode()
    assert result.stderr == b""
    assert list((tmp_path / "ai-writer" / "onnx").glob("*.onnx"))


def test_onnx_states_of_separate_texts_join_into_one_batch(tiny_model, tiny_onnx_cache):
    backend = load_model(tiny_model, backend="cpu", onnx_cache=tiny_onnx_cache, threads=1).backend
    _, first = backend.forward([[7, 8, 9]], backend.zero_state(1))
    _, second = backend.forward([[1, 2]], backend.zero_state(1))
    joined = first.concat(second)
    logits, _ = backend.forward([[4], [5]], joined)
    for row, (state, token) in enumerate(((first, 4), (second, 5))):
        np.testing.assert_allclose(logits[row], backend.forward([[token]], state)[0][0], atol=1e-5)


def test_matrices_are_packed_one_after_another(default_onnx):
    """On all threads at once ONNX Runtime would hold the whole mapped export beside its packed copy
    (open_session): the option stays unset, ONNX Runtime's default, one matrix after another."""
    from ai_writer.backends.rwkv_onnx import OnnxBackend

    backend = OnnxBackend(default_onnx["int8"], backend="cpu", providers=["CPUExecutionProvider"], threads=1)
    with pytest.raises(Exception, match="does not have configuration"):
        backend.session.get_session_options().get_session_config_entry("session.prepack.enable_parallel")


def test_a_big_float_export_reads_a_few_rows_one_at_a_time_with_the_same_results(default_onnx):
    """Unpacked float matrices would be packed again at every call of several rows (rows_at_a_time): a few
    rows of one token are read one row a call, into the same state arrays and logits as one call makes."""
    from ai_writer.backends.rwkv_onnx import BATCH_AT_ONCE, OnnxBackend

    def backend(repacks):
        made = OnnxBackend(default_onnx["fp32"], backend="cpu", providers=["CPUExecutionProvider"], threads=1)
        made.repacks_batches = repacks  # as a float export over PACKED_FLOAT_LIMIT opens; this one is small
        return made

    whole, by_row = backend(False), backend(True)
    assert not whole.repacks_batches  # the shipped model's export is small: packed, whole batches
    rng = np.random.default_rng(2)
    for rows in (2, 3, BATCH_AT_ONCE):
        tokens = rng.integers(0, 500, (rows, 1))
        assert len(by_row.rows_at_a_time(tokens)) == (rows if rows < BATCH_AT_ONCE else 1)
        assert len(whole.rows_at_a_time(tokens)) == 1
        assert len(by_row.rows_at_a_time(rng.integers(0, 500, (rows, 5)))) == 1  # reading: one call
        _, start = whole.forward(rng.integers(0, 500, (rows, 6)), whole.zero_state(rows))  # rows differ
        results = [b.forward(tokens, start) for b in (whole, by_row)]
        np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
        for a, b in zip(results[0][1].arrays(), results[1][1].arrays()):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        for row in range(rows):  # each row as if it were alone
            alone, _ = whole.forward(tokens[row : row + 1], start.select([row]))
            np.testing.assert_allclose(results[1][0][row], alone[0], rtol=1e-5, atol=1e-5)
