"""How much int8 and int4 cost in accuracy, on trained weights: held-out bits per character and top-1 agreement.

    python benchmarks/quantization_accuracy.py [--model model/default.safetensors] [--chars 1000]
        [--variants fp32,int8:32,int8:128,int4:32:8,int4:64:8,int4:128:8,int4:64:4,int4:128:4]

Each variant is exported (int8:BLOCK sets the 8-bit block size, int4:BLOCK:HEAD_BITS the 4-bit block
size, the head's bits and optionally the low-rank matrices' bits, 0 or absent: float) and
run on ONNX Runtime: bits per character on the first --chars held-out characters of each novel in
the corpus (corpus/zh-hans beside the checkout, the held-out rule of `ai-writer eval`), and the
share of steps along fp32's greedy path (200 steps after each of 5 openings) where the variant's
most likely character is fp32's. Prints a markdown table (bpc, its change against fp32, agreement,
the export's weight bytes).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from ai_writer.backends.open import load_model
from ai_writer.export import forms
from ai_writer.export.onnx import export_file
from ai_writer.resources import default_model_path
from ai_writer.training.corpus import join_lines, read_lines, split_lines
from ai_writer.training.evaluate import bits_per_character

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "zh-hans"
OPENINGS = ("林黛玉笑道：", "却说曹操", "话说宝玉", "行者道：", "那妇人")


def held_out(chars: int) -> str:
    return "".join(join_lines(split_lines(read_lines(path))[1])[:chars] for path in sorted(CORPUS.glob("*.txt")))


def greedy_path(backend, tokenizer, opening: str, steps: int) -> list[np.ndarray]:
    """fp32's logits along its own greedy path, and the path."""
    logits, state = backend.forward([tokenizer.encode("\n" + opening)], backend.zero_state(1))
    path, rows = [], []
    for _ in range(steps):
        rows.append(logits[0])
        token = int(np.argmax(logits[0]))
        path.append(token)
        logits, state = backend.forward([[token]], state)
    return path, rows


def agreement(backend, tokenizer, opening: str, path: list[int], reference: list[np.ndarray]) -> int:
    logits, state = backend.forward([tokenizer.encode("\n" + opening)], backend.zero_state(1))
    same = 0
    for token, row in zip(path, reference):
        same += int(np.argmax(logits[0]) == np.argmax(row))
        logits, state = backend.forward([[token]], state)
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=default_model_path())
    parser.add_argument("--chars", type=int, default=1000, help="held-out characters per novel")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--variants", default="fp32,int8:32,int8:128,int4:32:8,int4:64:8,int4:128:8,int4:64:4,"
                                               "int4:128:4")
    args = parser.parse_args()
    text = held_out(args.chars)
    rows, reference = [], None
    with tempfile.TemporaryDirectory() as folder:
        for variant in args.variants.split(","):
            precision, *knobs = variant.split(":")
            if precision == "int8" and knobs:
                forms.INT8_BLOCK = int(knobs[0])
            elif knobs:
                forms.INT4_BLOCK, forms.INT4_HEAD_BITS = int(knobs[0]), int(knobs[1])
                forms.INT4_LORA_BITS = int(knobs[2]) if len(knobs) > 2 else 0
            out = Path(folder) / f"{variant.replace(':', '_')}.onnx"
            export_file(args.model, out, precision, kind="safetensors" if args.model.suffix == ".safetensors" else "pth")
            size = sum(p.stat().st_size for p in Path(folder).glob(out.name + "*"))
            loaded = load_model(out, threads=1)
            bpc, n, _ = bits_per_character(loaded.backend, loaded.tokenizer, text)
            if reference is None:
                reference = (bpc, [greedy_path(loaded.backend, loaded.tokenizer, o, args.steps) for o in OPENINGS])
            agree = sum(agreement(loaded.backend, loaded.tokenizer, o, path, ref)
                        for o, (path, ref) in zip(OPENINGS, reference[1]))
            rows.append((variant, bpc, (bpc / reference[0] - 1) * 100, agree / (len(OPENINGS) * args.steps), size))
            print(f"{variant}: {bpc:.4f} bits/char over {n} characters", flush=True)
    print(f"\n{args.model.name}: {len(text)} held-out characters ({args.chars} of each novel); "
          f"top-1 agreement along fp32's greedy path, {len(OPENINGS)} openings x {args.steps} steps\n")
    print("| variant (int8:block, int4:block:head bits:low-rank bits) | bits/char | vs fp32 | top-1 agreement | export MB |")
    print("|---|---|---|---|---|")
    for variant, bpc, change, agree, size in rows:
        print(f"| {variant} | {bpc:.4f} | {change:+.2f} % | {agree:.1%} | {size / 1e6:.1f} |")


if __name__ == "__main__":
    main()
