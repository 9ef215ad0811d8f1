"""Whether this CPU multiplies bf16 matrices in hardware: what makes torch-cpu in bf16 fast or slow.

torch on the CPU reads text (prefill: many tokens through each matrix at once) quickly in bf16
only with bf16 matrix instructions; without them every product is widened as it goes. On the
RWKV-7 1.5B layout (2 threads, oneDNN capped at each instruction level; benchmarks/bf16_cpus.py,
benchmarks/RESULTS.md "bf16 on CPUs without AMX"): AMX 244 tokens/s, AVX-512 BF16 72, AVX-512
without bf16 29, AVX2 10, against 72-107 in fp32. Writing, one token at a time, barely depends on
them (4.4-6.2 tokens/s at every level).

The CPU's features come from torch (`torch.cpu.get_capabilities`, cpuinfo on every platform),
asked only where torch already runs the model.
"""

from __future__ import annotations

from typing import Callable, Mapping

# the features, fastest first, whose instructions multiply bf16 matrices, and their usual names
BF16_MATRIX_FEATURES = (("amx_bf16", "AMX"), ("avx512_bf16", "AVX-512 BF16"), ("sve_bf16", "SVE BF16"),
                        ("bf16", "Arm BF16"))
NONE = "none"


def _torch_capabilities() -> Mapping[str, object] | None:
    import torch

    get = getattr(torch.cpu, "get_capabilities", None)  # not in older torch releases
    return get() if get is not None else None


def bf16_matrix_instructions(capabilities: Callable[[], Mapping[str, object] | None] | None = None) -> str | None:
    """The name of the best bf16 matrix instructions this CPU has, NONE when it has none, None when
    it cannot be told (a torch without `get_capabilities`). `capabilities`: torch's, unless given."""
    features = (capabilities or _torch_capabilities)()
    if features is None:
        return None
    return next((name for key, name in BF16_MATRIX_FEATURES if features.get(key) is True), NONE)


def slow_bf16_notice(instructions: str | None) -> str | None:
    """One line for a writer about to run torch in bf16 on a CPU without bf16 matrix instructions; None otherwise."""
    if instructions != NONE:
        return None
    return ("this CPU has no bf16 matrix instructions (AMX, AVX-512 BF16): torch reads text in bf16 several times "
            "slower than in fp32 here (measured 2.5-7x); --backend cpu, or --precision fp32 where it fits, reads faster")
