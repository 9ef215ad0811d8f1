"""PPMd (variant H, as 7-Zip implements it) as a baseline for the held-out bits per character.

PPMd is an adaptive compressor: it learns as it codes, so it is measured the way it would see
the held-out text after the training text,

    bits/char = (bits(train_text + val_text) - bits(train_text)) / characters in val_text

that is, the cost of the held-out text with the whole training text as prior context. The
texts are rebuilt from the files with the project's split rule (ai_writer.training.corpus.split_lines
and join_lines: the last ceil(5 %) of each file's lines held out, every line followed by
"\\n", files joined in the order given), and checked against load_corpus, so the held-out
characters are exactly the ones `ai-writer eval` scores (173,063 for the ten-novel corpus).
PPMd codes the UTF-8 bytes (about 3 per Chinese character), so its order counts bytes, not
characters. Characters that the model's vocabulary maps to the unknown id are coded as
themselves here.

Each text is compressed by the real `7z` (package p7zip-full) into a fresh 7z archive with
`-m0=PPMd:o=ORDER:mem=MEM`, and the size of the PPMd stream is read from the archive listing
("Packed Size", without the container's headers). The text is piped through stdin: given a
file (or a seekable stdin), 7-Zip shrinks the model memory to about 16 times the input size
(256 MB here), whatever mem says; through a pipe it keeps the memory asked for. The listing's
"Method" line (e.g. PPMD:o8:mem30) is checked to confirm the order and memory used.

    python benchmarks/ppmd_baseline.py                      # orders 2-16,18,20,24,28,32, mem 1g
    python benchmarks/ppmd_baseline.py --orders 4,6,8 --mem 2g
"""

from __future__ import annotations

import argparse
import glob
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ai_writer.training.corpus import join_lines, load_corpus, read_lines, split_lines  # noqa: E402

DEFAULT_FILES = str(ROOT.parent / "shared" / "corpus" / "zh-hans" / "*.txt")


def split_texts(files: list[str]) -> tuple[str, str]:
    """(training text, held-out text), built as ai_writer.training.corpus builds them."""
    train, val = [], []
    for path in files:
        train_lines, val_lines = split_lines(read_lines(path))
        train.append(join_lines(train_lines))
        val.append(join_lines(val_lines))
    return "".join(train), "".join(val)


def mem_exponent(mem: str) -> int:
    """'1g' -> 30: the log2 of the memory size, as 7-Zip writes it in the method name."""
    value, unit = re.fullmatch(r"(\d+)([bkmg]?)", mem.lower()).groups()
    size = int(value) << {"": 0, "b": 0, "k": 10, "m": 20, "g": 30}[unit]
    assert size & (size - 1) == 0, "give a power of two, e.g. 512m, 1g, 2g"
    return size.bit_length() - 1


def ppmd_bytes(data: bytes, order: int, mem: str, workdir: Path) -> int:
    """Size in bytes of the PPMd stream that 7z makes of `data`."""
    archive = workdir / "out.7z"
    archive.unlink(missing_ok=True)
    command = ["7z", "a", "-t7z", f"-m0=PPMd:o={order}:mem={mem}", "-mx=9", "-mmt=1", "-bd", "-y",
               "-sitext.txt", str(archive)]
    subprocess.run(command, input=data, check=True, stdout=subprocess.DEVNULL)  # stdin is a pipe
    listing = subprocess.run(["7z", "l", "-slt", str(archive)], capture_output=True, text=True, check=True).stdout
    method = re.search(r"^Method = (PPMD:\S+)$", listing, re.M).group(1)
    expected = f"PPMD:o{order}:mem{mem_exponent(mem)}"
    assert method == expected, f"7z used {method}, not {expected}"
    assert int(re.search(r"^Size = (\d+)$", listing, re.M).group(1)) == len(data)
    return int(re.search(r"^Packed Size = (\d+)$", listing, re.M).group(1))


def parse_orders(text: str) -> list[int]:
    """'2-16,20,24' -> [2, 3, ..., 16, 20, 24]"""
    orders = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        orders += range(int(lo), int(hi or lo) + 1)
    return orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", help=f"corpus files (default {DEFAULT_FILES})")
    parser.add_argument("--orders", default="2-16,18,20,24,28,32", help="PPMd model orders in bytes (2-32), e.g. 4,6,8")
    parser.add_argument("--mem", default="1g", help="PPMd model memory, a power of two (default 1g)")
    args = parser.parse_args()
    if shutil.which("7z") is None:
        sys.exit("7z not found: install it (apt-get install p7zip-full)")
    files = args.files or sorted(glob.glob(DEFAULT_FILES))

    t0 = time.perf_counter()
    train_text, val_text = split_texts(files)
    corpus = load_corpus(files, min_char_count=5)
    assert (len(train_text), len(val_text)) == (len(corpus.train), len(corpus.val)), "split differs from ai_writer"
    train, both = train_text.encode("utf-8"), (train_text + val_text).encode("utf-8")
    n_val = len(val_text)
    print(f"{len(files)} files: train {len(train_text):,} chars ({len(train):,} bytes), held-out {n_val:,} chars "
          f"({len(both) - len(train):,} bytes); 7z PPMd, mem {args.mem}", flush=True)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for order in parse_orders(args.orders):
            t1 = time.perf_counter()
            b_train = ppmd_bytes(train, order, args.mem, Path(tmp))
            b_both = ppmd_bytes(both, order, args.mem, Path(tmp))
            b_alone = ppmd_bytes(val_text.encode("utf-8"), order, args.mem, Path(tmp))
            bpc = 8 * (b_both - b_train) / n_val
            alone = 8 * b_alone / n_val
            results.append((order, bpc, alone))
            print(f"order {order:2d}: {bpc:.4f} bits/char after the training text  ({alone:.4f} alone; "
                  f"train {b_train:,} B, train+val {b_both:,} B; {time.perf_counter() - t1:.1f} s)", flush=True)
    best = min(results, key=lambda r: r[1])
    print(f"best: order {best[0]}, {best[1]:.4f} bits/char; wall time {time.perf_counter() - t0:.1f} s")
    print("\n| order | bits/char after train | bits/char alone |\n|---|---|---|")
    for order, bpc, alone in results:
        mark = f"**{bpc:.4f}** (best)" if order == best[0] else f"{bpc:.4f}"
        print(f"| {order} | {mark} | {alone:.4f} |")


if __name__ == "__main__":
    main()
