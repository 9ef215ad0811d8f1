"""torch-cpu in bf16 on CPUs with and without bf16 matrix instructions, emulated on this one.

    python benchmarks/bf16_cpus.py --model /tmp/big/v7-1.5b-L24-D2048.pth [--rounds 2]

torch multiplies bf16 and fp32 matrices on the CPU through oneDNN, which can be told to use no
instructions beyond a level (ONEDNN_MAX_CPU_ISA): AVX512_CORE_AMX (this machine's best: Intel
Xeon 4th generation and later), AVX512_CORE_BF16 (AVX-512 BF16 without AMX: AMD Zen 4 and 5),
AVX512_CORE_VNNI (AVX-512 without bf16: Intel Ice Lake and Tiger Lake), AVX2 (most laptops). Each
configuration runs `ai-writer bench --backend torch-cpu` in a fresh process; the rounds interleave
them and the table gives medians (min-max) of decode and prefill tokens/s. ONNX Runtime's own
kernels do not read that variable: the cpu backend cannot be emulated this way and is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

LEVELS = {"AVX512_CORE_AMX": "AMX", "AVX512_CORE_BF16": "AVX-512 BF16", "AVX512_CORE_VNNI": "AVX-512 VNNI, no bf16",
          "AVX2": "AVX2"}
CONFIGURATIONS = [(level, "bf16") for level in LEVELS] + [("AVX512_CORE_AMX", "fp32"), ("AVX2", "fp32")]


def bench(model: str, level: str, precision: str, threads: int, decode: int, prefill: int) -> dict[str, float]:
    command = ["ai-writer", "bench", "--model", model, "--backend", "torch-cpu", "--precision", precision,
               "--threads", str(threads), "--decode-tokens", str(decode), "--prefill-tokens", str(prefill)]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "ONEDNN_MAX_CPU_ISA": level})
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)}: {out.stderr.strip().splitlines()[-1:]}")
    figures = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return {f["figure"]: f["value"] for f in figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=16)
    parser.add_argument("--prefill-tokens", type=int, default=256)
    args = parser.parse_args()
    seen = defaultdict(lambda: defaultdict(list))
    for round_ in range(args.rounds):
        for level, precision in CONFIGURATIONS:
            figures = bench(args.model, level, precision, args.threads, args.decode_tokens, args.prefill_tokens)
            for name, value in figures.items():
                seen[(level, precision)][name].append(value)
            print(f"round {round_ + 1}: {level} {precision} {figures}", file=sys.stderr, flush=True)
    spread = lambda values: f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"  # noqa: E731
    print(f"| instructions (ONEDNN_MAX_CPU_ISA) | precision | decode tokens/s | prefill tokens/s | peak RSS GB |")
    print("|---|---|---|---|---|")
    for level, precision in CONFIGURATIONS:
        figures = seen[(level, precision)]
        print(f"| {LEVELS[level]} ({level}) | {precision} | {spread(figures['decode_tokens_per_s'])} | "
              f"{spread(figures['prefill_tokens_per_s'])} | {max(figures['peak_rss_mb']) / 1024:.1f} |")


if __name__ == "__main__":
    main()
