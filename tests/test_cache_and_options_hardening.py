"""The ONNX cache trusts only the user's own files (issue 15, item 9); --threads is bounded (item 10); a long
opening shows its progress on a terminal and is read to the same state (item 11)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect
import pytest
from helpers import ROOT, cli_env

from ai_writer.errors import ModelFileError
from ai_writer.export.cache import EXPORT_VERSION, default_cache_dir, fingerprint, onnx_for


@pytest.fixture(scope="module")
def exported_cache(tmp_path_factory, tiny_model) -> Path:
    """A cache folder holding the tiny model's fp32 export and its digest, made once."""
    folder = tmp_path_factory.mktemp("cache") / "onnx"
    onnx_for(tiny_model, "pth", "fp32", folder)
    return folder


@pytest.fixture
def cache(exported_cache, tmp_path) -> Path:
    folder = tmp_path / "onnx"
    shutil.copytree(exported_cache, folder)  # modes are copied too
    return folder


def cached_file(folder: Path, model: Path) -> Path:
    return folder / f"{fingerprint(model)}-fp32-v{EXPORT_VERSION}.onnx"


def test_the_default_cache_is_the_users_own_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    folder = default_cache_dir()
    assert not folder.is_relative_to(tempfile.gettempdir()) or folder.is_relative_to(tmp_path)
    if sys.platform.startswith("linux"):
        assert folder == tmp_path / "xdg" / "ai-writer" / "onnx"


def test_an_export_records_its_digest_and_is_reused(cache, tiny_model):
    onnx = cached_file(cache, tiny_model)
    assert (cache / (onnx.name + ".digest")).read_text().strip()
    notices = []
    assert onnx_for(tiny_model, "pth", "fp32", cache, notify=notices.append)[0] == onnx
    assert notices == []  # reused: nothing exported


def test_a_tampered_export_is_made_again(cache, tiny_model):
    onnx = cached_file(cache, tiny_model)
    original = onnx.read_bytes()
    onnx.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # a planted graph with the same metadata
    notices = []
    onnx_for(tiny_model, "pth", "fp32", cache, notify=notices.append)
    assert any("does not match the digest" in n for n in notices) and any("exporting" in n for n in notices)
    assert onnx.read_bytes() == original


def test_an_export_without_a_recorded_digest_is_made_again(cache, tiny_model):
    onnx = cached_file(cache, tiny_model)
    (cache / (onnx.name + ".digest")).unlink()
    notices = []
    onnx_for(tiny_model, "pth", "fp32", cache, notify=notices.append)
    assert any("exporting" in n for n in notices)


@pytest.mark.parametrize("target", ["folder", "file", "data"])
def test_a_cache_writable_by_others_is_refused(cache, tiny_model, target):
    onnx = cached_file(cache, tiny_model)
    path = {"folder": cache, "file": onnx, "data": onnx.with_name(onnx.name + ".data")}[target]
    if not path.exists():
        pytest.skip("the tiny export keeps its weights inside the .onnx")
    path.chmod(path.stat().st_mode | 0o002)
    with pytest.raises(ModelFileError, match=r"can be written by other users \(mode \d+\); run chmod go-w") as caught:
        onnx_for(tiny_model, "pth", "fp32", cache)
    assert "\n" not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="chown to another user needs root")
def test_a_file_planted_by_another_user_is_refused(cache, tiny_model):
    onnx = cached_file(cache, tiny_model)
    os.chown(onnx, 4242, -1)
    with pytest.raises(ModelFileError, match="belongs to another user"):
        onnx_for(tiny_model, "pth", "fp32", cache)
    os.chown(cache, 4242, -1)
    with pytest.raises(ModelFileError, match="the ONNX cache folder belongs to another user"):
        onnx_for(tiny_model, "pth", "fp32", cache)


def test_a_symbolic_link_in_the_cache_is_refused(cache, tiny_model, tmp_path):
    onnx = cached_file(cache, tiny_model)
    elsewhere = tmp_path / "elsewhere.onnx"
    onnx.rename(elsewhere)
    onnx.symlink_to(elsewhere)
    with pytest.raises(ModelFileError, match="is a symbolic link"):
        onnx_for(tiny_model, "pth", "fp32", cache)


def test_a_new_cache_folder_is_private(tmp_path, tiny_model, exported_cache):
    folder = tmp_path / "new" / "onnx"
    old = os.umask(0o002)  # a umask that would leave files group-writable
    try:
        onnx_for(tiny_model, "pth", "fp32", folder)
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o077 == 0
    assert all(path.stat().st_mode & 0o022 == 0 for path in folder.iterdir())
    onnx_for(tiny_model, "pth", "fp32", folder)  # and it is accepted afterwards


# ---- item 10: --threads ---------------------------------------------------------------------------------------


def test_threads_beyond_four_per_core_is_one_line(tiny_model):
    result = subprocess.run([sys.executable, "-m", "ai_writer", "continue", "--model", str(tiny_model), "--threads",
                             "100000", "--len", "1"], input=b"x", capture_output=True, cwd=ROOT, env=cli_env(),
                            timeout=60)
    err = result.stderr.decode()
    assert result.returncode == 2 and err.count("\n") == 1, err
    assert f"100000 is more than {4 * os.cpu_count()} (4 per core" in err


# ---- item 11: a long opening --------------------------------------------------------------------------------


def test_a_long_opening_shows_progress_on_a_terminal_and_reads_the_same(tiny_model, tmp_path):
    opening = tmp_path / "long.txt"
    opening.write_text(("林黛玉竟如此精妙。这是一颗魔法，三体舰队众人惊。\n" * 1400), encoding="utf-8")  # 35,000
    args = ["-m", "ai_writer", "continue", str(opening), "--model", str(tiny_model), "--len", "30", "--seed", "3",
            "--threads", "1"]
    piped = subprocess.run([sys.executable, *args], capture_output=True, cwd=ROOT, env=cli_env(), timeout=120)
    assert piped.returncode == 0, piped.stderr.decode()
    assert "reading the opening" not in piped.stderr.decode()  # not a terminal: no bar
    out = tmp_path / "out.txt"
    command = " ".join(f"'{a}'" for a in [sys.executable, *args]) + f" > '{out}'"
    child = pexpect.spawn("bash", ["-c", command], cwd=str(ROOT), env=cli_env(TERM="xterm"), encoding="utf-8",
                          timeout=120, dimensions=(30, 120))
    child.expect("reading the opening")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert out.read_text(encoding="utf-8") == piped.stdout.decode()  # read in segments: the same state
