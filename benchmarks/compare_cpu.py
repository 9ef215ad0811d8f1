"""Side by side: `ai-writer bench` against the official rwkv package on the same random checkpoints.

Each round runs both, one after the other, in fresh processes (so peak RSS is per process), and
the rounds interleave so that a noisy neighbour hits both alike. Prints a markdown table of the
medians over rounds, with the spread (min-max) and the ratio ai-writer / package.

    python benchmarks/compare_cpu.py --shapes L6-D512,L12-D768 --threads 2 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("decode_tokens_per_s", "prefill_tokens_per_s", "peak_rss_mb")


def run(command: list[str]) -> dict[str, float]:
    out = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return {r["figure"]: r["value"] for r in map(json.loads, out.splitlines()) if r.get("figure")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="L6-D512,L12-D768")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=Path, default=ROOT / "benchmarks" / "models")
    parser.add_argument("--extra", default="", help="extra options for ai-writer bench, e.g. '--precision bf16'")
    args = parser.parse_args()

    shapes = args.shapes.split(",")
    subprocess.run([sys.executable, "benchmarks/make_models.py", "--out-dir", str(args.models), "--shapes",
                    args.shapes], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    threads = ["--threads", str(args.threads)]
    print("| model | figure | ai-writer (median, min-max) | rwkv package (median, min-max) | ratio |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        model = str(args.models / f"rwkv7-{shape}-V8849.pth")
        ours, theirs = {f: [] for f in FIGURES}, {f: [] for f in FIGURES}
        for _ in range(args.rounds):
            for figure, value in run([sys.executable, "-m", "ai_writer", "bench", "--model", model, *threads,
                                      *args.extra.split()]).items():
                ours[figure].append(value)
            for figure, value in run([sys.executable, "-m", "ai_writer.cli.bench_reference", "--model", model,
                                      *threads]).items():
                theirs[figure].append(value)
        for figure in FIGURES:
            a, b = statistics.median(ours[figure]), statistics.median(theirs[figure])
            spread = lambda v: f"{min(v):.1f}-{max(v):.1f}"  # noqa: E731
            print(f"| {shape} | {figure} | {a:.1f} ({spread(ours[figure])}) | {b:.1f} ({spread(theirs[figure])}) "
                  f"| {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
