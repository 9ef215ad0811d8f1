"""The cost of a write with a steering block as the story grows: tokens read and wall time per write.

    python benchmarks/steering.py [--sizes 1000,10000,100000,1000000] [--block-chars 2000] [--rounds 5]

With the default model: a story of N characters (a synthetic manuscript made here from a fixed
pattern of sentences and paragraphs, no corpus text), already read once as a REPL session
holds it; then a write with a steering block of about --block-chars characters (memory, a few
lore entries whose keys appear in the story, an author's note), as `SteeredReader.start` reads
it: the block into a copy of the snapshot at the start of the last paragraph, then that
paragraph. Measured per size: the tokens fed to the model and the wall time (median of
--rounds, min-max) of (a) a write after a new paragraph (the block read in full) and (b) a
second write from the same place with the block unchanged (cached: the paragraph only), and
the time to write 64 characters after it. The story's own reading is setup, not measured.
Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_writer.backends.open import load_model  # noqa: E402
from ai_writer.generation.generator import Generator  # noqa: E402
from ai_writer.generation.reading import CountingBackend, Reader  # noqa: E402
from ai_writer.resources import default_model_path  # noqa: E402
from ai_writer.story.document import MODEL, WRITER, Document, Span  # noqa: E402
from ai_writer.story.lorebook import Lorebook, entry  # noqa: E402
from ai_writer.story.steering import Steering, SteeredReader  # noqa: E402

NAMES = "林远 苏青 老僧 掌柜 青锋".split()
SENTENCES = ["{a}走进院子，看见{b}正坐在石凳上。", "{b}抬起头来，笑道：“你来得正好。”",
             "{a}道：“今日天色已晚，明日再说罢。”", "两人说了半日的话，{a}方才告辞出去。"]


def manuscript(chars: int) -> str:
    """A synthetic story of `chars` characters: paragraphs of varied sentences naming the characters."""
    parts, total, k = [], 0, 0
    while total < chars:
        a, b = NAMES[k % len(NAMES)], NAMES[(k * 3 + 1) % len(NAMES)]
        paragraph = "".join(s.format(a=a, b=b) for s in SENTENCES[k % 3:]) + "\n"
        parts.append(paragraph)
        total += len(paragraph)
        k += 1
    return "".join(parts)[:chars]


def steering(block_chars: int) -> Steering:
    lore = Lorebook(tuple(entry([name], f"{name}的来历：" + "自幼习武，性情刚直，后来流落江湖。" * 6)
                          for name in NAMES))
    note = "下一段写林远离开京城，风格冷峻，多用短句。"
    lore_chars = sum(len(e.text) + 1 for e in lore.entries)
    memory = ("这是一个关于剑客林远的故事。" * 200)[: max(0, block_chars - lore_chars - len(note) - 2)]
    return Steering(memory=memory, note=note, lorebook=lore)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,1000000")
    parser.add_argument("--block-chars", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = load_model(default_model_path())
    backend = CountingBackend(model.backend)
    reader = Reader(backend, model.tokenizer)
    generator = Generator(backend, model.tokenizer)
    steer = steering(args.block_chars)
    story = manuscript(max(sizes))
    print(f"block: {len(steer.block(story))} characters, {len(model.tokenizer.encode(steer.block(story)))} tokens",
          file=sys.stderr)
    full = Document([Span(WRITER, story)])
    rows = []
    for size in sizes:
        began = time.perf_counter()
        start = full.state_at(size, reader, pin=True)  # setup: the story read once, on from the last size
        print(f"{size} characters read in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        fresh, cached, writing, tokens = [], [], [], []
        for round_ in range(args.rounds):
            document = Document([Span(WRITER, story[:size])])
            document.set_end_state(start)
            document.append(Span(MODEL, "林远道：“走罢。”\n苏青"))  # a new paragraph begun: a new snapshot
            steered = SteeredReader(reader)
            backend.fed = 0
            t = time.perf_counter()
            state = steered.start(document, steer)
            fresh.append(time.perf_counter() - t)
            tokens.append(backend.fed)
            backend.fed = 0
            t = time.perf_counter()
            state = steered.start(document, steer)
            cached.append(time.perf_counter() - t)
            tokens.append(backend.fed)
            t = time.perf_counter()
            "".join(c.text for c in generator.stream(state, max_chars=64, rng=np.random.default_rng(round_)))
            writing.append(time.perf_counter() - t)
        rows.append((size, tokens[0], tokens[1], fresh, cached, writing))
    print("| story characters | tokens read: block + paragraph | tokens read: block unchanged | "
          "write start s (block read) | write start s (cached) | writing 64 characters s |")
    print("|---|---|---|---|---|---|")
    for size, read, again, fresh, cached, writing in rows:
        print(f"| {size:,} | {read} | {again} | {_spread(fresh)} | {_spread(cached)} | {_spread(writing)} |")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"


if __name__ == "__main__":
    main()
