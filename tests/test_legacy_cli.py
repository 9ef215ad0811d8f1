"""The original AI-Writer files through the command line, `python run.py`, the REPL and the server.

The folder the tests build looks like an AI-Writer `model/` folder: the 2022-02-15 release as a
pickled module with its vocabulary beside it by stem, its `.onnx` form, and `_new_` models with
`word-2022-02-16.json` (all tiny synthetic checkpoints from the conformance data).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pexpect
import pytest
from helpers import DATA, ROOT, cli_env, save_original_module_with_payload
from server_helpers import json_request, running_server

from ai_writer.backends.aiwriter_onnx import WindowOnnxBackend
from ai_writer.text.cleanup import clean_opening
from ai_writer.cli.main import main
from ai_writer.errors import BackendError
from ai_writer.generation.generator import Generator
from ai_writer.backends.aiwriter_open import choose_legacy
from ai_writer.backends.open import load_model
from ai_writer.generation.sampler import SamplerSettings

HERE = DATA / "aiwriter"
OPENING = "这是一颗魔法，林黛玉竟如此精妙。\n\n三体舰队众人惊"
A_NAME = "wangwen-2022-02-15"


@pytest.fixture(scope="module")
def models(tmp_path_factory, one_torch_thread) -> Path:
    folder = tmp_path_factory.mktemp("model")
    shutil.copy(HERE / "a_tiny_pickled_module.pth", folder / f"{A_NAME}.pth")
    shutil.copy(DATA / "tiny_vocab.json", folder / f"{A_NAME}.json")
    main(["export", "onnx", str(folder / f"{A_NAME}.pth")])  # writes wangwen-2022-02-15.onnx beside it
    shutil.copy(HERE / "b_on_tiny.pth", folder / "all-44704.pth")  # finds word-2022-02-16.json beside it
    shutil.copy(DATA / "tiny_vocab.json", folder / "word-2022-02-16.json")
    shutil.copy(HERE / "b_off_tiny.pth", folder / "eng.pth")
    shutil.copy(DATA / "tiny_vocab.json", folder / "eng.json")
    (folder / "opening.txt").write_text(OPENING, encoding="utf-8")
    return folder


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `ai-writer ARGS` in this process: (exit code, stdout, stderr)."""
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def greedy(capsys, model: Path, *extra) -> str:
    code, out, err = cli(capsys, "continue", model.parent / "opening.txt", "--model", model, "--len", 60,
                         "--temperature", 0, "-q", *extra)
    assert code == 0, err
    assert len(out) == 60 and "\ue083" not in out
    return out


def test_greedy_continuations_are_deterministic_and_onnx_writes_what_torch_writes(models, capsys):
    a = greedy(capsys, models / f"{A_NAME}.pth")
    assert a == greedy(capsys, models / f"{A_NAME}.pth")
    assert greedy(capsys, models / f"{A_NAME}.onnx") == a  # 60 characters: the window slides many times
    for name in ("all-44704.pth", "eng.pth"):
        assert greedy(capsys, models / name) == greedy(capsys, models / name)


def test_the_onnx_file_has_the_release_form_and_matches_torch(models):
    onnx_backend = WindowOnnxBackend(models / f"{A_NAME}.onnx", backend="cpu", providers=["CPUExecutionProvider"],
                                     threads=1)
    session_in, session_out = onnx_backend.session.get_inputs()[0], onnx_backend.session.get_outputs()[0]
    assert (session_in.type, session_in.shape, session_out.shape) == ("tensor(int64)", [1, 16], [1, 16, 50])
    torch_backend = load_model(models / f"{A_NAME}.pth", backend="torch-cpu").backend
    ids = [(5 * i + 1) % 50 for i in range(24)]
    states = [torch_backend.zero_state(1), onnx_backend.zero_state(1)]
    for token in ids:  # one character at a time, past ctx_len
        (t_logits, states[0]), (o_logits, states[1]) = (b.forward([[token]], s) for b, s in
                                                        zip((torch_backend, onnx_backend), states))
        assert np.abs(t_logits - o_logits).max() <= 1e-4
    reference = np.load(HERE / "a_reference.npz")
    for case in range(6):
        logits, _ = onnx_backend.forward([reference[f"case{case}_context_ids"].tolist()], onnx_backend.zero_state(1))
        assert np.abs(logits[0] - reference[f"case{case}_logits"][-1]).max() <= 1e-4


