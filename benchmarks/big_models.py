"""Big models on this machine: export time and memory, start, decode and prefill, in the release layouts.

    python benchmarks/big_models.py --dir /tmp/big --models v5-1.5b [--precisions int8,int4]
        [--compare cpu:fp32,cpu:int8,cpu:int4,torch-cpu:bf16] [--reference] [--rounds 2]

For each model (random weights in the exact release layout: bf16 `.pth`, vocabulary 65,536, made
once by the project's factories in tests/ into --dir, never committed):

1. export: `ai-writer`'s streaming ONNX export per precision, each in a fresh process; its wall
   time and its peak RSS (the process's own, from getrusage), into --dir's cache folder;
2. start: `ai-writer continue --len 1` on the cached export, launch to first character on stdout,
   median of 3 fresh processes; and the peak RSS of a short write (`--len 32`);
3. speed: `ai-writer bench --compare ...` (every configuration in its own process, rounds
   interleaved, medians with their spread, the rwkv package's fp32 with --reference, the measured
   bandwidth bound with its fraction).

Writes a markdown report to stdout (progress on stderr). Keep --dir outside the repository: the
1.5B models are 3 GB and their exports several more. Run on a quiet machine: pause other work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYOUTS = {  # name: (version, layers, width) of the released world models
    "v7-0.4b": (7, 24, 1024),
    "v5-1.5b": (5, 24, 2048),  # rwkv-5-h-world 1.5B
    "v7-1.5b": (7, 24, 2048),
    "v7-3b": (7, 32, 2560),
}
MAKE = """
import sys, torch
sys.path.insert(0, {tests!r})
from rwkv_world_factory import write_random_rwkv
from rwkv7_factory import write_random_rwkv7
version, layers, width, path = {version}, {layers}, {width}, {path!r}
if version == 7:
    write_random_rwkv7(path, n_layer=layers, n_embd=width, head_size=64, vocab_size=65536, seed=1, dtype=torch.bfloat16)
else:
    write_random_rwkv(path, version=version, n_layer=layers, n_embd=width, vocab_size=65536, seed=1,
                      dtype=torch.bfloat16)
"""
EXPORT = """
import resource, sys, time
from pathlib import Path
from ai_writer.export.cache import onnx_for
from ai_writer.models.formats import recognise
began = time.perf_counter()
path, _ = onnx_for(Path({model!r}), recognise({model!r}), {precision!r}, {cache!r})
print(time.perf_counter() - began, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, path)
"""
OPENING = "林黛玉笑道：“你们在说什么？”\n"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def environment(folder: Path) -> dict[str, str]:
    """The commands' user folders (config, cache) inside --dir, and no model from the environment."""
    env = {k: v for k, v in os.environ.items() if k != "AI_WRITER_MODEL"}
    env.update(XDG_CONFIG_HOME=str(folder / "config"), XDG_CACHE_HOME=str(folder / "cache"))
    return env


def cache_folder(folder: Path) -> str:
    """The ONNX cache the CLI uses with environment(folder)."""
    code = "from ai_writer.cli.options import onnx_cache_dir; print(onnx_cache_dir())"
    return subprocess.run([sys.executable, "-c", code], env=environment(folder), capture_output=True, text=True,
                          check=True).stdout.strip()


def make(folder: Path, name: str) -> Path:
    version, layers, width = LAYOUTS[name]
    path = folder / f"{name}-L{layers}-D{width}.pth"
    if not path.is_file():
        log(f"making {path.name} (random bf16, vocabulary 65536)")
        code = MAKE.format(tests=str(REPO / "tests"), version=version, layers=layers, width=width, path=str(path))
        subprocess.run([sys.executable, "-c", code], check=True)
    return path


def export(folder: Path, model: Path, precision: str) -> tuple[float, float, Path]:
    code = EXPORT.format(model=str(model), precision=precision, cache=cache_folder(folder))
    out = subprocess.run([sys.executable, "-c", code], env=environment(folder), capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"export failed: {out.stderr.strip().splitlines()[-1:]}")
    seconds, peak_mb, path = out.stdout.split()
    return float(seconds), float(peak_mb), Path(path)


