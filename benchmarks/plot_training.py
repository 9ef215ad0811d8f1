"""Draw the loss curve of a training run from its checkpoint (OUT.train.pt) as a PNG.

    pip install matplotlib
    python benchmarks/plot_training.py RUN.train.pt [MORE.train.pt ...] --out benchmarks/loss_curve.png

Each run's evaluations ("history": step, held-out loss, mean training loss since the previous
evaluation) are plotted in bits per character. Several checkpoints are drawn one after the
other on one step axis, for a model trained in stages (a run, then a fine-tuning run from it).
"""

from __future__ import annotations

import argparse
import math

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--out", default="benchmarks/loss_curve.png")
    parser.add_argument("--title", default="ai-writer default model: training on corpus/zh-hans")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    offset = 0
    for index, path in enumerate(args.checkpoints):
        state = torch.load(path, map_location="cpu", weights_only=True)
        history = state["history"]
        steps = [offset + h["step"] for h in history]
        held_out = [h["val_loss"] / math.log(2) for h in history]
        label = f"stage {index + 1}" if len(args.checkpoints) > 1 else ""
        axes.plot(steps, held_out, marker="o", markersize=3, label=f"held-out {label}".strip())
        trained = [(s, h["train_loss"] / math.log(2)) for s, h in zip(steps, history) if h.get("train_loss")]
        if trained:
            axes.plot(*zip(*trained), linestyle="--", label=f"training (mean since last point) {label}".strip())
        offset = steps[-1] if steps else offset
        print(f"{path}: {len(history)} evaluations, last held-out {held_out[-1]:.4f} bits/char at step {steps[-1]}")
    axes.set_xlabel("step (16 windows of 256 characters)")
    axes.set_ylabel("bits per character")
    axes.set_title(args.title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
