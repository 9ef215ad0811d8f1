"""Build random but numerically healthy RWKV-7 ("x070") checkpoints.

The key layout and stored shapes follow the layout the `rwkv` pip package loads
(see /work/shared/rwkv7-format.md, section 3): ``[1,1,C]`` vectors, nn.Linear
matrices as ``[out, in]``, LoRA matrices as ``[in, out]`` (used as ``x @ W``),
``att.r_k`` as ``[H, N]``.

Value ranges imitate what a freshly initialised RWKV-7 looks like (lerp factors in
[0, 1], a zig-zag decay bias w0 between about -6 and +2, ...), but every matrix is
random (not zero) so that all branches of the block are exercised, and the head is
scaled so that the logits over the vocabulary have a standard deviation of about 1-3.

Only used by tests and benchmarks; deterministic for a given seed.
"""

from __future__ import annotations

import math
import os

import torch

# (m, p) of the low-rank size formula max(32, round(m * C**p / 32) * 32)
_LORA_RULES = {
    "w": (1.8, 0.5),  # decay
    "a": (1.8, 0.5),  # in-context learning rate
    "v": (1.3, 0.5),  # value residual
    "g": (0.6, 0.8),  # output gate
}


class StoredAs(dict):
    """A state dict that converts each tensor to `dtype` as it is stored: a big bf16 checkpoint is made
    without ever holding the whole model in float32."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def __setitem__(self, key, tensor):
        super().__setitem__(key, tensor.to(self.dtype).contiguous())


def default_lora_dims(n_embd: int) -> tuple[int, int, int, int]:
    """(Dw, Da, Dv, Dg) for a model width, by the RWKV-7 rule of thumb."""
    dims = []
    for name in ("w", "a", "v", "g"):
        m, p = _LORA_RULES[name]
        dims.append(max(32, int(round(m * n_embd**p / 32)) * 32))
    return tuple(dims)  # type: ignore[return-value]


def write_random_rwkv7(
    path,
    *,
    n_layer: int,
    n_embd: int,
    head_size: int,
    vocab_size: int,
    ffn_dim: int | None = None,
    lora_dims: tuple[int, int, int, int] | None = None,
    seed: int = 0,
    layer0_value_residual: bool = True,
    dtype=torch.float32,
) -> dict[str, torch.Tensor]:
    """Create a random RWKV-7 checkpoint, ``torch.save`` it to ``path``, return it.

    ``layer0_value_residual=False`` leaves out ``blocks.0.att.v0/v1/v2`` (the
    package ignores them for layer 0 and some training versions do not write them).
    """
    L, C, N, V = int(n_layer), int(n_embd), int(head_size), int(vocab_size)
    if L < 1 or C < 1 or N < 1 or V < 1:
        raise ValueError("n_layer, n_embd, head_size and vocab_size must be positive")
    if C % N:
        raise ValueError(f"n_embd ({C}) must be a multiple of head_size ({N})")
    H = C // N
    F = int(ffn_dim) if ffn_dim is not None else 4 * C
    Dw, Da, Dv, Dg = (tuple(int(d) for d in lora_dims) if lora_dims is not None
                      else default_lora_dims(C))

    gen = torch.Generator().manual_seed(int(seed))

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean

    def uniform(*shape, lo, hi):
        return torch.rand(*shape, generator=gen, dtype=torch.float32) * (hi - lo) + lo

    def linear(out_dim, in_dim, scale=1.0):
        # nn.Linear layout [out, in]; entries ~ N(0, scale / sqrt(fan_in))
        return normal(out_dim, in_dim, std=scale / math.sqrt(in_dim))

    def lora(in_dim, out_dim, scale=1.0):
        # stored [in, out], used as x @ W; fan_in = in_dim
        return normal(in_dim, out_dim, std=scale / math.sqrt(in_dim))

    def vec(t):
        return t.reshape(1, 1, C)

    def ln_pair(prefix, out):
        out[prefix + ".weight"] = 1.0 + normal(C, std=0.05)
        out[prefix + ".bias"] = normal(C, std=0.02)

    idx = torch.arange(C, dtype=torch.float32)
    pos = idx / C                                   # 0 .. <1
    linear_ramp = idx / max(C - 1, 1) - 0.5         # -0.5 .. +0.5
    within = idx.remainder(N)
    half = max((N - 1) / 2.0, 0.5)
    zz = (within - (N - 1) / 2.0) / half            # -1 .. +1 inside every head
    zigzag = zz * zz.abs()                          # signed square, -1 .. +1

    def lerp_profile(power):
        base = 1.0 - torch.pow(pos, power)
        return vec((base + uniform(C, lo=-0.05, hi=0.05)).clamp(0.0, 1.0))

    sd = StoredAs(dtype)
    sd["emb.weight"] = normal(V, C)
    ln_pair("blocks.0.ln0", sd)

    for i in range(L):
        p = f"blocks.{i}."
        depth = i / (L - 1) if L > 1 else 0.0          # 0 -> 1 over the layers
        shallow = 1.0 - i / L                           # 1 -> ~0 over the layers

        ln_pair(p + "ln1", sd)
        ln_pair(p + "ln2", sd)

        a = p + "att."
        sd[a + "x_r"] = lerp_profile(0.2 * shallow)
        sd[a + "x_w"] = lerp_profile(0.9 * shallow)
        sd[a + "x_k"] = lerp_profile(0.7 * shallow)
        sd[a + "x_v"] = lerp_profile(0.7 * shallow)
        sd[a + "x_a"] = lerp_profile(0.9 * shallow)
        sd[a + "x_g"] = lerp_profile(0.2 * shallow)

        # decay bias: slow channels first, fast last, zig-zag inside each head;
        # range about -6.5 .. +2 (decay factor exp(-e^-0.5 * sigmoid(.)) in 0.55 .. 0.999)
        ramp = -5.0 + 5.0 * torch.pow(idx / max(C - 1, 1), 1.0 + depth**0.3)
        sd[a + "w0"] = vec(ramp + 0.25 + 1.75 * zigzag + normal(C, std=0.05))
        sd[a + "w1"] = lora(C, Dw)
        sd[a + "w2"] = lora(Dw, C, scale=0.5)

        sd[a + "a0"] = vec(-0.15 + 0.25 * zigzag + 0.3 * linear_ramp + normal(C, std=0.02))
        sd[a + "a1"] = lora(C, Da)
        sd[a + "a2"] = lora(Da, C, scale=0.5)

        if i > 0 or layer0_value_residual:
            sd[a + "v0"] = vec(0.7 - 0.4 * linear_ramp + normal(C, std=0.02))
            sd[a + "v1"] = lora(C, Dv)
            sd[a + "v2"] = lora(Dv, C, scale=0.5)

        sd[a + "g1"] = lora(C, Dg)
        sd[a + "g2"] = lora(Dg, C)

        sd[a + "k_k"] = vec(0.7 - 0.1 * linear_ramp + normal(C, std=0.005).clamp(-0.01, 0.01))
        sd[a + "k_a"] = vec(1.0 + normal(C, std=0.02))
        sd[a + "r_k"] = normal(H, N, std=0.03, mean=-0.04)

        sd[a + "receptance.weight"] = linear(C, C)
        sd[a + "key.weight"] = linear(C, C)
        sd[a + "value.weight"] = linear(C, C)
        sd[a + "output.weight"] = linear(C, C, scale=0.5)
        ln_pair(a + "ln_x", sd)

        f = p + "ffn."
        sd[f + "x_k"] = lerp_profile(shallow**4)
        sd[f + "key.weight"] = linear(F, C)
        sd[f + "value.weight"] = linear(C, F, scale=0.5)

    ln_pair("ln_out", sd)
    sd["head.weight"] = linear(V, C, scale=2.0)

    sd = dict(sd)
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    torch.save(sd, path)
    return sd
