"""Side-by-side speed figures in one run: several backends/precisions of ai-writer and the rwkv package.

Every configuration runs in a fresh process (`ai-writer bench` for ours, `ai_writer.cli.bench_reference`
for the package), so peak RSS is per configuration; rounds interleave the configurations so a
busy neighbour hits them alike; the figures are medians over rounds with their spread. The
machine's streaming-read bandwidth is measured in the same run, which bounds batch-1 decoding:
every weight is read once per token.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai_writer.backends.precision import weight_bytes
from ai_writer.errors import SettingsError
from ai_writer.models.config import ModelConfig

FIGURES = ("decode_tokens_per_s", "prefill_tokens_per_s", "peak_rss_mb")
REFERENCE = "rwkv-package"


@dataclass
class Series:
    label: str  # "ai-writer cpu fp32", "rwkv-package fp32", ...
    precision: str  # what the bandwidth bound counts the weights in
    command: list[str]
    values: dict[str, list[float]] = field(default_factory=lambda: {f: [] for f in FIGURES})

    def median(self, figure: str) -> float:
        return statistics.median(self.values[figure])

    def spread(self, figure: str) -> str:
        return f"{min(self.values[figure]):.1f}-{max(self.values[figure]):.1f}"


def parse_configs(text: str) -> list[tuple[str, str]]:
    """"cpu:fp32,cpu:int8,torch-cpu" -> [("cpu", "fp32"), ("cpu", "int8"), ("torch-cpu", None)]."""
    configs = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        backend, _, precision = item.partition(":")
        configs.append((backend, precision or None))
    if not configs:
        raise SettingsError("--compare needs at least one BACKEND[:PRECISION]")
    return configs


def stream_read_gbps(threads: int, megabytes: int = 512, repeats: int = 5) -> float:
    """Streaming read bandwidth with `threads` readers (numpy sums release the GIL), best of `repeats`."""
    data = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    parts = np.array_split(data, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            began = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, data.nbytes / (time.perf_counter() - began) / 1e9)
    return best


def weight_bytes_per_token(config: ModelConfig, precision: str) -> int:
    """Bytes of weights one decode step reads: every weight in the form `precision` stores it
    (backends/precision.py), but of the embedding table only one row."""
    table = weight_bytes(config, precision) - weight_bytes(config, precision, roles=("embedding",))
    return table + config.n_embd * 4


def run_json(command: list[str]) -> dict[str, float]:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SettingsError(f"benchmark process failed: {' '.join(command[1:4])}...: {last}")
    return {r["figure"]: r["value"] for r in map(json.loads, result.stdout.splitlines()) if r.get("figure")}


def compare(model: Path, configs: list[tuple[str, str | None]], *, reference: bool, threads: int, rounds: int,
            decode_tokens: int, prefill_tokens: int, repeats: int, log=lambda line: None) -> list[Series]:
    common = ["--threads", str(threads), "--decode-tokens", str(decode_tokens), "--prefill-tokens",
              str(prefill_tokens), "--repeats", str(repeats)]
    series = []
    for backend, precision in configs:
        command = [sys.executable, "-m", "ai_writer", "bench", "--model", str(model), "--backend", backend, *common]
        if precision:
            command += ["--precision", precision]
        series.append(Series(f"ai-writer {backend} {precision or '(default)'}", precision or "fp32", command))
    if reference:
        series.append(Series(f"{REFERENCE} fp32", "fp32", [sys.executable, "-m", "ai_writer.cli.bench_reference", "--model",
                                                    str(model), *common]))
    for round_index in range(rounds):
        for item in series:
            for figure, value in run_json(item.command).items():
                if figure in item.values:
                    item.values[figure].append(value)
            log(f"round {round_index + 1}/{rounds}: {item.label}: "
                + ", ".join(f"{f} {item.values[f][-1]:.1f}" for f in FIGURES if item.values[f]))
    return series


def table(series: list[Series], *, config: ModelConfig | None, bandwidth_gbps: float | None) -> str:
    reference = next((s for s in series if s.label.startswith(REFERENCE)), None)
    lines = ["| configuration | decode tokens/s | vs package | prefill tokens/s | vs package | peak RSS MB |"
             + (" decode / bandwidth bound |" if bandwidth_gbps else ""),
             "|---|---|---|---|---|---|" + ("---|" if bandwidth_gbps else "")]
    for s in series:
        cells = [s.label]
        for figure in ("decode_tokens_per_s", "prefill_tokens_per_s"):
            cells.append(f"{s.median(figure):.1f} ({s.spread(figure)})")
            cells.append(f"{s.median(figure) / reference.median(figure):.2f}x" if reference else "")
        cells.append(f"{s.median('peak_rss_mb'):.0f}")
        if bandwidth_gbps and config is not None:
            bound = bandwidth_gbps * 1e9 / weight_bytes_per_token(config, s.precision)
            cells.append(f"{s.median('decode_tokens_per_s') / bound:.0%} of {bound:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
