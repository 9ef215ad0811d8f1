"""State files: a state-tuned RWKV-5.2/6/7 start, the "style preset" RWKV Runner users apply.

State tuning trains only each layer's initial wkv state and saves it as `blocks.{i}.att.time_state`,
[H, N, N] per layer, in the training kernels' layout [value dim, key dim] (the `rwkv` package
transposes it for RWKV-5.2/6, whose states it keeps as [key dim, value dim], as ai-writer's
engines do; RWKV-7's states are [value dim, key dim] already). A story then starts from that
state instead of zeros. Read torch-free: a `.pth` through the restricted unpickler (nothing in
the file runs), a `.safetensors` with numpy.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ai_writer.errors import ModelFileError
from ai_writer.models.config import ModelConfig
from ai_writer.models.version import NAMES

KEY = re.compile(r"blocks\.(\d+)\.att\.time_state")


def read_state_file(path: str | os.PathLike, config: ModelConfig) -> np.ndarray:
    """The initial wkv state of every layer, (L, H, N, N) float32, in the engines' layout for `config`'s
    version; a one-line ModelFileError when the file is not a state for this model."""
    from ai_writer.models.formats import recognise
    from ai_writer.models.tensors import open_tensors

    path = Path(path)
    kind = recognise(path)
    if kind in ("safetensors", "pth"):
        source = open_tensors(path, kind)
        shapes, read = source.shapes, source.read
    else:
        raise ModelFileError(f"{path}: not a state file (a .pth or .safetensors of blocks.N.att.time_state)")
    L, H, N = config.n_layer, config.n_head, config.head_size
    layers = {int(m.group(1)): key for key in shapes if (m := KEY.fullmatch(key))}
    if not layers:
        raise ModelFileError(f"{path}: not a state file: it has no blocks.N.att.time_state tensors")
    if sorted(layers) != list(range(L)):
        raise ModelFileError(f"{path}: this state has {len(layers)} layers (0-{max(layers)}), the model "
                             f"{config.describe().split(' (')[0]} has {L}: it was tuned for another model")
    for i, key in layers.items():
        if tuple(shapes[key]) != (H, N, N):
            raise ModelFileError(f"{path}: {key} has shape {list(shapes[key])}, the model needs [{H}, {N}, {N}]: "
                                 "it was tuned for another model")
    state = np.stack([read(layers[i]) for i in range(L)]).astype(np.float32)  # (L, H, N, N)
    if not np.isfinite(state).all():
        raise ModelFileError(f"{path}: the state holds values that are not finite numbers")
    if config.version in (5, 6):
        state = np.ascontiguousarray(state.transpose(0, 1, 3, 2))  # [value, key] -> the engines' [key, value]
    elif config.version != 7:
        raise ModelFileError(f"{path}: state files are for RWKV-5.2, 6 and 7, not {NAMES.get(config.version)}")
    return state
