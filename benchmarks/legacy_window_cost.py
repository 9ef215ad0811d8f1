"""What windowing costs: the AI-Writer 2022-02-15 window model against an RNN of the same size.

    OMP_NUM_THREADS=1 python benchmarks/legacy_window_cost.py [--threads 1] [--onnx]

Random weights at the released shapes (the numbers do not matter for timing): generation A
L12-D768, ctx_len 512, vocab 8849 (102 M weights), and a generation-B RNN L12-D768 (L12_ENG,
vocab 8849, 99 M weights), both fp32 on torch's CPU path, one row. Per character, in ms:

- the RNN: one recurrent step, whatever the length of the text;
- generation A as ai-writer runs it: while the text is shorter than the window, one new position
  (the cache of the positions already read); once it is longer, the whole window again;
- generation A as the original run.py ran it: the whole text so far (up to the window) every time;
- with --onnx: the release's .onnx form on ONNX Runtime's CPU provider (the whole padded window).

Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ai_writer.models.aiwriter.window import AConfig  # noqa: E402
from ai_writer.models.aiwriter.rnn import PRESETS, BConfig  # noqa: E402
from ai_writer.backends.aiwriter_torch import RnnTorchBackend, WindowTorchBackend  # noqa: E402

VOCAB = 8849


def random_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Weights ~ N(0, 1/fan_in); vectors and per-position scales near 1, decays in a sane range."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, shape in shapes.items():
        if key == "copy_mask":
            tensors[key] = torch.tril(torch.ones(shape))
        elif len(shape) == 2 and not key.endswith(("time_w", "time_gamma", "time_decay", "time_first")):
            tensors[key] = torch.randn(shape, generator=generator) / shape[-1] ** 0.5
        elif key.endswith("time_decay"):
            tensors[key] = torch.linspace(-5, 1, shape[0]).reshape(shape)
        elif key.endswith("time_first"):
            tensors[key] = torch.full(shape, -1.2)
        else:
            tensors[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
    return tensors


def per_step_ms(backend, state, tokens: list[int]) -> tuple[float, object]:
    """Median ms of one forward per token, fed one after the other from `state`."""
    times = []
    for token in tokens:
        began = time.perf_counter()
        _, state = backend.forward([[token]], state)
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times), state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="characters timed per figure")
    parser.add_argument("--onnx", action="store_true", help="also time the .onnx form on ONNX Runtime")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    text = rng.integers(0, VOCAB, 600).tolist()
    steps = args.steps

    a_config = AConfig(vocab_size=VOCAB, ctx_len=512, n_layer=12, n_head=12, n_embd=768, n_attn=768, ffn_dim=1920,
                       head_qk_dim=256)
    a_tensors = random_tensors(a_config.expected_shapes(), 1)
    window = WindowTorchBackend(a_config, a_tensors)
    preset = PRESETS["L12_ENG"]
    b_config = BConfig(VOCAB, preset.n_layer, preset.n_embd, preset.ctx_len, False, False, preset.b_eps, "L12_ENG")
    rnn = RnnTorchBackend(b_config, random_tensors(b_config.expected_shapes(), 2))
    weights = {name: sum(t.numel() for t in tensors.values()) / 1e6
               for name, tensors in (("a", a_tensors), ("b", rnn.model.w))}

    rows = []
    _, state = rnn.forward([text[:64]], rnn.zero_state(1))
    ms, _ = per_step_ms(rnn, state, text[64:64 + steps])
    rows.append(("RNN (_new_ L12-D768), any length", ms))
    L = a_config.ctx_len
    for at in (64, 256, L - steps):
        _, state = window.forward([text[:at]], window.zero_state(1))
        ms, _ = per_step_ms(window, state, text[at:at + steps])
        rows.append((f"2022-02-15, ai-writer, character {at} (cached window)", ms))
    _, state = window.forward([text[:L]], window.zero_state(1))
    ms, _ = per_step_ms(window, state, text[L:L + steps])
    rows.append((f"2022-02-15, ai-writer, past character {L} (window slides: re-read)", ms))
    for at in (64, 256, L):
        times = []
        for i in range(max(2, steps // 2)):
            began = time.perf_counter()
            window.forward([text[i:i + at]], window.zero_state(1))
            times.append((time.perf_counter() - began) * 1000)
        rows.append((f"2022-02-15, original run.py's way, character {at} (re-read all)", statistics.median(times)))
    if args.onnx:
        rows.extend(onnx_rows(a_tensors, text, steps, args.threads))

    rnn_ms = rows[0][1]
    print(f"{args.threads} thread(s); weights: 2022-02-15 {weights['a']:.0f} M, RNN {weights['b']:.0f} M; "
          f"median of {steps} characters each\n")
    print("| model, position | ms per character | x RNN |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} | {ms / rnn_ms:.1f} |")


def onnx_rows(a_tensors, text, steps, threads):
    from ai_writer.backends.aiwriter_onnx import WindowOnnxBackend
    from ai_writer.export.aiwriter import export_window_onnx

    with tempfile.TemporaryDirectory() as folder:
        pth, onnx = Path(folder) / "a.pth", Path(folder) / "a.onnx"
        torch.save(a_tensors, pth)
        export_window_onnx(pth, onnx)
        backend = WindowOnnxBackend(onnx, backend="cpu", providers=["CPUExecutionProvider"], threads=threads)
        _, state = backend.forward([text[:64]], backend.zero_state(1))
        ms, _ = per_step_ms(backend, state, text[64:64 + steps])
    return [("2022-02-15 .onnx on ONNX Runtime CPU, any position (padded window)", ms)]


if __name__ == "__main__":
    main()
