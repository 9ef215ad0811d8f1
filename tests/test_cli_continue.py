"""`ai-writer continue` and `python run.py` through a real subprocess: stdout is the story, stderr the status."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import DATA, ROOT, RunsAShellCommand, cli_env

OPENING = "  这是一颗魔法  \n\n林黛玉竟如此精妙。\n"


def run(*args, stdin: str | bytes = OPENING, env_model: str | None = None, entry=("-m", "ai_writer")):
    env = cli_env()
    if env_model is not None:
        env["AI_WRITER_MODEL"] = env_model
    data = stdin.encode() if isinstance(stdin, str) else stdin
    return subprocess.run([sys.executable, *entry, *args], input=data, capture_output=True, cwd=ROOT, env=env,
                          timeout=120)


def text(result) -> str:
    return result.stdout.decode("utf-8")


def test_stdin_to_stdout_with_exact_length(tiny_model):
    result = run("continue", "--model", str(tiny_model), "--len", "123", "--seed", "1")
    assert result.returncode == 0, result.stderr.decode()
    assert len(text(result)) == 123
    assert "\ue083" not in text(result)  # the unknown character is never written
    assert "seed 1" in result.stderr.decode()


def test_file_input_and_environment_model(tiny_model, tmp_path):
    opening = tmp_path / "opening.txt"
    opening.write_text(OPENING, encoding="utf-8")
    from_file = run("continue", str(opening), "--len", "40", "--seed", "9", stdin=b"", env_model=str(tiny_model))
    from_stdin = run("continue", "--len", "40", "--seed", "9", env_model=str(tiny_model))
    assert from_file.returncode == 0, from_file.stderr.decode()
    assert text(from_file) == text(from_stdin) and len(text(from_file)) == 40


def test_seed_reproduces_and_differs(tiny_model):
    args = ("continue", "--model", str(tiny_model), "--len", "60", "-q")
    first, second, other = run(*args, "--seed", "5"), run(*args, "--seed", "5"), run(*args, "--seed", "6")
    assert text(first) == text(second)
    assert text(first) != text(other)
    assert first.stderr == b""  # --quiet


def test_runs_as_jsonl(tiny_model):
    result = run("continue", "--model", str(tiny_model), "--len", "30", "--runs", "3", "--seed", "2",
                 "--format", "jsonl")
    assert result.returncode == 0, result.stderr.decode()
    records = [json.loads(line) for line in text(result).splitlines()]
    done = sorted((r for r in records if r.get("done")), key=lambda r: r["run"])
    assert [r["run"] for r in done] == [0, 1, 2]
    assert all(r["chars"] == 30 == len(r["text"]) and r["seed"] == 2 for r in done)
    for r in done:  # the streamed deltas add up to each run's text
        assert "".join(d["delta"] for d in records if d.get("run") == r["run"] and "delta" in d) == r["text"]
    assert len({r["text"] for r in done}) > 1  # independent continuations


def test_runs_as_text_are_separated(tiny_model):
    result = run("continue", "--model", str(tiny_model), "--len", "20", "--runs", "2", "--seed", "2", "--no-stream")
    story = text(result)
    first, second = story.split("\n======== run 2 of 2 ========\n")
    assert len(first) == 20 and len(second) == 20


def test_greedy_is_deterministic_and_stop_strings_cut(tiny_model):
    args = ("continue", "--model", str(tiny_model), "--len", "200", "--temperature", "0", "-q")
    greedy = text(run(*args))
    assert greedy == text(run(*args))
    stop = greedy[50:52]
    cut = text(run(*args, "--stop", stop))
    assert cut == greedy[: greedy.index(stop)]


def test_raw_skips_the_clean_up(tiny_model):
    args = ("continue", "--model", str(tiny_model), "--len", "30", "--temperature", "0", "-q")
    assert text(run(*args)) == text(run(*args, stdin="\n这是一颗魔法\n林黛玉竟如此精妙。"))
    assert text(run(*args, "--raw")) != text(run(*args))


def test_output_streams_while_generating(tiny_model):
    process = subprocess.Popen(
        [sys.executable, "-m", "ai_writer", "continue", "--model", str(tiny_model), "--len", "100000", "-q"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT,
    )
    process.stdin.write(OPENING.encode())
    process.stdin.close()
    try:
        first = process.stdout.read(3)  # one CJK character or a few ASCII ones
        assert first and process.poll() is None  # text arrived while the process was still writing
    finally:
        process.kill()
        process.wait()


def test_run_py_is_the_classic_entry(tiny_model):
    result = run("--model", str(tiny_model), "--len", "25", "--seed", "3", entry=("run.py",))
    assert result.returncode == 0, result.stderr.decode()
    assert text(result) == text(run("continue", "--model", str(tiny_model), "--len", "25", "--seed", "3"))


def test_bench_prints_json_figures(tiny_model):
    result = run("bench", "--model", str(tiny_model), "--threads", "1", "--decode-tokens", "4",
                 "--prefill-tokens", "16", "--repeats", "1")
    assert result.returncode == 0, result.stderr.decode()
    figures = {r["figure"]: r for r in map(json.loads, text(result).splitlines())}
    assert set(figures) == {"decode_tokens_per_s", "prefill_tokens_per_s", "peak_rss_mb"}
    assert all(r["value"] > 0 and r["impl"] == "ai-writer" for r in figures.values())


# --- every error: one line on stderr, exit code 2, nothing on stdout -------------------------------

def fails(result, *fragments):
    error = result.stderr.decode("utf-8").strip()
    assert result.returncode == 2, error
    assert result.stdout == b""
    assert len(error.splitlines()) == 1 and "Traceback" not in error, error
    for fragment in fragments:
        assert fragment in error, error


def test_empty_opening(tiny_model):
    fails(run("continue", "--model", str(tiny_model), stdin=" \n\u3000\n"), "<stdin>", "empty")


def test_missing_opening_file(tiny_model, tmp_path):
    fails(run("continue", str(tmp_path / "none.txt"), "--model", str(tiny_model)), "none.txt", "no such file")


def test_opening_not_utf8(tiny_model, tmp_path):
    opening = tmp_path / "gbk.txt"
    opening.write_bytes("林黛玉".encode("gbk"))
    fails(run("continue", str(opening), "--model", str(tiny_model)), "gbk.txt", "not UTF-8", "offset 0")


def test_missing_model(tmp_path):
    fails(run("continue", "--model", str(tmp_path / "none.pth")), "none.pth", "no such model file")


def test_corrupt_model(tiny_model, tmp_path):
    broken = tmp_path / "tiny.pth"
    broken.write_bytes(tiny_model.read_bytes()[:30_000])
    (tmp_path / "tiny.json").write_bytes((DATA / "tiny_vocab.json").read_bytes())
    fails(run("continue", "--model", str(broken)), "tiny.pth", "truncated or corrupt")


def test_model_that_wants_to_run_code(tmp_path):
    import torch

    evil = tmp_path / "evil.pth"
    torch.save({"emb.weight": torch.zeros(1), "x": RunsAShellCommand(ROOT / "pwned-by-test")}, evil)
    fails(run("continue", "--model", str(evil)), "evil.pth", "refused")
    assert not (ROOT / "pwned-by-test").exists()


def test_vocabulary_size_mismatch(tiny_model):
    fails(run("continue", "--model", str(tiny_model), "--vocab", str(DATA / "word-2022-02-16.json")),
          "8849", "50")


def test_missing_vocabulary(tiny_model, tmp_path):
    alone = tmp_path / "alone.pth"
    alone.write_bytes(tiny_model.read_bytes())
    fails(run("continue", "--model", str(alone)), "alone.pth", "--vocab")


@pytest.mark.parametrize("option, value, named", [
    ("--top-p", "1.5", "top_p"),
    ("--temperature", "-1", "temperature"),
    ("--allow-p", "nan", "allow_p"),
    ("--top-k", "-3", "top_k"),
    ("--penalty-decay", "2", "penalty_decay"),
    ("--len", "0", "--len"),
    ("--len", "many", "--len"),
    ("--runs", "0", "--runs"),
])
def test_invalid_settings_name_the_setting(tiny_model, option, value, named):
    fails(run("continue", "--model", str(tiny_model), option, value), named)


def test_no_model_at_all_says_what_to_do(tmp_path, monkeypatch):
    fails(run("continue", env_model=str(tmp_path / "gone.safetensors")), "gone.safetensors")


def test_unknown_char_option_bans_that_character(tiny_model):
    result = run("continue", "--model", str(tiny_model), "--len", "300", "--seed", "4", "--unknown-char", "，", "-q",
                 "--top-p", "1", "--allow-p", "0")
    assert result.returncode == 0, result.stderr.decode()
    assert "，" not in text(result) and "\ue083" in text(result)  # U+E083 is now an ordinary character
    fails(run("continue", "--model", str(tiny_model), "--unknown-char", "ab"), "--unknown-char", "one character")
