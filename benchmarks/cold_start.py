"""Cold start: from launching `ai-writer continue --len 1` to its first character on stdout.

    python benchmarks/cold_start.py [--runs 5] [-- extra options for ai-writer continue]

Each run is a fresh process with the default model and the default backend (the model's ONNX
export is made once beforehand, as a user's first run would have made it). Prints the median
and every run, and which backend ran.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

OPENING = "林黛玉笑道：“你们在说什么？”\n".encode()


def time_to_first_character(extra: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "ai_writer", "continue", "--len", "1", *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(OPENING)
    process.stdin.close()
    process.stdout.read(1)  # the first byte of the first character
    elapsed = time.perf_counter() - began
    process.stdout.read()
    status = process.stderr.read().decode()
    process.wait()
    return elapsed, status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("extra", nargs="*", help="options for ai-writer continue")
    args = parser.parse_args()
    _, status = time_to_first_character(args.extra)  # exports the model on a first use; not timed
    backend = next((line for line in status.splitlines() if "backend" in line), status.strip())
    runs = [time_to_first_character(args.extra)[0] for _ in range(args.runs)]
    print(f"first character after {statistics.median(runs):.3f} s (median of {args.runs}; runs "
          f"{', '.join(f'{r:.3f}' for r in runs)}); {os.cpu_count()} cores")
    print(backend)


if __name__ == "__main__":
    main()
