"""The ONNX export streams: its memory grows with the largest tensor, not with the model.

A random RWKV-7 of 200 M weights (bf16 .safetensors and .pth, 440 MB each; 840 MB in float32) is made once
per test run; exporting it in a fresh process must grow that process's own memory (its anonymous
pages, sampled every 2 ms; the file's mapped pages are the OS's to take back) by less than a few
times its largest tensor in float32 (17 MB here), where holding the model once in float32 would
take 840 MB.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from helpers import cli_env

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")]

LAYERS, WIDTH, VOCAB = 16, 1024, 4096  # 12 C^2 a layer + the embedding and head: 0.2 G weights
MEASURE = """
import sys, threading, time
from ai_writer.export.onnx import export_file

def anonymous():  # the process's own memory, not the file pages it maps (those the OS takes back at will)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

before, peak, done = anonymous(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], anonymous())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
sampler.start()
export_file(sys.argv[1], sys.argv[2], sys.argv[3], kind=sys.argv[1].rpartition(".")[2])
done.set()
sampler.join()
print(before, max(peak[0], anonymous()))
"""


@pytest.fixture(scope="module")
def big_model(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from rwkv7_factory import write_random_rwkv7
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("streaming")
    tensors = write_random_rwkv7(folder / "m.pth", n_layer=LAYERS, n_embd=WIDTH, head_size=64, vocab_size=VOCAB,
                                 seed=0, dtype=torch.bfloat16)
    save_file(tensors, str(folder / "m.safetensors"))
    largest = max(int(np.prod(t.shape)) for t in tensors.values()) * 4  # bytes in float32
    total = sum(int(np.prod(t.shape)) for t in tensors.values()) * 4
    return folder, largest, total


@pytest.mark.parametrize("kind, precision", [("safetensors", "int8"), ("safetensors", "fp16"), ("pth", "int8")])
def test_the_export_grows_with_the_largest_tensor_not_the_model(big_model, tmp_path, kind, precision):
    folder, largest, total = big_model
    path = folder / f"m.{kind}"  # a .pth read without torch, from its memory-mapped storages
    assert total > 40 * largest  # the bound below tells streaming from holding the model
    result = subprocess.run([sys.executable, "-c", MEASURE, str(path), str(tmp_path / "m.onnx"), precision],
                            capture_output=True, text=True, env=cli_env(), timeout=600)
    assert result.returncode == 0, result.stderr
    before, peak = map(int, result.stdout.split())
    growth = peak - before
    assert growth < 8 * largest + 64 * 2**20, f"the export grew by {growth / 2**20:.0f} MB"
    assert (tmp_path / "m.onnx.data").stat().st_size > total / 8  # it did write the weights
