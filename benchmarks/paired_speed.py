"""Paired speed ratio of ai-writer's torch CPU engine against the official rwkv package.

Both engines are loaded in one process and alternate in short timed blocks (A, B, A, B, ...), so
a noisy neighbour or hypervisor steal time slows both alike; the figure is the median of the
per-pair ratios. This is the robust figure on a shared machine; `compare_cpu.py` gives the
absolute numbers and peak RSS per process.

    python benchmarks/paired_speed.py --model benchmarks/models/rwkv7-L6-D512-V8849.pth --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["RWKV_V7_ON"] = "1"  # the package reads these at import time
os.environ.setdefault("RWKV_JIT_ON", "1")
os.environ["RWKV_CUDA_ON"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=9)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=2000)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    import contextlib
    import io

    from rwkv.model import RWKV  # noqa: E402

    from ai_writer.backends.open import load_model

    with contextlib.redirect_stdout(io.StringIO()):
        package = RWKV(args.model.removesuffix(".pth"), "cpu fp32")
    ours = load_model(args.model, threads=args.threads, need_vocab=False).backend
    vocab = ours.config.vocab_size
    rng = np.random.default_rng(0)

    def decode_ours(tokens):
        _, state = ours.forward([tokens[:8]], ours.zero_state(1))
        began = time.perf_counter()
        for t in tokens:
            _, state = ours.forward([[t]], state)
        return len(tokens) / (time.perf_counter() - began)

    def decode_package(tokens):
        with torch.no_grad():
            _, state = package.forward(tokens[:8], None)
            began = time.perf_counter()
            for t in tokens:
                _, state = package.forward([t], state)
        return len(tokens) / (time.perf_counter() - began)

    def prefill_ours(tokens):
        began = time.perf_counter()
        ours.forward([tokens], ours.zero_state(1))
        return len(tokens) / (time.perf_counter() - began)

    def prefill_package(tokens):
        with torch.no_grad():
            began = time.perf_counter()
            package.forward(list(tokens), None)
        return len(tokens) / (time.perf_counter() - began)

    for figure, a, b, n in (
        ("decode_tokens_per_s", decode_ours, decode_package, args.decode_tokens),
        ("prefill_tokens_per_s", prefill_ours, prefill_package, args.prefill_tokens),
    ):
        warm = rng.integers(0, vocab, min(n, 64)).tolist()
        a(warm), b(warm)
        pairs = []
        for i in range(args.pairs):
            tokens = rng.integers(0, vocab, n).tolist()
            first, second = (a, b) if i % 2 == 0 else (b, a)  # alternate who goes first
            x, y = first(tokens), second(tokens)
            pairs.append((x, y) if first is a else (y, x))
        ratios = [x / y for x, y in pairs]
        print(json.dumps({
            "model": Path(args.model).name, "threads": args.threads, "figure": figure,
            "ai_writer_median": round(statistics.median(x for x, _ in pairs), 1),
            "package_median": round(statistics.median(y for _, y in pairs), 1),
            "ratio_median": round(statistics.median(ratios), 2),
            "ratio_min": round(min(ratios), 2), "ratio_max": round(max(ratios), 2),
        }), flush=True)


if __name__ == "__main__":
    main()
