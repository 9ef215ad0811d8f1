"""Shared fixtures: small random RWKV-7 checkpoints with vocabularies, written once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from rwkv7_factory import write_random_rwkv7

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session", autouse=True)
def private_user_folder(tmp_path_factory):
    """The ai-writer user folder (ONNX and corpus caches) of the tests, and of the commands they run, is
    a temporary one: the tests neither read a cache left by an earlier run nor fill the real one."""
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    yield
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An L2-D64 model over the 50-character conformance vocabulary, with tiny.json beside it."""
    folder = tmp_path_factory.mktemp("tiny")
    path = folder / "tiny.pth"
    write_random_rwkv7(path, n_layer=2, n_embd=64, head_size=32, vocab_size=50, seed=3)
    shutil.copy(DATA / "tiny_vocab.json", folder / "tiny.json")
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and do not stall when other work holds the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
