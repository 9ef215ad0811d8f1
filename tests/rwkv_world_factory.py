"""Build random but numerically healthy RWKV-5.2, RWKV-6 and RWKV-4 checkpoints.

Key names and stored shapes are those of the released world models, as the `rwkv` 0.8.32
package's loader reads them (rwkv/model.py, class RWKV): `[1,1,C]` vectors, nn.Linear
matrices as `[out, in]`, `att.time_decay`/`att.time_faaaa` as `[H, N]` (RWKV-5.2) or
`att.time_decay` as `[1,1,C]` (RWKV-6), the RWKV-6 LoRAs as `[in, out]` (`time_maa_w2` as
`[5, D, C]`). The channel-mix width defaults to the world models' int(3.5·C)//32·32.

Value ranges follow the training code's initialisers (token-shift factors in [0, 1], decays
from slow to fast channels, some fast enough to forget within a few tokens, so that the chunked
recurrence is tested where it is fragile), with every matrix random so all branches count; the
head is scaled so that the logits have a standard deviation of about 1-3. RWKV-4 files exist
only for the refusal test. Deterministic for a given seed; used by tests and benchmarks.
"""

from __future__ import annotations

import math
import os

import torch
from rwkv7_factory import StoredAs


def world_ffn_dim(n_embd: int) -> int:
    return int(3.5 * n_embd) // 32 * 32


def write_random_rwkv(path, *, version: int, n_layer: int, n_embd: int, vocab_size: int, head_size: int = 64,
                      ffn_dim: int | None = None, dim_mix: int = 32, dim_decay: int = 64, seed: int = 0,
                      dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Create a random checkpoint of `version` 5 (RWKV-5.2), 6 or 4, `torch.save` it, return it."""
    if version not in (4, 5, 6):
        raise ValueError("version must be 4, 5 (RWKV-5.2) or 6")
    L, C, N, V = int(n_layer), int(n_embd), int(head_size), int(vocab_size)
    if C % N:
        raise ValueError(f"n_embd ({C}) must be a multiple of head_size ({N})")
    H, F = C // N, int(ffn_dim) if ffn_dim is not None else world_ffn_dim(C)
    gen = torch.Generator().manual_seed(int(seed))

    def normal(*shape, std=1.0, mean=0.0):
        return torch.randn(*shape, generator=gen) * std + mean

    def uniform(*shape, lo, hi):
        return torch.rand(*shape, generator=gen) * (hi - lo) + lo

    def linear(out_dim, in_dim, scale=1.0):  # nn.Linear layout [out, in]
        return normal(out_dim, in_dim, std=scale / math.sqrt(in_dim))

    def vec(t):
        return t.reshape(1, 1, C)

    def ln_pair(prefix, out):
        out[prefix + ".weight"] = 1.0 + normal(C, std=0.05)
        out[prefix + ".bias"] = normal(C, std=0.02)

    idx = torch.arange(C, dtype=torch.float32)
    pos = idx / C

    def mix(power):  # a token-shift factor in [0, 1], as the training code starts it
        return vec((1.0 - pos**power + uniform(C, lo=-0.05, hi=0.05)).clamp(0.0, 1.0))

    sd = StoredAs(dtype)
    sd["emb.weight"] = normal(V, C)
    ln_pair("blocks.0.ln0", sd)
    for i in range(L):
        p, a, f = f"blocks.{i}.", f"blocks.{i}.att.", f"blocks.{i}.ffn."
        shallow = 1.0 - i / L
        ln_pair(p + "ln1", sd)
        ln_pair(p + "ln2", sd)
        # log-log decay: slow channels about -6 (w ~ 0.998) up to fast ones about +1.5 (w ~ 0.01)
        decay = -6.0 + 7.5 * (idx / max(C - 1, 1)) ** (0.7 + 1.3 * i / max(L - 1, 1)) + normal(C, std=0.1)
        bonus = uniform(C, lo=-0.2, hi=1.0)
        if version == 4:
            sd[a + "time_decay"], sd[a + "time_first"] = decay, bonus
            for name in "kvr":
                sd[a + f"time_mix_{name}"] = mix(0.5 * shallow)
        elif version == 5:
            for name in "kvrg":
                sd[a + f"time_mix_{name}"] = mix(0.5 * shallow)
            sd[a + "time_decay"] = decay.reshape(H, N)
            sd[a + "time_faaaa"] = bonus.reshape(H, N)
        else:
            for name in "xwkvrg":
                sd[a + f"time_maa_{name}"] = mix(0.5 * shallow)
            sd[a + "time_maa_w1"] = normal(C, 5 * dim_mix, std=0.5 / math.sqrt(C))
            sd[a + "time_maa_w2"] = normal(5, dim_mix, C, std=0.3 / math.sqrt(dim_mix))
            sd[a + "time_decay"] = vec(decay)
            sd[a + "time_decay_w1"] = normal(C, dim_decay, std=1.0 / math.sqrt(C))
            sd[a + "time_decay_w2"] = normal(dim_decay, C, std=0.5 / math.sqrt(dim_decay))
            sd[a + "time_faaaa"] = bonus.reshape(H, N)
        for name in ("receptance", "key", "value"):
            sd[a + f"{name}.weight"] = linear(C, C)
        sd[a + "output.weight"] = linear(C, C, scale=0.5)
        if version != 4:
            sd[a + "gate.weight"] = linear(C, C)
            ln_pair(a + "ln_x", sd)
        if version == 6:
            sd[f + "time_maa_k"], sd[f + "time_maa_r"] = mix(shallow), mix(shallow)
        else:
            sd[f + "time_mix_k"], sd[f + "time_mix_r"] = mix(shallow), mix(shallow)
        sd[f + "key.weight"] = linear(F, C)
        sd[f + "receptance.weight"] = linear(C, C)
        sd[f + "value.weight"] = linear(C, F, scale=0.5)
    ln_pair("ln_out", sd)
    sd["head.weight"] = linear(V, C, scale=2.0)

    sd = dict(sd)
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(sd, path)
    return sd
