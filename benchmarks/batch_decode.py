"""What writing several texts at once costs on a big model: `/alt N` in the REPL, the server's batch.

    python benchmarks/batch_decode.py --model /tmp/big/v7-1.5b-L24-D2048.pth --precision int8 --batches 1,2,3,4,8

One process opens the model as `continue` would (the ONNX export in the cache folder of the
environment; --threads as given) and reads a 16-token opening into every row; then, in rounds
that interleave the batch sizes, each size decodes --tokens steps of all its rows. Prints, per
batch size, the median time of a step (min-max over the rounds), that time against one row's,
and the tokens written per second over all rows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from ai_writer.backends.open import load_model  # noqa: E402
from ai_writer.cli.options import onnx_cache_dir  # noqa: E402


def step_seconds(backend, batch: int, tokens: int, rng) -> float:
    vocab = backend.config.vocab_size
    _, state = backend.forward(rng.integers(0, vocab, (batch, 16)), backend.zero_state(batch))
    began = time.perf_counter()
    for _ in range(tokens):
        _, state = backend.forward(rng.integers(0, vocab, (batch, 1)), state)
    return (time.perf_counter() - began) / tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="1,2,3,4,8")
    parser.add_argument("--tokens", type=int, default=16, help="decode steps per batch size and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    backend = load_model(args.model, backend=args.backend, precision=args.precision, threads=args.threads,
                         need_vocab=False, onnx_cache=onnx_cache_dir()).backend
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    seen: dict[int, list[float]] = {b: [] for b in batches}
    step_seconds(backend, 1, 4, rng)  # warm-up
    for _ in range(args.rounds):
        for batch in batches:
            seen[batch].append(step_seconds(backend, batch, args.tokens, rng))
    one = statistics.median(seen[batches[0]])
    print(f"{Path(args.model).name}, {args.backend} {args.precision}, {args.threads} threads, "
          f"{args.tokens} steps x {args.rounds} rounds")
    print("| rows | ms a step (median, min-max) | vs 1 row | tokens/s, all rows |")
    print("|---|---|---|---|")
    for batch in batches:
        median = statistics.median(seen[batch])
        print(f"| {batch} | {median * 1e3:.0f} ({min(seen[batch]) * 1e3:.0f}-{max(seen[batch]) * 1e3:.0f}) | "
              f"{median / one:.2f}x | {batch / median:.1f} |")


if __name__ == "__main__":
    main()
