"""A plain `pip install .` carries the shipped model and the web page, so the tool works offline from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

import pytest
from helpers import ROOT

pytestmark = pytest.mark.packaging  # builds a wheel with pip


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
