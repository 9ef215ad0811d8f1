"""Peak memory of opening a checkpoint and reading one token, with and without mmap.

Writes a random fp16 RWKV-6 L12-D768 checkpoint with the world vocabulary (65,536), then, each in
a fresh process, opens it the way ai-writer does (`checkpoint.load_checkpoint`: torch.load with
mmap=True, weights_only=True) or with mmap=False, builds the torch model in a precision and runs
a 16-token prefill and one decode step. Prints peak RSS (VmHWM) per case, and the file size.

    python benchmarks/load_memory.py
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def measure(path: str, precision: str, mmap: bool) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if not mmap:
        torch.load = _without_mmap(torch.load)  # what load_checkpoint does, less the mmap
    from ai_writer.backends.rwkv_torch import TorchBackend
    from ai_writer.models.checkpoint import load_checkpoint

    backend = TorchBackend(load_checkpoint(path), precision=precision)
    logits, state = backend.forward([list(range(16))], backend.zero_state(1))
    backend.forward([[int(np.argmax(logits[0]))]], state)
    return {"precision": precision, "mmap": mmap, "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb() -> float:
    """VmHWM, this process's own peak: ru_maxrss would carry the peak of the parent across fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _without_mmap(load):
    def patched(*args, **kwargs):
        kwargs["mmap"] = False
        return load(*args, **kwargs)
    return patched


def main() -> None:
    if len(sys.argv) == 4:  # the child: path precision mmap
        print(json.dumps(measure(sys.argv[1], sys.argv[2], sys.argv[3] == "1")))
        return
    import torch
    from rwkv_world_factory import write_random_rwkv

    path = ROOT / "benchmarks" / "models" / "rwkv6-L12-D768-V65536-fp16.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_random_rwkv(path, version=6, n_layer=12, n_embd=768, vocab_size=65536, seed=1, dtype=torch.float16)
    print(f"{path.name}: {path.stat().st_size / 2**20:.0f} MiB on disk")
    for precision in ("fp16", "fp32"):
        for mmap in (True, False):
            out = subprocess.run([sys.executable, __file__, str(path), precision, "1" if mmap else "0"],
                                 capture_output=True, text=True, check=True).stdout
            print(out.strip())


if __name__ == "__main__":
    main()
