"""Which ONNX Runtime thread setting to ship: decode speed with 1 or all cores, alone and beside a busy
neighbour (one process spinning on one core), with ORT's spin-waiting on and off.

    python benchmarks/thread_choice.py [--model model/default.safetensors] [--precision fp32] [--tokens 200]
        [--rounds 3]

Prints one line per setting: median decode tokens/s over rounds (each round alternates the
settings), and the spread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

from ai_writer.resources import default_model_path
from ai_writer.export.cache import onnx_for
from ai_writer.models.formats import recognise


def session(path, threads: int, spinning: bool):
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def decode_speed(sess, tokens: int) -> float:
    shapes = {i.name: [1 if d in ("batch", "time") or not isinstance(d, int) else d for d in i.shape]
              for i in sess.get_inputs()}
    state = {name: np.zeros(shape, np.float32) for name, shape in shapes.items() if name != "tokens"}
    ids = np.random.default_rng(0).integers(0, 100, tokens)
    began = time.perf_counter()
    for token in ids:
        logits, *new = sess.run(None, {"tokens": np.array([[token]], np.int64), **state})
        state = dict(zip(state, new))  # per-layer inputs and outputs, in the same order
    return tokens / (time.perf_counter() - began)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32", help="of the export measured: fp32, int8 or int4")
    args = parser.parse_args()
    path, _ = onnx_for(args.model, recognise(args.model), args.precision,
                       tempfile.gettempdir() + "/ai-writer-thread-choice")
    cores = os.cpu_count() or 1
    settings = [(t, s) for t in sorted({1, cores}) for s in (True, False)]
    sessions = {key: session(path, *key) for key in settings}
    for key in settings:
        decode_speed(sessions[key], 20)  # warm-up
    results = {}
    for neighbour in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
        try:
            time.sleep(0.5)
            runs = {key: [] for key in settings}
            for _ in range(args.rounds):
                for key in settings:
                    runs[key].append(decode_speed(sessions[key], args.tokens))
        finally:
            if busy is not None:
                busy.kill()
        for (threads, spinning), values in runs.items():
            results[(threads, spinning, neighbour)] = values
            print(f"threads {threads}, spinning {'on ' if spinning else 'off'}, "
                  f"{'busy neighbour' if neighbour else 'alone         '}: "
                  f"{statistics.median(values):7.1f} tokens/s ({min(values):.1f}-{max(values):.1f})", flush=True)


if __name__ == "__main__":
    main()
