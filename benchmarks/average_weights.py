"""Average the weights of several checkpoints of one model, optionally scaling its head.

The last step of making the shipped model: checkpoints of the same lineage (the first stage,
and two points of the second) averaged with weights, then the head scaled by a factor below 1,
which softens the logits of a model that has grown overconfident on its training text. Every
input must be a native ai-writer .safetensors of the same shape; the first one's metadata
(config, vocabulary) goes into the output.

    python benchmarks/average_weights.py --out model/default.safetensors \
        stage2.safetensors=0.5 stage2-step1600.safetensors=0.2 stage1.safetensors=0.3 --head-scale 0.93
"""

from __future__ import annotations

import argparse

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def read(path: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    with safe_open(path, "numpy") as f:
        return {key: f.get_tensor(key) for key in f.keys()}, f.metadata() or {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="MODEL=WEIGHT")
    parser.add_argument("--out", required=True)
    parser.add_argument("--head-scale", type=float, default=1.0, help="multiply head.weight (the logits) by this")
    args = parser.parse_args()
    pairs = [(item.rpartition("=")[0], float(item.rpartition("=")[2])) for item in args.inputs]
    if abs(sum(weight for _, weight in pairs) - 1) > 1e-6:
        parser.error("the weights must add up to 1")
    total, metadata, dtypes = None, None, None
    for path, weight in pairs:
        tensors, meta = read(path)
        if total is None:
            total = {key: weight * t.astype(np.float64) for key, t in tensors.items()}
            metadata, dtypes = meta, {key: t.dtype for key, t in tensors.items()}
            continue
        if tensors.keys() != total.keys() or any(tensors[k].shape != total[k].shape for k in total):
            parser.error(f"{path}: not the same model shape as {pairs[0][0]}")
        for key in total:
            total[key] += weight * tensors[key].astype(np.float64)
    total["head.weight"] *= args.head_scale
    save_file({key: value.astype(dtypes[key]) for key, value in total.items()}, args.out, metadata=metadata)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
