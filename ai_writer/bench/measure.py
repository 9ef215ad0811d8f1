"""Speed and memory figures of a loaded model, measured the same way for users and benchmarks.

Each figure is a dict ready to print as one JSON line:
{"impl", "model", "backend", "precision", "threads", "figure", "value", "unit", "runs"}.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Iterator

import numpy as np

from ai_writer.backends.loaded import LoadedModel


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / 1024 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def measure(
    loaded: LoadedModel,
    *,
    threads: int | None,
    decode_tokens: int = 128,
    prefill_tokens: int = 2000,
    repeats: int = 5,
    seed: int = 0,
) -> Iterator[dict]:
    backend = loaded.backend
    vocab = loaded.config.vocab_size
    rng = np.random.default_rng(seed)
    common = {
        "impl": "ai-writer",
        "model": loaded.path.name,
        "backend": loaded.choice.backend,
        "precision": loaded.choice.precision,
        "threads": threads,
    }

    # warm-up: a short prefill and a few decode steps
    _, state = backend.forward([rng.integers(0, vocab, 16).tolist()], backend.zero_state(1))
    for token in rng.integers(0, vocab, 32).tolist():
        _, state = backend.forward([[token]], state)

    decode_runs = []
    for _ in range(repeats):
        tokens = rng.integers(0, vocab, decode_tokens).tolist()
        began = time.perf_counter()
        for token in tokens:
            _, state = backend.forward([[token]], state)
        decode_runs.append(decode_tokens / (time.perf_counter() - began))
    yield {**common, "figure": "decode_tokens_per_s", "value": statistics.median(decode_runs), "unit": "tokens/s", "runs": decode_runs}

    backend.forward([rng.integers(0, vocab, 64).tolist()], backend.zero_state(1))
    prefill_runs = []
    for _ in range(repeats):
        prompt = [rng.integers(0, vocab, prefill_tokens).tolist()]
        began = time.perf_counter()
        backend.forward(prompt, backend.zero_state(1))
        prefill_runs.append(prefill_tokens / (time.perf_counter() - began))
    yield {**common, "figure": "prefill_tokens_per_s", "value": statistics.median(prefill_runs), "unit": "tokens/s", "runs": prefill_runs}

    yield {**common, "figure": "peak_rss_mb", "value": peak_rss_mb(), "unit": "MB", "runs": []}
