"""Prepare a character model for fine-tuning on modern punctuation: copy the quote rows, set the flag.

The first step of giving the shipped model modern punctuation (model/README.md): the old
e-texts quote with 「」『』 about four times as often as with “”‘’, so the model knows the
corner brackets far better. This copies the embedding and head rows of 「 to “, 」 to ”,
『 to ‘ and 』 to ’ (the old rows stay, so an opening in the old style still reads as before)
and marks the model "punctuation": "modern" in its metadata (text/punctuation.py: it then
never writes the old marks and modernizes openings). Then fine-tune it:

    python benchmarks/modernize_model.py model/default.safetensors --out remapped.safetensors
    ai-writer train corpus/zh-hans/*.txt --punctuation modern --init-from remapped.safetensors ...

The input must be a native ai-writer .safetensors with a character vocabulary.
"""

from __future__ import annotations

import argparse
import json

from safetensors import safe_open
from safetensors.numpy import save_file

ROWS = {"「": "“", "」": "”", "『": "‘", "』": "’"}  # copied from -> to
ROW_TENSORS = ("emb.weight", "head.weight")  # (vocab, n_embd): one row per character


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a native ai-writer .safetensors with a character vocabulary")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with safe_open(args.model, "numpy") as f:
        tensors, metadata = {key: f.get_tensor(key) for key in f.keys()}, dict(f.metadata() or {})
    if "vocab" not in metadata:
        parser.error(f"{args.model}: not an ai-writer model with a character vocabulary")
    table = json.loads(metadata["vocab"])
    ids = {char: int(i) for i, char in table.items()}
    for old, new in ROWS.items():
        if old not in ids or new not in ids:
            print(f"skipped {old} -> {new}: not both in the vocabulary")
            continue
        for key in ROW_TENSORS:
            tensors[key][ids[new]] = tensors[key][ids[old]]
        print(f"copied the rows of {old} (id {ids[old]}) to {new} (id {ids[new]})")
    metadata["punctuation"] = "modern"
    save_file(tensors, args.out, metadata=metadata)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