def test_the_classic_command_and_run_py(models):
    """`ai-writer continue --model model/wangwen-2022-02-15.pth --len 500 < opening.txt`, and run.py the same."""
    env = cli_env(OMP_NUM_THREADS="1")
    args = ["--model", str(models / f"{A_NAME}.pth"), "--len", "500", "--seed", "4"]
    results = [subprocess.run([sys.executable, *entry, *args], input=OPENING.encode(), capture_output=True,
                              cwd=ROOT, env=env, timeout=120) for entry in (("-m", "ai_writer", "continue"),
                                                                            ("run.py",))]
    for result in results:
        assert result.returncode == 0, result.stderr.decode()
        assert len(result.stdout.decode()) == 500
    assert results[0].stdout == results[1].stdout
    status = results[0].stderr.decode()
    assert "AI-Writer 2022-02-15 window model" in status and "torch-cpu" in status


def test_only_the_window_model_exports_to_onnx(models, capsys):
    code, _, err = cli(capsys, "export", "onnx", models / "all-44704.pth", "--out", models / "rnn.onnx")
    assert code == 2 and err.count("\n") == 1 and "only the 2022-02-15 one has an ONNX form" in err
    code, _, err = cli(capsys, "export", "onnx", models / f"{A_NAME}.pth", "--precision", "int8")
    assert code == 2 and "in fp32" in err
    assert not (models / "rnn.onnx").exists() and not (models / f"{A_NAME}.int8.onnx").exists()


def test_info_names_the_model_the_backend_and_why(models, capsys):
    code, out, _ = cli(capsys, "info", "--model", models / f"{A_NAME}.pth")
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines() if line.startswith(("backend", "architecture")))
    assert rows["architecture"].startswith("AI-Writer 2022-02-15 window model L2-D32")
    assert "an AI-Writer 2022-02-15 .pth runs on torch" in rows["backend"]
    code, out, _ = cli(capsys, "info", "--model", models / f"{A_NAME}.onnx")
    assert code == 0 and "ONNX Runtime" in out and f"{A_NAME}.onnx" in out.split("ONNX file", 1)[1]
    code, out, _ = cli(capsys, "info", "--model", models / "all-44704.pth")
    assert code == 0 and "_new_ RWKV-RNN L6_CHN-like L3-D32, FFN_PRE, HEAD_QK" in out


def test_automatic_choice_of_backend():
    path = Path("m.pth")
    with_gpu = choose_legacy("aiwriter-window", "auto", None, path, cuda_check=lambda: True, providers=lambda: None,
                             has_torch=lambda: True)
    assert (with_gpu.backend, with_gpu.precision) == ("cuda", "fp32")
    no_gpu = choose_legacy("aiwriter-rnn", "auto", None, path, cuda_check=lambda: False,
                           providers=lambda: ["CPUExecutionProvider"], has_torch=lambda: True)
    assert no_gpu.backend == "torch-cpu" and "runs on torch" in no_gpu.reason
    amd = choose_legacy("aiwriter-window-onnx", "auto", None, path, cuda_check=lambda: True,
                        providers=lambda: ["DmlExecutionProvider", "CPUExecutionProvider"], has_torch=lambda: True)
    assert amd.backend == "dml" and amd.providers[0] == "DmlExecutionProvider"
    cpu = choose_legacy("aiwriter-window-onnx", "auto", None, path, cuda_check=lambda: False,
                        providers=lambda: ["CPUExecutionProvider"], has_torch=lambda: False)
    assert cpu.backend == "cpu"
    with pytest.raises(BackendError, match="needs torch"):
        choose_legacy("aiwriter-window", "auto", None, path, cuda_check=lambda: False, providers=lambda: ["CPUExecutionProvider"],
                      has_torch=lambda: False)


