"""Decode speed of the ONNX export's graph design against alternatives, paired in one process.

    python benchmarks/onnx_decode_design.py --model benchmarks/models/rwkv7-L12-D768-V8849.pth

Designs (ai_writer/models/rwkv/onnx_v7.py, build_model): "file" (the exported graph: one layer
stack for any T, an If per layer on T == 1 between the step and the chunked recurrence) and
"step" (decode_only: the step form alone, the bound). Each runs T = 1, B = 1 steps on ONNX
Runtime's CPU provider, one thread, ORT_ENABLE_ALL; the designs alternate in timed blocks and
the figure is the median of the per-round ratios to "step" (CPU time of the process, so a busy
neighbour counts less).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from ai_writer.models.rwkv import onnx_v7 as onnx_graph  # noqa: E402
from ai_writer.export.weights import WeightWriter  # noqa: E402
from ai_writer.models.onnx_file import run_graph  # noqa: E402
from ai_writer.models.tensors import open_tensors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=".safetensors or .pth RWKV-7 model")
    parser.add_argument("--steps", type=int, default=300, help="decode steps per timed block")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--designs", default="step,file")
    args = parser.parse_args()

    if args.model.endswith(".safetensors"):
        tensors = open_tensors(args.model, "safetensors")
        from ai_writer.models.config import ModelConfig

        config = ModelConfig.from_tensors(tensors.shapes, args.model)
    else:
        from ai_writer.models.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(args.model)
        tensors, config = {k: t.float().numpy() for k, t in checkpoint.tensors.items()}, checkpoint.config
    designs = args.designs.split(",")
    sessions = {}
    for design in designs:
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        weights = onnx_graph.prepare_weights(tensors, config)
        model = onnx_graph.build_model(weights, config, WeightWriter(None, "", "fp32"), decode_only=design == "step")
        model = model.SerializeToString()
        sessions[design] = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, args.steps)

    def decode(sess) -> float:
        state = [np.zeros((L, 1, C), np.float32), np.zeros((L, 1, H, N, N), np.float32),
                 np.zeros((L, 1, C), np.float32)]
        began = time.process_time()
        for token in tokens:
            _, state = run_graph(sess, np.array([[token]]), state)
        return args.steps / (time.process_time() - began)

    for sess in sessions.values():
        decode(sess)  # warm-up
    speeds = {d: [] for d in designs}
    for r in range(args.rounds):
        for design in designs if r % 2 == 0 else designs[::-1]:
            speeds[design].append(decode(sessions[design]))
    for design in designs:
        ratios = [a / b for a, b in zip(speeds[design], speeds[designs[0]])]
        print(f"{design:7s} median {statistics.median(speeds[design]):8.1f} tokens/s, best {max(speeds[design]):8.1f}; "
              f"ratio to {designs[0]}: median {statistics.median(ratios):.3f} "
              f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
