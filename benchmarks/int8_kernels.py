"""How fast ONNX Runtime's 8-bit matrix kernels read their weights at batch 1, against the machine's
streaming bandwidth: the ceiling on int8 decoding, whatever the graph around them.

    python benchmarks/int8_kernels.py [--threads 2] [--copies 40] [--runs 30]

Each kernel multiplies one row by --copies distinct 2048 x 8192 int8 matrices (the FFN key of the
1.5B layout; 40 of them are 670 MB, more than this machine's last-level cache) in one session:
MatMulNBits 8-bit with blocks of 128 and of 256 (accuracy level 4: activations quantized per
block), and DynamicQuantizeMatMul (one weight scale per column, activations quantized to 8 bits
per row). Prints each one's median time and the GB/s it reads, beside a streaming read of 4 GB
with --threads numpy readers. Weights are random: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

K, N = 2048, 8192


def session(nodes, initializers, copies: int, threads: int) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "kernels", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                              [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, N])
                               for i in range(copies)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def matmul_nbits(block: int, copies: int, threads: int, rng) -> ort.InferenceSession:
    nodes, initializers = [], []
    for i in range(copies):
        initializers += [numpy_helper.from_array(rng.integers(0, 256, (N, K // block, block), dtype=np.uint8), f"b{i}"),
                         numpy_helper.from_array(rng.random(N * K // block, dtype=np.float32) * 0.01, f"s{i}")]
        nodes.append(helper.make_node("MatMulNBits", ["x", f"b{i}", f"s{i}"], [f"y{i}"], domain="com.microsoft",
                                      K=K, N=N, bits=8, block_size=block, accuracy_level=4))
    return session(nodes, initializers, copies, threads)


def dynamic_quantize_matmul(copies: int, threads: int, rng) -> ort.InferenceSession:
    nodes, initializers = [], []
    for i in range(copies):
        initializers += [numpy_helper.from_array(rng.integers(-127, 128, (K, N), dtype=np.int8), f"w{i}"),
                         numpy_helper.from_array(rng.random(N, dtype=np.float32) * 0.01, f"s{i}")]
        nodes.append(helper.make_node("DynamicQuantizeMatMul", ["x", f"w{i}", f"s{i}"], [f"y{i}"],
                                      domain="com.microsoft"))
    return session(nodes, initializers, copies, threads)


def times(run, runs: int) -> list[float]:
    for _ in range(5):
        run()
    spent = []
    for _ in range(runs):
        began = time.perf_counter()
        run()
        spent.append(time.perf_counter() - began)
    return spent


def stream_read(threads: int, gigabytes: int = 4) -> tuple[list[float], int]:
    data = np.ones(gigabytes * 2**30 // 8)
    parts = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        return times(lambda: list(pool.map(np.sum, parts)), 5), data.nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((1, K), dtype=np.float32)
    kernels = {"MatMulNBits 8-bit, blocks of 128": lambda: matmul_nbits(128, args.copies, args.threads, rng),
               "MatMulNBits 8-bit, blocks of 256": lambda: matmul_nbits(256, args.copies, args.threads, rng),
               "DynamicQuantizeMatMul, a scale per column": lambda: dynamic_quantize_matmul(args.copies, args.threads,
                                                                                           rng)}
    print(f"| kernel ({args.copies} matrices {K} x {N}, {args.threads} threads) | ms (median, min-max) | GB/s |")
    print("|---|---|---|")
    weight_bytes = args.copies * K * N
    for name, make in kernels.items():
        run = make()
        spent = times(lambda: run.run(None, {"x": x}), args.runs)
        del run
        print(f"| {name} | {statistics.median(spent) * 1e3:.1f} ({min(spent) * 1e3:.1f}-{max(spent) * 1e3:.1f}) | "
              f"{weight_bytes / statistics.median(spent) / 1e9:.1f} |", flush=True)
    spent, nbytes = stream_read(args.threads)
    print(f"| numpy streaming read of 4 GB | {statistics.median(spent) * 1e3:.1f} | {nbytes / statistics.median(spent) / 1e9:.1f} |")


if __name__ == "__main__":
    main()