@pytest.mark.parametrize("args, expected", [
    ((f"{A_NAME}.pth", "--backend", "cpu"), "runs on torch (--backend torch-cpu, cuda or auto)"),
    ((f"{A_NAME}.pth", "--precision", "fp16"), "run in fp32 only"),
    ((f"{A_NAME}.onnx", "--backend", "torch-cpu"), "an ONNX file runs on the cpu or dml backend"),
    ((f"{A_NAME}.onnx", "--precision", "int8"), "this ONNX file is fp32, not int8"),
    (("all-44704.pth", "--tokenizer", "world"), "reads characters, not world tokens"),
])
def test_wrong_backend_or_precision_is_one_line(models, capsys, args, expected):
    code, out, err = cli(capsys, "continue", models / "opening.txt", "--model", models / args[0], *args[1:])
    assert code == 2 and out == "" and err.count("\n") == 1 and expected in err


def test_missing_or_mismatched_vocabulary_is_one_line(models, tmp_path, capsys):
    lone = tmp_path / "alone.pth"
    shutil.copy(models / f"{A_NAME}.pth", lone)
    code, _, err = cli(capsys, "continue", models / "opening.txt", "--model", lone)
    assert code == 2 and err.count("\n") == 1 and "no vocabulary found" in err and "alone.json" in err
    lone_b = tmp_path / "rnn.pth"
    shutil.copy(models / "eng.pth", lone_b)
    code, _, err = cli(capsys, "continue", models / "opening.txt", "--model", lone_b)
    assert code == 2 and "rnn.json or word-2022-02-16.json" in err
    real_vocab = DATA / "wangwen-2022-02-15.json"  # 8849 characters for a 50-row model
    code, _, err = cli(capsys, "continue", models / "opening.txt", "--model", models / f"{A_NAME}.pth",
                       "--vocab", real_vocab)
    assert code == 2 and err.count("\n") == 1 and "8849 characters" in err and "vocabulary of 50" in err


def test_a_malicious_release_is_refused_through_the_cli(models, tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    path = tmp_path / f"{A_NAME}.pth"
    shutil.copy(DATA / "tiny_vocab.json", tmp_path / f"{A_NAME}.json")
    save_original_module_with_payload(path, marker, monkeypatch)
    code, out, err = cli(capsys, "continue", models / "opening.txt", "--model", path)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "refused to load" in err and "system" in err
    assert not marker.exists()


def test_the_repl_writes_and_rewrites_with_the_window_model(models):
    env = cli_env()
    child = pexpect.spawn(sys.executable, ["-m", "ai_writer", "repl", str(models / "opening.txt"), "--model",
                                           str(models / f"{A_NAME}.pth"), "--threads", "1", "--len", "20",
                                           "--plain", "--seed", "1", "--temperature", "0"],
                          cwd=str(ROOT), env=env, encoding="utf-8", timeout=60, dimensions=(50, 400))
    prompt = r"\[(\d+) chars \|[^\]]*\]\r\n> "
    child.expect(prompt)
    start = int(child.match.group(1))
    assert start == len(clean_opening(OPENING))
    child.sendline("")
    child.expect(prompt)
    written = int(child.match.group(1))
    assert written > start
    child.sendline("/rewrite")
    child.expect(prompt)
    assert int(child.match.group(1)) == written  # greedy: the rewrite is the same length again
    child.sendline("/quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


@pytest.mark.parametrize("name", [f"{A_NAME}.pth", "all-44704.pth"])
def test_the_server_writes_what_the_generator_writes(models, name):
    with running_server(models / name) as server:
        body = {"text": OPENING, "settings": {"length": 25, "seed": 11}, "variants": 2, "stream": False}
        status, _, first = json_request(server, "POST", "/api/continue", body)
        assert status == 200
        again = json_request(server, "POST", "/api/continue", body)[2]  # read from the cached state
    assert again["reused_tokens"] == again["prompt_tokens"]
    loaded = load_model(models / name, backend="torch-cpu")
    generator = Generator(loaded.backend, loaded.tokenizer, SamplerSettings())
    expected = ["", ""]
    for chunk in generator.stream(generator.prefill(clean_opening(OPENING)), max_chars=25, runs=2,
                                  rng=np.random.default_rng(11)):
        expected[chunk.run] += chunk.text
    assert [v["text"] for v in first["variants"]] == expected == [v["text"] for v in again["variants"]]
