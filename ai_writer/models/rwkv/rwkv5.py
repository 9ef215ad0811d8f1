"""RWKV-5.2 ("x052") in torch, and the parts RWKV-6 shares with it (rwkv6.py adds its time-mixing).

For inference only (released world models are not trained here). The module tree mirrors the
checkpoint layout of the released models, so `load_state_dict` takes an official `.pth` as it
is (emb.weight, blocks.0.att.time_faaaa, ...). As in rwkv7.py one forward serves every mode: a
sequence runs the projections as matrix products and the recurrence in chunks (prefill); T = 1
takes the single-step path (decoding). The equations are those of the `rwkv` package's
`att_one_v5_1`/`att_seq_v5_2` and `ffn_one`/`ffn_seq`:

    time mix:    x? = x + (x_prev - x)·(1 - time_mix_?)     for ? in r, k, v, g
                 r, k, v = projections;  g = silu(x_g @ G)
                 w = exp(-exp(time_decay)) per channel (RWKV-6: data-dependent, see rwkv6.py)
                 y = rᵀ·(S + diag(u)·k·vᵀ);  S = diag(w)·S + k·vᵀ      per head, u = time_faaaa
                 out = (GroupNorm_H(y) · g) @ O
    channel mix: k = relu(x_k @ K)²;  out = sigmoid(x_r @ R) · (k @ V)

The state has rwkv7.RWKV7State's three tensors; its matrix is laid out [key dim, value dim] as
in the package. Shapes: B batch, T time, C n_embd, H heads, N head size, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ai_writer.models.config import ModelConfig
from ai_writer.models.rwkv.rwkv7 import Linear, RWKV7State, onednn_available, token_shift

State = RWKV7State  # att_shift (L, B, C), wkv (L, B, H, N, N) fp32 [key dim, value dim], ffn_shift (L, B, C)
GROUP_NORM_EPS = 64e-5
CHUNK_LEN = 16  # time steps per chunk of the parallel recurrence
RESCALE_EVERY = 6  # in fp16 the residual stream is halved every 6 layers, as the package does


def wkv_step(state, r, log_w, k, v, u):
    """One step of y = rᵀ·(S + diag(u)·k·vᵀ), S = diag(w)·S + k·vᵀ. r, k, v (B, H, N), log_w and u
    broadcast to it, state (B, H, N, N). Returns y (B, H, N) and a new state."""
    y = (r.unsqueeze(-2) @ state).squeeze(-2) + (r * u * k).sum(-1, keepdim=True) * v
    new = state * log_w.exp().unsqueeze(-1)  # decay along the key dim; a new tensor
    new.addcmul_(k.unsqueeze(-1), v.unsqueeze(-2))
    return y, new


def wkv_chunked(state, r, log_w, k, v, u, chunk_len: int = CHUNK_LEN):
    """The same recurrence over T steps, chunk by chunk. Inputs (B, T, H, N) fp32 (log_w may be a
    broadcastable (H, N)), u (H, N), state (B, H, N, N); returns y (B, T, H, N) and the new state.

    With Γ the running product of the decays inside a chunk, every factor is a ratio Γ_t/Γ_s
    with s <= t, taken in log space: decays that forget within a few tokens (w near 0, common in
    RWKV-6) never overflow, which dividing by Γ_s would. The token-to-token coupling inside a
    chunk is therefore an elementwise (c, c, N) product rather than a plain matrix product;
    everything else is matrix products, and only the hand-over of the state between chunks is
    sequential.
    """
    B, T, H, N = r.shape
    log_w = log_w.expand(B, T, H, N)
    pad = (-T) % chunk_len
    if pad:  # padded steps have w = 1 and every other input 0: they leave the state alone
        r, log_w, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, log_w, k, v))
    n = (T + pad) // chunk_len

    def by_chunk(t):  # (B, T, H, N) -> (B, H, n, c, N)
        return t.reshape(B, n, chunk_len, H, N).permute(0, 3, 1, 2, 4)

    r, log_w, k, v = map(by_chunk, (r, log_w, k, v))
    log_decay = log_w.cumsum(dim=3)  # log Γ_t, inclusive
    before = log_decay - log_w  # log Γ_{t-1}
    log_total = log_decay[:, :, :, -1:]  # (B, H, n, 1, N)

    earlier = torch.ones(chunk_len, chunk_len, dtype=torch.bool, device=r.device).tril(-1)  # s < t
    coupling = (before.unsqueeze(-2) - log_decay.unsqueeze(-3))  # (B, H, n, t, s, N): log Γ_{t-1}/Γ_s
    coupling = coupling.masked_fill_(~earlier.unsqueeze(-1), -torch.inf).exp_()
    coupling = coupling.mul_(r.unsqueeze(-2)).mul_(k.unsqueeze(-3)).sum(-1)  # (B, H, n, t, s)
    coupling = coupling + torch.diag_embed((r * u[:, None, None] * k).sum(-1))  # the current token's bonus
    y = coupling @ v  # (B, H, n, c, N): this chunk's own tokens

    r_decayed = r * before.exp()  # r_t·Γ_{t-1}: reads the chunk's starting state
    k_to_end = k * (log_total - log_decay).exp()  # k_s·Γ_end/Γ_s
    starts = []
    for j in range(n):
        starts.append(state)
        state = state * log_total[:, :, j].mT.exp() + k_to_end[:, :, j].mT @ v[:, :, j]
    y = y + r_decayed @ torch.stack(starts, dim=2)
    y = y.permute(0, 2, 3, 1, 4).reshape(B, n * chunk_len, H, N)[:, :T]
    return y, state


class TimeMix(nn.Module):
    """RWKV-5.2 time mixing; `attend` (the recurrence, ln_x, gate and output) serves RWKV-6 too."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.n_head, self.head_size = H, N
        vector = lambda: nn.Parameter(torch.empty(1, 1, C))  # noqa: E731
        if config.version == 5:
            self.time_mix_k, self.time_mix_v, self.time_mix_r, self.time_mix_g = (vector() for _ in range(4))
            self.time_decay = nn.Parameter(torch.empty(H, N))
        self.time_faaaa = nn.Parameter(torch.empty(H, N))  # u, the bonus of the current token
        self.receptance, self.key, self.value, self.output, self.gate = (Linear(C, C) for _ in range(5))
        self.ln_x = nn.GroupNorm(H, C, eps=GROUP_NORM_EPS)
        self.frozen_lerp = None
        self.out_scale = 1.0  # 2^-(layer // 6) in fp16 (see RESCALE_EVERY)

    def lerp_factors(self):
        """(4, 1, 1, C): how far x_r, x_k, x_v, x_g move toward the previous token."""
        if self.frozen_lerp is not None:
            return self.frozen_lerp
        return 1 - torch.cat([self.time_mix_r, self.time_mix_k, self.time_mix_v, self.time_mix_g]).unsqueeze(1)

    def forward(self, x, shift, wkv):
        """x (B, T, C) is the ln1 output; returns (out, new shift, new wkv state)."""
        xr, xk, xv, xg = torch.addcmul(x, token_shift(x, shift) - x, self.lerp_factors()).unbind(0)
        log_w = -self.time_decay.float().exp()  # (H, N): the same decay at every step
        return self.attend(x, self.receptance(xr), self.key(xk), self.value(xv), xg, log_w, wkv)

    def attend(self, x, r, k, v, xg, log_w, wkv):
        """The recurrence on r, k, v (B, T, C) with log decays log_w (fp32, broadcast to (B, T, H, N)),
        then GroupNorm, the silu gate of xg and the output projection."""
        B, T, C = x.shape
        heads = lambda t: t.float().view(B, T, self.n_head, self.head_size)  # noqa: E731
        r, k, v, u = heads(r), heads(k), heads(v), self.time_faaaa.float()
        if T == 1:
            y, wkv = wkv_step(wkv, r[:, 0], log_w if log_w.ndim == 2 else log_w[:, 0], k[:, 0], v[:, 0], u)
            y = y.unsqueeze(1)
        else:
            y, wkv = wkv_chunked(wkv, r, log_w, k, v, u)
        y = F.group_norm(y.reshape(B * T, C), self.n_head, self.ln_x.weight.float(), self.ln_x.bias.float(),
                         GROUP_NORM_EPS).view(B, T, C).to(x.dtype)  # in fp32, as the package does
        y = y * F.silu(self.gate(xg))
        if self.out_scale != 1.0:
            y = y * self.out_scale
        return self.output(y), x[:, -1], wkv


