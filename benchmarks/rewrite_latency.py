"""Rewrite ("换个写法") latency against the story's length: it should be flat.

    python benchmarks/rewrite_latency.py [--sizes 1000,10000,100000] [--len 100] [--repeats 5] [--threads 1]

For each size, a story of that many characters is read once (timed separately: that is the
prefill a rewrite must not repeat), the model writes one paragraph of --len characters (line
breaks do not end it, so every rewrite writes the same amount), and then `Repl.rewrite` runs
--repeats times, exactly as /rewrite does in the REPL, autosave included. Prints the median
rewrite time and the tokens fed to the model per rewrite, per size.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ai_writer.story.document import WRITER, Span
from ai_writer.backends.open import load_model
from ai_writer.export.cache import default_cache_dir
from ai_writer.resources import default_model_path
from ai_writer.repl.session import Repl
from ai_writer.repl.writer import LocalWriter
from ai_writer.repl.ui import PlainUI
from ai_writer.generation.sampler import SamplerSettings

PARAGRAPH = "林黛玉笑道：“你们在说什么？”宝玉听了，忙走过来，只见众人都在那里说笑，便也坐下了。\n"


class QuietUI(PlainUI):
    def story(self, text, author):
        pass

    def info(self, text):
        pass


def story_of(n: int) -> str:
    text = "\n" + PARAGRAPH * (n // len(PARAGRAPH) + 1)
    return text[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--len", dest="length", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    cache = default_cache_dir()
    loaded = load_model(args.model, backend="cpu", threads=args.threads, onnx_cache=cache)
    print(f"{loaded.describe()}; threads {args.threads}; paragraph {args.length} characters", file=sys.stderr)
    print("| story (characters) | prefill once (s) | rewrite median (s) | min-max (s) | tokens fed per rewrite |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for size in (int(s) for s in args.sizes.split(",")):
            repl = Repl(LocalWriter(loaded), QuietUI(), settings=SamplerSettings(), length=args.length, seed=1,
                        session_path=Path(folder) / f"{size}.json", paragraph=False)
            repl.doc.append(Span(WRITER, story_of(size)))
            began = time.perf_counter()
            repl.writer.read(repl.doc)
            prefill = time.perf_counter() - began
            repl.write_next()
            times, fed = [], []
            for _ in range(args.repeats):
                before, began = repl.writer.backend.fed, time.perf_counter()
                repl.rewrite()
                times.append(time.perf_counter() - began)
                fed.append(repl.writer.backend.fed - before)
            print(f"| {size:,} | {prefill:.2f} | {statistics.median(times):.3f} | {min(times):.3f}-{max(times):.3f} "
                  f"| {statistics.median(fed):.0f} |", flush=True)


if __name__ == "__main__":
    main()
