"""Write the random RWKV-7 checkpoints used by the speed benchmarks.

    python benchmarks/make_models.py --out-dir DIR [--shapes L6-D512,L12-D768]

Writes DIR/rwkv7-L{L}-D{C}-V{vocab}.pth (head size 64, FFN 4C, default low-rank
sizes, fixed seed) with tests/rwkv7_factory.py. Existing files are kept.
Keep the output outside the repository (e.g. under /tmp): L24-D1024 is 1.3 GB.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.join(REPO_ROOT, "tests")
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

from rwkv7_factory import write_random_rwkv7  # noqa: E402

HEAD_SIZE = 64
SEED = 20250101
DEFAULT_SHAPES = "L6-D512,L12-D768"
_SHAPE_RE = re.compile(r"^L(\d+)-D(\d+)$")


def parse_shape(text: str) -> tuple[int, int]:
    m = _SHAPE_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad shape {text!r}; expected like L12-D768")
    n_layer, n_embd = int(m.group(1)), int(m.group(2))
    if n_layer < 1 or n_embd < HEAD_SIZE or n_embd % HEAD_SIZE:
        raise ValueError(f"bad shape {text!r}: need L >= 1 and D a multiple of {HEAD_SIZE}")
    return n_layer, n_embd


def model_file_name(n_layer: int, n_embd: int, vocab: int) -> str:
    return f"rwkv7-L{n_layer}-D{n_embd}-V{vocab}.pth"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Write random RWKV-7 benchmark checkpoints.")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--shapes", default=DEFAULT_SHAPES,
                    help=f"comma-separated LN-DC list (default {DEFAULT_SHAPES}; "
                         "L24-D1024 also used)")
    ap.add_argument("--vocab", type=int, default=8849)
    args = ap.parse_args(argv)
    if args.vocab < 1:
        ap.error("--vocab must be >= 1")
    try:
        shapes = [parse_shape(s) for s in args.shapes.split(",") if s.strip()]
    except ValueError as e:
        ap.error(str(e))

    os.makedirs(args.out_dir, exist_ok=True)
    for n_layer, n_embd in shapes:
        path = os.path.join(args.out_dir, model_file_name(n_layer, n_embd, args.vocab))
        if os.path.exists(path):
            print(f"exists, skipped: {path}")
            continue
        t0 = time.perf_counter()
        tmp = path + ".partial"
        write_random_rwkv7(tmp, n_layer=n_layer, n_embd=n_embd, head_size=HEAD_SIZE,
                           vocab_size=args.vocab, seed=SEED)
        os.replace(tmp, path)
        size_mb = os.path.getsize(path) / 2**20
        print(f"wrote {path} ({size_mb:.1f} MiB, {time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
