"""RWKV-5.2, RWKV-6 and RWKV-7 side by side in one run: ai-writer against the official rwkv package.

For each version a random L12-D768 checkpoint with the world vocabulary (65,536) is written once
(tests/rwkv_world_factory.py, tests/rwkv7_factory.py), then `ai_writer.bench.compare` measures
decode and prefill tokens/s and peak RSS of ai-writer (ONNX Runtime cpu fp32, torch-cpu fp32)
and of the package (fp32, CPU; cli/bench_reference.py detects the version and sets RWKV_V7_ON only
for RWKV-7), each configuration in a fresh process, rounds interleaved. Prints one markdown table
per version and writes them to --out.

    python benchmarks/world_versions.py --threads 2 --rounds 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from ai_writer.bench.compare import compare, table  # noqa: E402

VERSIONS = {5: "RWKV-5.2", 6: "RWKV-6", 7: "RWKV-7"}


def make_model(folder: Path, version: int, n_layer: int, n_embd: int, vocab: int) -> Path:
    path = folder / f"rwkv{version}-L{n_layer}-D{n_embd}-V{vocab}.pth"
    if not path.is_file():
        if version == 7:
            from rwkv7_factory import write_random_rwkv7

            write_random_rwkv7(path, n_layer=n_layer, n_embd=n_embd, head_size=64, vocab_size=vocab, seed=1)
        else:
            from rwkv_world_factory import write_random_rwkv

            write_random_rwkv(path, version=version, n_layer=n_layer, n_embd=n_embd, vocab_size=vocab, seed=1)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--versions", default="5,6,7")
    parser.add_argument("--configs", default="cpu:fp32,torch-cpu:fp32")
    parser.add_argument("--models", type=Path, default=ROOT / "benchmarks" / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "world_versions.md")
    args = parser.parse_args()

    args.models.mkdir(parents=True, exist_ok=True)
    configs = [tuple(item.split(":")) for item in args.configs.split(",")]
    sections = [f"`python benchmarks/world_versions.py --threads {args.threads} --rounds {args.rounds} "
                f"--decode-tokens {args.decode_tokens} --prefill-tokens {args.prefill_tokens} "
                f"--repeats {args.repeats}`; medians (min-max over rounds of per-process medians)\n"]
    for version in map(int, args.versions.split(",")):
        model = make_model(args.models, version, 12, 768, 65536)
        series = compare(model, configs, reference=True, threads=args.threads, rounds=args.rounds,
                         decode_tokens=args.decode_tokens, prefill_tokens=args.prefill_tokens, repeats=args.repeats,
                         log=lambda line: print(line, file=sys.stderr, flush=True))
        section = (f"### {VERSIONS[version]} L12-D768, vocab 65,536\n\n"
                   + table(series, config=None, bandwidth_gbps=None))
        print(section + "\n", flush=True)
        sections.append(section)
    args.out.write_text("\n\n".join(sections) + "\n")


if __name__ == "__main__":
    main()
