"""Speed reference: the official `rwkv` pip package (CPU, fp32), measured like `ai-writer bench`.

A program of its own (a command line, in cli/ because it sets the environment the package reads).

RWKV-7, RWKV-6 and RWKV-5.2 checkpoints: the version is detected here (models/version.py) and the
package is imported accordingly, as it needs RWKV_V7_ON=1 for RWKV-7 only and cannot tell.

`ai-writer bench --reference` runs this in its own process (the package reads its settings from
the environment at import time); it needs `pip install rwkv torch` (the `[dev]` extra has both).

    python -m ai_writer.cli.bench_reference --model PATH.pth [--threads 2]
        [--decode-tokens 128] [--prefill-tokens 2000] [--repeats 5]

Prints one JSON object per line to stdout, one per figure:
decode_tokens_per_s, prefill_tokens_per_s, peak_rss_mb. Everything the package
itself prints goes to stderr.
"""

from __future__ import annotations

import os
import sys

# The package reads these at import time (RWKV_V7_ON is set in main, by the file's version).
os.environ["RWKV_JIT_ON"] = "1"
os.environ["RWKV_CUDA_ON"] = "0"
os.environ.pop("RWKV_DE_VERSION", None)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

IMPL = "rwkv-package"
BACKEND = "torch-cpu"
PRECISION = "fp32"
SEED = 1234


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="RWKV-7, RWKV-6 or RWKV-5.2 checkpoint (.pth)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode-tokens", type=int, default=128)
    ap.add_argument("--prefill-tokens", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    for name in ("threads", "decode_tokens", "prefill_tokens", "repeats"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.prefill_tokens < 2:
        ap.error("--prefill-tokens must be >= 2 (one token is not a sequence)")
    if not os.path.isfile(args.model):
        ap.error(f"model file not found: {args.model}")
    return args


def emit(model_name: str, threads: int, figure: str, runs: list[float], unit: str) -> None:
    runs = [round(float(r), 2) for r in runs]
    value = round(float(statistics.median(runs)), 2)
    rec = {
        "impl": IMPL,
        "model": model_name,
        "backend": BACKEND,
        "precision": PRECISION,
        "threads": threads,
        "figure": figure,
        "value": value,
        "unit": unit,
        "runs": runs,
    }
    print(json.dumps(rec), flush=True)


def clone_state(state):
    return [t.clone() for t in state]


def main(argv=None) -> int:
    args = parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)

    from ai_writer.models.version import detect_version

    tensors = torch.load(args.model, map_location="cpu", weights_only=True, mmap=True)
    version = detect_version({k: tuple(t.shape) for k, t in tensors.items()}, args.model)
    del tensors
    os.environ["RWKV_V7_ON"] = "1" if version == 7 else "0"
    with contextlib.redirect_stdout(sys.stderr):
        from rwkv.model import RWKV

    model_path = os.path.abspath(args.model)
    model_name = os.path.basename(model_path)
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-") as tmp:
        # the package opens <arg> + ".pth"
        if model_path.endswith(".pth"):
            model_arg = model_path[: -len(".pth")]
        else:
            link = os.path.join(tmp, "model.pth")
            os.symlink(model_path, link)
            model_arg = link[: -len(".pth")]
        with contextlib.redirect_stdout(sys.stderr):
            model = RWKV(model_arg, "cpu fp32")

    vocab = int(model.args.vocab_size) if hasattr(model.args, "vocab_size") else int(model.w["emb.weight"].shape[0])

    def zero_state():  # the generic (v5/v6) class starts from None
        return model.generate_zero_state() if version == 7 else None

    rng = random.Random(SEED)
    warm_prompt = [rng.randrange(vocab) for _ in range(16)]
    warm_decode = [rng.randrange(vocab) for _ in range(32)]
    decode_seq = [rng.randrange(vocab) for _ in range(args.decode_tokens)]
    prefill_warm = [rng.randrange(vocab) for _ in range(64)]
    prefill_seq = [rng.randrange(vocab) for _ in range(args.prefill_tokens)]

    with torch.no_grad():
        # ---- decode: batch 1, one token per forward ----
        _, state = model.forward(warm_prompt, zero_state())
        for t in warm_decode:
            _, state = model.forward([t], state)
        start_state = clone_state(state)

        decode_runs = []
        for _ in range(args.repeats):
            state = clone_state(start_state)
            t0 = time.perf_counter()
            for t in decode_seq:
                _, state = model.forward([t], state)
            dt = time.perf_counter() - t0
            decode_runs.append(len(decode_seq) / dt)
        emit(model_name, args.threads, "decode_tokens_per_s", decode_runs, "tokens/s")

        # ---- prefill: one sequence from a zero state ----
        model.forward(prefill_warm, zero_state())
        prefill_runs = []
        for _ in range(args.repeats):
            state = zero_state()
            t0 = time.perf_counter()
            model.forward(prefill_seq, state)
            dt = time.perf_counter() - t0
            prefill_runs.append(len(prefill_seq) / dt)
        emit(model_name, args.threads, "prefill_tokens_per_s", prefill_runs, "tokens/s")

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    emit(model_name, args.threads, "peak_rss_mb", [peak], "MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
