"""`ai-writer cache`: listing the kept ONNX exports with their sizes, and removing them."""

from __future__ import annotations

import subprocess
import sys

from helpers import cli_env

from ai_writer.export.cache import fingerprint


def cli(*args, cache, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "ai_writer", *args], input=stdin, capture_output=True,
                          env=cli_env(XDG_CACHE_HOME=str(cache)), timeout=300)


def test_cache_lists_and_clears_exports(tiny_model, tmp_path):
    cache = tmp_path / "cache"
    from rwkv7_factory import write_random_rwkv7

    other = tmp_path / "other.pth"  # another model: another fingerprint
    write_random_rwkv7(other, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=4)
    for model in (tiny_model, other):
        assert cli("continue", "--model", str(model), "--vocab", str(tiny_model.with_suffix(".json")), "--len", "3",
                   "-q", cache=cache, stdin="这是".encode()).returncode == 0
    folder = cache / "ai-writer" / "onnx"
    (folder / "notes.txt").write_text("not an export")
    stale = folder / f"{fingerprint(tiny_model)}-fp32-v1.onnx"  # an older exporter's file of the first model
    stale.write_bytes(b"x" * 1000)

    listing = cli("cache", cache=cache).stdout.decode()
    assert listing.startswith(f"{folder}: 3 exports") and listing.count("fp32") == 3
    assert listing.count("an older exporter's") == 1

    cleared = cli("cache", "clear", str(other), cache=cache)
    assert cleared.returncode == 0 and cleared.stdout.decode().startswith("removed 1 export ")
    assert cli("cache", cache=cache).stdout.decode().startswith(f"{folder}: 2 exports")
    assert cli("cache", "clear", cache=cache).stdout.decode().startswith("removed 2 exports")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # files of other names are not ours


def test_clearing_a_missing_model_is_one_line(tmp_path):
    result = cli("cache", "clear", str(tmp_path / "missing.pth"), cache=tmp_path)
    assert result.returncode == 2 and result.stderr.decode().strip() == f"Error: {tmp_path / 'missing.pth'}: no such model file"
