"""RWKV-6 ("x060") in torch: RWKV-5.2 (rwkv5.py) with data-dependent token shift and decay.

The time mixing of the `rwkv` package's `att_one_v6_0`/`att_seq_v6_0`, with xx = x_prev - x:

    m_w, m_k, m_v, m_r, m_g = tanh((x + xx·time_maa_x) @ time_maa_w1) @ time_maa_w2   (five LoRAs)
    x? = x + xx·(time_maa_? + m_?)                            for ? in w, k, v, r, g
    log w = -exp(time_decay + tanh(x_w @ time_decay_w1) @ time_decay_w2)   per token and channel

then the RWKV-5.2 recurrence, GroupNorm, gate and output (rwkv5.TimeMix.attend). The channel
mixing is RWKV-5.2's with time_maa_k/r (rwkv5.ChannelMix).
"""

from __future__ import annotations

import torch
from torch import nn

from ai_writer.models.config import ModelConfig
from ai_writer.models.rwkv.rwkv5 import RWKV5, TimeMix
from ai_writer.models.rwkv.rwkv7 import token_shift


class TimeMix6(TimeMix):
    def __init__(self, config: ModelConfig):
        super().__init__(config)
        C, D = config.n_embd, config.dim_mix
        vector = lambda: nn.Parameter(torch.empty(1, 1, C))  # noqa: E731
        self.time_maa_x, self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r, self.time_maa_g = (
            vector() for _ in range(6))
        self.time_maa_w1 = nn.Parameter(torch.empty(C, 5 * D))
        self.time_maa_w2 = nn.Parameter(torch.empty(5, D, C))
        self.time_decay = nn.Parameter(torch.empty(1, 1, C))
        self.time_decay_w1 = nn.Parameter(torch.empty(C, config.dim_w))
        self.time_decay_w2 = nn.Parameter(torch.empty(config.dim_w, C))

    def lerp_factors(self):
        """(5, 1, 1, C): the static part of how far x_w, x_k, x_v, x_r, x_g move toward the previous token."""
        if self.frozen_lerp is not None:
            return self.frozen_lerp
        return torch.cat([self.time_maa_w, self.time_maa_k, self.time_maa_v, self.time_maa_r,
                          self.time_maa_g]).unsqueeze(1)

    def forward(self, x, shift, wkv):
        """x (B, T, C) is the ln1 output; returns (out, new shift, new wkv state)."""
        B, T, C = x.shape
        xx = token_shift(x, shift) - x
        m = torch.tanh(torch.addcmul(x, xx, self.time_maa_x) @ self.time_maa_w1)  # (B, T, 5·D)
        m = m.view(B * T, 5, -1).transpose(0, 1) @ self.time_maa_w2  # (5, B·T, C)
        factors = self.lerp_factors() + m.view(5, B, T, C)
        xw, xk, xv, xr, xg = torch.addcmul(x, xx, factors).unbind(0)
        w = self.time_decay + torch.tanh(xw @ self.time_decay_w1) @ self.time_decay_w2
        log_w = -w.float().exp().view(B, T, self.n_head, self.head_size)
        return self.attend(x, self.receptance(xr), self.key(xk), self.value(xv), xg, log_w, wkv)


class RWKV6(RWKV5):
    time_mix = TimeMix6