def first_character(folder: Path, model: Path, precision: str) -> float:
    """Seconds from launch to the first character on stdout."""
    command = [sys.executable, "-m", "ai_writer", "continue", "--model", str(model), "--precision", precision,
               "--len", "1", "-q", "--seed", "1"]
    began = time.perf_counter()
    child = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=environment(folder))
    child.stdin.write(OPENING.encode())
    child.stdin.close()
    child.stdout.read(1)
    seconds = time.perf_counter() - began
    child.wait()
    return seconds


WRITING = """
import resource, sys, threading, time, psutil
peak_anon = [0]
def sample():  # the anonymous part of the resident memory (what must fit); the rest is mapped file pages
    process = psutil.Process()
    while True:
        info = process.memory_info()
        peak_anon[0] = max(peak_anon[0], info.rss - getattr(info, "shared", 0))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
from ai_writer.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, peak_anon[0] / 2**20, file=sys.stderr)
"""


def writing_peak_mb(folder: Path, model: Path, precision: str) -> tuple[float, float]:
    """(peak RSS, peak anonymous resident memory) in MB of `continue --len 32`. The difference is pages of the
    mapped weights file that ONNX Runtime reads while it repacks them: clean, so the kernel drops them when
    memory runs short (Linux: psutil's `shared` is RssFile + RssShmem)."""
    out = subprocess.run([sys.executable, "-c", WRITING, "continue", "--model", str(model), "--precision", precision,
                          "--len", "32", "-q", "--seed", "1"], input=OPENING.encode(), capture_output=True,
                         env=environment(folder))
    rss, anon = out.stderr.decode().strip().splitlines()[-1].split()
    return float(rss), float(anon)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where the models and exports go (not the repo)")
    parser.add_argument("--models", default="v5-1.5b", help=f"comma-separated, of {', '.join(LAYOUTS)}")
    parser.add_argument("--precisions", default="int8,int4", help="exported, started and measured")
    parser.add_argument("--compare", default="cpu:int8,cpu:int4,torch-cpu:bf16",
                        help="configurations of the speed table (ai-writer bench --compare); empty: no speed table")
    parser.add_argument("--reference", action="store_true", help="the rwkv package's fp32 in the speed table")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--starts", type=int, default=3, help="fresh processes per start time")
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)

    for name in args.models.split(","):
        model = make(args.dir, name)
        size_gb = model.stat().st_size / 1e9
        print(f"\n### {name}: {model.name} ({size_gb:.2f} GB bf16)\n")
        print("| precision | export s | export peak RSS GB | export peak / source | first character s (median, "
              f"min-max of {args.starts}) | peak RSS writing 32 characters GB | of it anonymous GB |")
        print("|---|---|---|---|---|---|---|")
        for precision in args.precisions.split(","):
            log(f"{name}: exporting {precision}")
            seconds, peak_mb, path = export(args.dir, model, precision)
            starts = [first_character(args.dir, model, precision) for _ in range(args.starts)]
            writing, anonymous = writing_peak_mb(args.dir, model, precision)
            print(f"| {precision} | {seconds:.0f} | {peak_mb / 1024:.2f} | {peak_mb * 2**20 / model.stat().st_size:.2f} "
                  f"| {statistics.median(starts):.2f} ({min(starts):.2f}-{max(starts):.2f}) | {writing / 1024:.2f} "
                  f"| {anonymous / 1024:.2f} |",
                  flush=True)
        if not args.compare:
            continue
        command = [sys.executable, "-m", "ai_writer", "bench", "--model", str(model), "--threads", str(args.threads),
                   "--compare", args.compare, "--bandwidth", "--rounds", str(args.rounds), "--decode-tokens",
                   str(args.decode_tokens), "--prefill-tokens", str(args.prefill_tokens), "--repeats", "2"]
        if args.reference:
            command.append("--reference")
        log(f"{name}: speed table: {' '.join(command[3:])}")
        table = subprocess.run(command, env=environment(args.dir), capture_output=True, text=True)
        print("\n" + (table.stdout if table.returncode == 0 else f"bench failed: {table.stderr[-500:]}"), flush=True)


if __name__ == "__main__":
    main()
