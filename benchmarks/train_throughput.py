"""Training speed of a model shape: tokens per second of full steps (forward, backward, AdamW).

Prints one JSON line per (dtype, threads). The data are random windows over a vocabulary of
the given size, so no corpus is needed; the vocabulary size matters (the head is V x C).

In the same run it measures the machine's matrix-product peak per dtype and thread count
(square torch.mm products) and reports the training run's fraction of it: model FLOPs per
token are 6 x the weights that take part in matrix products (forward 2, backward 4; the
embedding is a lookup) plus the chunked recurrence's own products, counted as they run.

    python benchmarks/train_throughput.py --n-layer 6 --n-embd 256 --ctx-len 256 --batch-size 16 \\
        --vocab 4836 --dtypes fp32,bf16 --threads 2 --steps 5
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext

import numpy as np
import torch

from ai_writer.models.rwkv.rwkv7 import RWKV7
from ai_writer.models.rwkv.init import init_weights, new_model_config
from ai_writer.training.train import TrainOptions, get_batch, make_optimizer, window_loss


def matmul_peak_gflops(dtype: str, threads: int, size: int = 2048, repeats: int = 5) -> float:
    torch.set_num_threads(threads)
    kind = torch.bfloat16 if dtype == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - began)
    return 2 * size**3 / min(times) / 1e9


def flops_per_token(model: RWKV7, ctx_len: int, chunk: int = 32) -> float:
    """Training FLOPs per token: 6 per matrix-product weight, plus the recurrence's chunk products."""
    c = model.config
    matrix_weights = sum(p.numel() for name, p in model.named_parameters() if p.ndim == 2 and not name.startswith("emb"))
    n = c.head_size
    # per head and token in a chunk: a few (chunk x N) @ (N x N) and (chunk x chunk) @ (chunk x N) products
    recurrence = c.n_layer * c.n_head * 2 * (4 * n * n + 3 * chunk * n)
    return 6 * matrix_weights + 3 * recurrence


def measure(args, dtype: str, threads: int) -> dict:
    torch.set_num_threads(threads)
    config = new_model_config(args.vocab, args.n_layer, args.n_embd, args.head_size, args.ctx_len)
    model = RWKV7(config)
    init_weights(model, seed=0)
    optimizer = make_optimizer(model, TrainOptions(corpus=("-",), out="-"))
    data = np.random.default_rng(0).integers(0, args.vocab, 1_000_000).astype(np.uint16)
    generator = torch.Generator().manual_seed(0)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if dtype == "bf16" else nullcontext
    durations = []
    for i in range(args.warmup + args.steps):
        batch = get_batch(data, args.batch_size, args.ctx_len, generator)
        began = time.perf_counter()
        with autocast():
            loss = window_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i >= args.warmup:
            durations.append(time.perf_counter() - began)
    tokens = args.batch_size * args.ctx_len
    tokens_per_s = tokens / float(np.median(durations))
    achieved = tokens_per_s * flops_per_token(model, args.ctx_len) / 1e9
    peak = matmul_peak_gflops(dtype, threads)
    return {
        "shape": f"L{args.n_layer}-D{args.n_embd} ctx {args.ctx_len} batch {args.batch_size} vocab {args.vocab}",
        "dtype": dtype,
        "threads": threads,
        "tokens_per_s": round(tokens_per_s, 1),
        "s_per_step": [round(d, 3) for d in durations],
        "model_gflops_per_s": round(achieved, 1),
        "matmul_peak_gflops_per_s": round(peak, 1),
        "fraction_of_peak": round(achieved / peak, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in (("n-layer", 6), ("n-embd", 256), ("head-size", 64), ("ctx-len", 256), ("batch-size", 16),
                          ("vocab", 4836), ("steps", 3), ("warmup", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--threads", default="1,2")
    args = parser.parse_args()
    for dtype in args.dtypes.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            print(json.dumps(measure(args, dtype, threads)), flush=True)


if __name__ == "__main__":
    main()
