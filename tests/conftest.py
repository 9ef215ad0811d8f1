"""Shared fixtures: a private user folder, the small random RWKV-7 model and its ONNX export, each made once per
session. Plain helpers (paths, subprocess environment, ONNX graph runner) are in helpers.py.

Nothing here imports torch at import time: the fixtures that need it import it, so that a test module that does not
use them runs without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import DATA

try:  # in CI the fuzz tests replay the same examples every run (a new find is made on a developer's machine)
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        _hypothesis_settings.load_profile("ci")
except ImportError:
    pass


@pytest.fixture(scope="session", autouse=True)
def private_user_folder(tmp_path_factory) -> Path:
    """The ai-writer user folder (ONNX and corpus caches) of the tests, and of the commands they run, is
    a temporary one: the tests neither read a cache left by an earlier run nor fill the real one."""
    before = {name: os.environ.get(name) for name in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    folder = tmp_path_factory.mktemp("cache")
    os.environ["XDG_CACHE_HOME"] = str(folder)  # the ONNX cache (ai-writer/onnx in it)
    yield folder
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An L2-D64 model over the 50-character conformance vocabulary, with tiny.json beside it."""
    from rwkv7_factory import write_random_rwkv7

    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.pth"
    write_random_rwkv7(path, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=3)
    shutil.copy(DATA / "tiny_vocab.json", folder / "tiny.json")
    return path


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The shipped model's path (the test is skipped in a checkout without it)."""
    from ai_writer.resources import default_model_path

    path = default_model_path()
    if path is None:
        pytest.skip("model/default.safetensors is not in this checkout")
    return path


@pytest.fixture(scope="session")
def tiny_onnx(private_user_folder, tiny_model) -> Path:
    """The tiny model's fp32 ONNX export, in the ONNX cache of the private user folder: exported once per
    session, here or by the tests' first `ai-writer` command that ran the tiny model on the cpu backend."""
    from ai_writer.backends.open import load_model

    folder = private_user_folder / "ai-writer" / "onnx"  # where `ai-writer` keeps its exports under XDG
    return load_model(tiny_model, backend="cpu", threads=1, onnx_cache=folder).runs


@pytest.fixture(scope="session")
def tiny_onnx_cache(tiny_onnx) -> Path:
    """The ONNX cache folder that holds tiny_onnx: tests that load the tiny model on the cpu backend pass it as
    `onnx_cache` and find the export made."""
    return tiny_onnx.parent


@pytest.fixture(scope="session")
def default_onnx(tmp_path_factory) -> dict[str, Path]:
    """{precision: path} of the shipped model's fp32, int8 and int4 ONNX exports, exported once per session."""
    from ai_writer.export.cache import export_model
    from ai_writer.resources import default_model_path

    default = default_model_path()
    if default is None:
        pytest.skip("model/default.safetensors is not in this checkout")
    folder = tmp_path_factory.mktemp("default-onnx")
    return {precision: export_model(default, folder / f"default.{precision}.onnx", precision)
            for precision in ("fp32", "int8", "int4")}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall when other work holds the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
