"""Choosing a backend at run time, and saying why.

| backend   | engine                                   | precisions          |
|-----------|------------------------------------------|---------------------|
| cuda      | torch on an NVIDIA GPU                   | fp16 (default), bf16, fp32 |
| dml       | ONNX Runtime, DmlExecutionProvider       | fp16 (default), fp32 |
| cpu       | ONNX Runtime, CPUExecutionProvider       | fp32 (default), int8, int4 |
| torch-cpu | torch on the CPU                         | fp32 (default), bf16 |

`auto` picks cuda when an NVIDIA GPU is usable, else dml when onnxruntime-directml offers its
provider, else cpu (falling back to torch-cpu only when onnxruntime is not installed). The
NVIDIA check looks for the driver before importing torch, and the provider list comes from
onnxruntime, so on a machine without an NVIDIA driver choosing never imports torch. torch is
optional (`pip install 'ai-writer[torch]'`): without it auto never picks cuda or torch-cpu, and
asking for them is a one-line error saying what to install.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from ai_writer.errors import PYTORCH_INSTALL, BackendError, torch_missing

DEFAULT_THREADS_HELP = "all cores (on the cpu backend they sleep when idle, so a busy machine slows writing less)"
BACKENDS = ("auto", "cuda", "dml", "cpu", "torch-cpu")
PRECISIONS = ("fp32", "fp16", "bf16", "int8", "int4")
ALLOWED_PRECISIONS = {
    "cuda": ("fp16", "bf16", "fp32"),
    "dml": ("fp16", "fp32"),
    "cpu": ("fp32", "int8", "int4"),
    "torch-cpu": ("fp32", "bf16"),
}
ONNX_PROVIDERS = {"dml": ["DmlExecutionProvider", "CPUExecutionProvider"], "cpu": ["CPUExecutionProvider"]}
INSTALL_HINT = {
    "cuda": f"an NVIDIA GPU with its driver and a CUDA build of PyTorch ({PYTORCH_INSTALL})",
    "dml": "Windows with a DirectX 12 GPU and onnxruntime-directml (pip install onnxruntime-directml)",
    "cpu": "onnxruntime (pip install onnxruntime)",
    "torch-cpu": f"PyTorch ({PYTORCH_INSTALL})",
}
TORCH_BACKENDS = ("cuda", "torch-cpu")


@dataclass(frozen=True)
class Choice:
    backend: str  # one of BACKENDS but "auto"
    precision: str
    reason: str  # why this backend, in words (shown by `ai-writer info`)
    precision_reason: str = ""  # why this precision, when it was chosen automatically (precision.py)

    @property
    def providers(self) -> list[str]:
        """The ONNX Runtime providers to open a session with, in order of preference."""
        return list(ONNX_PROVIDERS.get(self.backend, []))


def nvidia_driver_present() -> bool:
    """True when the NVIDIA kernel driver is loaded (Linux) or its library is installed (Windows)."""
    if os.path.exists("/proc/driver/nvidia/version"):
        return True
    if sys.platform == "win32":
        return ctypes.util.find_library("nvcuda") is not None
    return False


def cuda_usable() -> bool:
    if not nvidia_driver_present() or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def onnx_providers() -> list[str] | None:
    """The execution providers of the installed onnxruntime, or None when it is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def choose(
    requested: str,
    precision: str | None,
    *,
    cuda_check: Callable[[], bool] = cuda_usable,
    providers: Callable[[], Sequence[str] | None] = onnx_providers,
    has_torch: Callable[[], bool] = torch_installed,
) -> Choice:
    """Resolve `auto` and the default precision; raise BackendError naming what to install."""
    if requested not in BACKENDS:
        raise BackendError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if precision is not None and precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "auto":
        backend, reason = _automatic(cuda_check, providers, has_torch)
    else:
        backend, reason = requested, "asked for with --backend"
        if backend in TORCH_BACKENDS and not has_torch():
            raise torch_missing(f"the {backend} backend")
        available = {
            "cuda": cuda_check,
            "dml": lambda: "DmlExecutionProvider" in (providers() or []),
            "cpu": lambda: "CPUExecutionProvider" in (providers() or []),
            "torch-cpu": has_torch,
        }[backend]
        if not available():
            raise BackendError(f"backend {backend} is not available here: it needs {INSTALL_HINT[backend]}")
    allowed = ALLOWED_PRECISIONS[backend]
    if precision is None:
        precision = allowed[0]
    elif precision not in allowed:
        raise BackendError(f"precision {precision} does not run on backend {backend}; use {' or '.join(allowed)}")
    return Choice(backend, precision, reason)


def _automatic(cuda_check, providers, has_torch) -> tuple[str, str]:
    if cuda_check() and has_torch():  # cuda_usable() asks for torch too; a faked check may not
        return "cuda", "an NVIDIA GPU is usable"
    found = providers()
    if found is not None and "DmlExecutionProvider" in found:
        return "dml", "no usable NVIDIA GPU; the DirectML provider is installed"
    if found is not None and "CPUExecutionProvider" in found:
        return "cpu", "no usable NVIDIA GPU and no DirectML provider: ONNX Runtime on the CPU"
    if has_torch():
        return "torch-cpu", "no usable NVIDIA GPU and onnxruntime is not installed: torch on the CPU"
    raise BackendError(f"no backend can run here: install {INSTALL_HINT['cpu']} or {INSTALL_HINT['torch-cpu']}")
