"""A plain `pip install .` carries the shipped model and the web page, so the tool works offline from any directory,
and it brings no torch: the default cpu backend needs none."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from helpers import ROOT, cli_env

pytestmark = pytest.mark.packaging  # builds a wheel with pip, installs into a fresh venv


def test_the_wheel_carries_the_default_model_and_the_entry_point(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    wheel = next(tmp_path.glob("ai_writer-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
        assert "ai_writer/model/default.safetensors" in names
        assert {"ai_writer/web_client/index.html", "ai_writer/web_client/app.js"} <= names  # `ai-writer serve`'s page
        modules = {str(f.relative_to(ROOT)) for f in (ROOT / "ai_writer").rglob("*.py")}
        assert modules <= names, f"not in the wheel: {sorted(modules - names)[:5]}"  # every subpackage ships
        shipped = archive.getinfo("ai_writer/model/default.safetensors").file_size
    assert shipped == (ROOT / "model" / "default.safetensors").stat().st_size
    assert "ai-writer = ai_writer.cli.main:main" in entry_points


@pytest.mark.slow  # about 25 s: the venv and pip
def test_a_plain_install_writes_without_torch(tmp_path, tiny_model):
    """`pip install .` into a fresh venv (its own site-packages: the system's torch is not there) brings no torch;
    the default model and a `.pth` still write on the cpu backend, and the torch backend says what to install."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
    scripts = venv / ("Scripts" if sys.platform == "win32" else "bin")
    python, ai_writer = scripts / "python", scripts / "ai-writer"
    installed = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
                               capture_output=True, text=True, timeout=900)  # wheels come from pip's cache when there
    assert installed.returncode == 0, installed.stderr[-2000:]
    no_torch = subprocess.run([str(python), "-c", "import importlib.util; print(importlib.util.find_spec('torch'))"],
                              capture_output=True, text=True, timeout=60)
    assert no_torch.stdout.strip() == "None", "pip installed torch"
    env = {key: value for key, value in cli_env(XDG_CACHE_HOME=str(tmp_path / "cache")).items()
           if key != "PYTHONPATH"}  # the installed package, not this checkout

    def write(*options):
        return subprocess.run([str(ai_writer), "continue", "--len", "20", "--seed", "1", "--threads", "1", *options],
                              input="林黛玉笑道：“你们在说什么？”", capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=600)

    for options in ((), ("--model", str(tiny_model))):  # the shipped model; a .pth made by the tests' factory
        wrote = write(*options)
        assert wrote.returncode == 0, wrote.stderr
        assert len(wrote.stdout.strip()) >= 10, options
    refused = write("--backend", "torch-cpu")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr == ("Error: the torch-cpu backend needs PyTorch, which is not installed: "
                              "pip install 'ai-writer[torch]'\n")