class ChannelMix(nn.Module):
    """k = relu(x_k @ K)², out = sigmoid(x_r @ R)·(k @ V). RWKV-5.2 stores how much of the current
    token to keep (time_mix_?), RWKV-6 how far to move toward the previous one (time_maa_?)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        C = config.n_embd
        self.version = config.version
        if self.version == 5:
            self.time_mix_k, self.time_mix_r = nn.Parameter(torch.empty(1, 1, C)), nn.Parameter(torch.empty(1, 1, C))
        else:
            self.time_maa_k, self.time_maa_r = nn.Parameter(torch.empty(1, 1, C)), nn.Parameter(torch.empty(1, 1, C))
        self.key = Linear(C, config.ffn_dim)
        self.receptance = Linear(C, C)
        self.value = Linear(config.ffn_dim, C)
        self.frozen_lerp = None
        self.out_scale = 1.0

    def lerp_factors(self):
        """(2, 1, 1, C): how far x_k and x_r move toward the previous token."""
        if self.frozen_lerp is not None:
            return self.frozen_lerp
        if self.version == 5:
            return 1 - torch.cat([self.time_mix_k, self.time_mix_r]).unsqueeze(1)
        return torch.cat([self.time_maa_k, self.time_maa_r]).unsqueeze(1)

    def forward(self, x, shift):
        """x (B, T, C) is the ln2 output; returns (out, new shift)."""
        xk, xr = torch.addcmul(x, token_shift(x, shift) - x, self.lerp_factors()).unbind(0)
        k = torch.relu(self.key(xk))
        k = k * k
        if self.out_scale != 1.0:
            k = k * self.out_scale
        return torch.sigmoid(self.receptance(xr)) * self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int, time_mix: type[nn.Module]):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(config.n_embd)
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.att = time_mix(config)
        self.ffn = ChannelMix(config)


class RWKV5(nn.Module):
    """RWKV-5.2; RWKV-6 (rwkv6.RWKV6) is this with another time mixing."""

    time_mix = TimeMix

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i, self.time_mix) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = Linear(config.n_embd, config.vocab_size)
        self.rescale = False  # halve x every RESCALE_EVERY layers (fp16)

    def prepare_for_inference(self) -> "RWKV5":
        """Fold the lerp factors; in fp16 rescale as the package does (the residual stream of a deep
        model overflows fp16 otherwise); on the CPU in fp32 pack the projections for oneDNN."""
        self.eval().requires_grad_(False)
        weight = self.ln_out.weight
        self.rescale = weight.dtype == torch.float16
        pack = weight.device.type == "cpu" and weight.dtype == torch.float32 and onednn_available()
        for i, block in enumerate(self.blocks):
            for mix in (block.att, block.ffn):
                mix.frozen_lerp = mix.lerp_factors().detach()
                mix.out_scale = 0.5 ** (i // RESCALE_EVERY) if self.rescale else 1.0
        for module in self.modules():
            if pack and isinstance(module, Linear):
                module.pack_for_inference()
        return self

    def zero_state(self, batch_size: int) -> State:
        return State.zeros(self.config, batch_size, self.ln_out.weight.dtype, self.ln_out.weight.device)

    def forward(self, tokens: torch.Tensor, state: State):
        """tokens (B, T) -> logits (B, V) for the last position, and the new state (the given one is
        not modified)."""
        x = self.blocks[0].ln0(self.emb(tokens))  # (B, T, C)
        att_shift, wkv, ffn_shift = [], [], []
        for i, block in enumerate(self.blocks):
            out, shift, layer_wkv = block.att(block.ln1(x), state.att_shift[i], state.wkv[i])
            x = x + out
            att_shift.append(shift)
            wkv.append(layer_wkv)
            if i == len(self.blocks) - 1:
                x = x[:, -2:]  # only the last position's logits are wanted (the one before feeds its shift)
            out, shift = block.ffn(block.ln2(x), state.ffn_shift[i])
            x = x + out
            ffn_shift.append(shift)
            if self.rescale and (i + 1) % RESCALE_EVERY == 0:
                x = x / 2
        logits = self.head(self.ln_out(x[:, -1]))
        return logits, State(torch.stack(att_shift), torch.stack(wkv), torch.stack(ffn_shift))
