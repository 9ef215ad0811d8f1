"""Choosing a backend at run time.

`auto` picks `cuda` when an NVIDIA GPU is usable and the CPU otherwise. The NVIDIA check
looks for the driver before importing torch, so a machine without one pays nothing for it.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from dataclasses import dataclass

from ..checkpoint import Checkpoint
from ..errors import BackendError

BACKENDS = ("auto", "torch-cpu", "cuda")
PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class Choice:
    backend: str
    precision: str
    reason: str


def nvidia_driver_present() -> bool:
    """True when the NVIDIA kernel driver is loaded (Linux) or its library is installed (Windows)."""
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    if sys.platform == "win32":
        return ctypes.util.find_library("nvcuda") is not None
    return False


def cuda_usable() -> bool:
    if not nvidia_driver_present():
        return False
    import torch

    return torch.cuda.is_available()


def choose(requested: str, precision: str | None, *, cuda_check=cuda_usable) -> Choice:
    """Resolve `auto` and the default precision, saying why."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        if cuda_check():
            backend, reason = "cuda", "an NVIDIA GPU is usable"
        else:
            backend, reason = "torch-cpu", "no usable NVIDIA GPU"
    else:
        backend, reason = requested, "asked for"
    if backend == "cuda" and not cuda_check():
        raise BackendError("backend cuda needs an NVIDIA GPU, its driver and a CUDA build of torch; none is usable here")
    if precision is None:
        precision = "fp16" if backend == "cuda" else "fp32"
    if backend == "torch-cpu" and precision == "fp16":
        raise BackendError("precision fp16 is for GPUs; on the CPU use fp32 or bf16")
    return Choice(backend, precision, reason)


def open_backend(checkpoint: Checkpoint, choice: Choice, threads: int | None = None):
    from .torch_backend import TorchBackend

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return TorchBackend(checkpoint, device="cuda" if choice.backend == "cuda" else "cpu", precision=choice.precision)
