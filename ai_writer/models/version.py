"""Which RWKV architecture a checkpoint holds, read from its key names and tensor shapes.

The RWKV releases store no version number, and the `rwkv` package cannot tell RWKV-7 apart
from RWKV-5 without an environment switch. The layouts differ in tensors only one version has
(all per layer, read from layer 0):

| version | tells it apart |
|---|---|
| RWKV-7 ("x070") | `att.r_k` [H, N] (with `att.w0`, `att.a0`, the `att.x_?` lerps) |
| RWKV-6 ("x060") | `att.time_maa_x` and the other data-dependent lerps, `att.time_faaaa` [H, N] |
| RWKV-5.2 ("x052") | `att.ln_x`, `att.gate.weight`, `att.time_decay` [H, N] with N > 1 |
| RWKV-5.0 / 5.1 | `att.ln_x` without a gate (5.0), or a gate with a [H, 1] decay (5.1): previews, refused |
| RWKV-4 | `att.time_first` and a [C] `att.time_decay`, no `att.ln_x`: refused |

Torch-free: it reads shapes only, so the ONNX path can use it.
"""

from __future__ import annotations

from typing import Mapping

from ai_writer.errors import ModelFileError

SUPPORTED = (5, 6, 7)  # 5 stands for RWKV-5.2, the only RWKV-5 that was released as world models
NAMES = {5: "RWKV-5.2", 6: "RWKV-6", 7: "RWKV-7"}
SUPPORTED_TEXT = "ai-writer runs RWKV-7, RWKV-6 and RWKV-5.2 checkpoints"


def detect_version(shapes: Mapping[str, tuple[int, ...]], source: str) -> int:
    """5 (RWKV-5.2), 6 or 7; a one-line ModelFileError for anything else."""
    att = "blocks.0.att."
    if "emb.weight" not in shapes or "blocks.0.ln1.weight" not in shapes:
        raise ModelFileError(
            f"{source}: not an RWKV-7 checkpoint, nor an RWKV-6 or RWKV-5.2 one (no tensor "
            f"{'emb.weight' if 'emb.weight' not in shapes else 'blocks.0.ln1.weight'!r})"
        )
    if att + "r_k" in shapes:
        return 7
    if att + "time_maa_x" in shapes:
        return 6
    decay = tuple(shapes.get(att + "time_decay", ()))
    if att + "ln_x.weight" in shapes:
        if att + "gate.weight" not in shapes:
            raise ModelFileError(f"{source}: an RWKV-5.0 preview checkpoint, which is not supported; {SUPPORTED_TEXT}")
        if len(decay) == 2 and decay[1] > 1:
            return 5
        raise ModelFileError(f"{source}: an RWKV-5.1 preview checkpoint, which is not supported; {SUPPORTED_TEXT}")
    if att + "time_first" in shapes and len(decay) == 1:
        raise ModelFileError(f"{source}: an RWKV-4 checkpoint, which is not supported; {SUPPORTED_TEXT}")
    raise ModelFileError(f"{source}: an RWKV checkpoint of an unknown layout (layer 0 has no att.r_k, "
                         f"att.time_maa_x or att.ln_x); {SUPPORTED_TEXT}")
