"""What banned phrases and the loop guard cost: rewinds per 10,000 characters, and decode speed.

With the shipped model on the CPU backend (ONNX Runtime, fp32), one row at a time. First a plain
run (no guards) finds the model's 20 favourite phrases, as tests/test_guards.py does: the most
frequent 2-4 character runs of Chinese characters, none inside another. Then four configurations
(no guards; loop guard only; the 20 phrases banned; both) write the same openings with the same
seeds in interleaved rounds, so a noisy neighbour slows them alike. Characters/s counts the final
text only (what a rewind undid is the cost); the table gives medians and (min-max) over rounds.
Last, how often the loop guard undoes a loop when the model writes greedily (temperature 0).

    python benchmarks/guards.py --rounds 3 --chars 1000 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # helpers.favourite_phrases

import numpy as np  # noqa: E402

from ai_writer.backends.open import load_model  # noqa: E402
from ai_writer.generation.generator import Generator, RunResult  # noqa: E402
from ai_writer.generation.guards import Guards  # noqa: E402
from ai_writer.generation.sampler import SamplerSettings  # noqa: E402
from ai_writer.resources import default_model_path  # noqa: E402
from ai_writer.text.cleanup import clean_opening  # noqa: E402
from helpers import favourite_phrases  # noqa: E402

OPENINGS = ["林黛玉笑道：“你们在说什么？”", "却说那日宝玉", "行者道：「师父，", "话说"]


def write(generator: Generator, opening: str, chars: int, seed: int) -> tuple[RunResult, float]:
    start = generator.prefill(clean_opening(opening))
    results: list[RunResult] = []
    began = time.perf_counter()
    for _ in generator.stream(start, max_chars=chars, rng=np.random.default_rng(seed), results=results):
        pass
    return results[0], time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chars", type=int, default=1000, help="characters per opening and round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    loaded = load_model(default_model_path(), backend="cpu", threads=args.threads)
    settings = SamplerSettings()
    plain = Generator(loaded.backend, loaded.tokenizer, settings, Guards(loop_guard=False))
    found = "\n".join(write(plain, o, args.chars, 1000 + i)[0].text for i, o in enumerate(OPENINGS))
    bans = tuple(favourite_phrases(found, 20))
    print(f"banned ({len(bans)}): {' '.join(bans)}", file=sys.stderr)
    configs = {"no guards": Guards(loop_guard=False), "loop guard": Guards(),
               "20 bans": Guards(bans, loop_guard=False), "20 bans + loop guard": Guards(bans)}
    speed = {name: [] for name in configs}
    rewinds = {name: [0, 0, 0] for name in configs}  # rewinds, of them for loops, characters
    for round_ in range(args.rounds):
        for name, guards in configs.items():
            generator = Generator(loaded.backend, loaded.tokenizer, settings, guards)
            chars = seconds = 0.0
            for i, opening in enumerate(OPENINGS):
                result, took = write(generator, opening, args.chars, 100 * round_ + i)
                assert not any(b in result.text for b in guards.bans)
                chars, seconds = chars + len(result.text), seconds + took
                counts = rewinds[name]
                counts[0], counts[1], counts[2] = (counts[0] + result.rewinds, counts[1] + result.loop_rewinds,
                                                   counts[2] + len(result.text))
            speed[name].append(chars / seconds)
            print(f"round {round_ + 1} {name}: {chars / seconds:.0f} characters/s", file=sys.stderr)

    greedy = Generator(loaded.backend, loaded.tokenizer, SamplerSettings(temperature=0), Guards())
    greedy_runs = [write(greedy, opening, args.chars, 0)[0] for opening in OPENINGS]

    base = statistics.median(speed["no guards"])
    print(f"shipped model, cpu fp32, {args.threads} thread(s), {len(OPENINGS)} openings x {args.chars} characters, "
          f"medians of {args.rounds} interleaved rounds (min-max):\n")
    print("| guards | characters/s | vs no guards | rewinds / 10,000 characters (for loops) |")
    print("|---|---|---|---|")
    for name in configs:
        values = speed[name]
        total, loops, chars = rewinds[name]
        print(f"| {name} | {statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f}) "
              f"| {statistics.median(values) / base:.2f} | {1e4 * total / chars:.1f} ({1e4 * loops / chars:.1f}) |")
    per_10k = 1e4 * sum(r.loop_rewinds for r in greedy_runs) / sum(len(r.text) for r in greedy_runs)
    print(f"\nloop guard at temperature 0 (greedy), the same openings: {per_10k:.1f} rewinds / 10,000 characters")


if __name__ == "__main__":
    main()
