"""The torch engine: RWKV-7, RWKV-6 or RWKV-5.2 on the CPU (fp32, bf16) or an NVIDIA GPU (fp16, bf16, fp32)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

from ai_writer.backends.base import PREFILL_SEGMENT, check_tokens
from ai_writer.models.checkpoint import OPTIONAL_LAYER0_KEYS, Checkpoint
from ai_writer.models.rwkv.rwkv7 import RWKV7, RWKV7State

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def model_class(version: int) -> type[torch.nn.Module]:
    """The torch module of an architecture version (config.version)."""
    if version == 7:
        return RWKV7
    if version == 6:
        from ai_writer.models.rwkv.rwkv6 import RWKV6

        return RWKV6
    from ai_writer.models.rwkv.rwkv5 import RWKV5

    return RWKV5


class TorchBackend:
    def __init__(self, checkpoint: Checkpoint, device: str = "cpu", precision: str = "fp32"):
        self.name = "cuda" if device.startswith("cuda") else "torch-cpu"
        self.precision = precision
        self.config = checkpoint.config
        self.device = torch.device(device)
        dtype = DTYPES[precision]
        with torch.device("meta"):
            model = model_class(self.config.version)(self.config)
        weights = {
            key: tensor.to(device=self.device, dtype=dtype)  # no copy when it already matches: mmap stays shared
            for key, tensor in checkpoint.tensors.items()
            if key not in OPTIONAL_LAYER0_KEYS
        }
        model.load_state_dict(weights, strict=True, assign=True)
        del weights  # else every converted (fp32) weight stays alive beside its oneDNN-packed copy
        self.model = model.prepare_for_inference()
        self.initial_wkv: np.ndarray | None = None

    def zero_state(self, batch_size: int) -> RWKV7State:
        """The state of `batch_size` empty texts: zeros, or a state file's tuned start (start_from)."""
        state = self.model.zero_state(batch_size)
        if self.initial_wkv is not None:
            wkv = torch.as_tensor(self.initial_wkv, device=self.device)[:, None].expand_as(state.wkv).clone()
            state = dataclasses.replace(state, wkv=wkv)
        return state

    def start_from(self, wkv: np.ndarray) -> None:
        """Start every text from this wkv state, (L, H, N, N) in the engine's layout (models/state_file.py)."""
        self.initial_wkv = np.asarray(wkv, dtype=np.float32)

    def forward(self, token_ids: Sequence[Sequence[int]] | np.ndarray, state: RWKV7State):
        tokens = torch.as_tensor(check_tokens(token_ids, state.batch_size, self.config.vocab_size), device=self.device)
        with torch.inference_mode():
            for start in range(0, tokens.shape[1], PREFILL_SEGMENT):
                logits, state = self.model(tokens[:, start : start + PREFILL_SEGMENT], state)
        return logits.float().cpu().numpy(), state
