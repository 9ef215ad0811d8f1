"""RWKV-7 ("x070") in torch: the model, its recurrent state, and the time-mixing recurrence.

The module tree mirrors the standard RWKV-7 checkpoint layout, so `state_dict()` keys are
exactly the keys of an official `.pth` (emb.weight, blocks.0.att.r_k, ...). One forward
serves every mode: a sequence of T tokens runs the projections as matrix products and the
recurrence in chunks (prefill, training); T = 1 takes the single-step path (decoding).

Shapes: B batch, T time, C n_embd, H heads, N head size, V vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ai_writer.models.config import ModelConfig

DECAY_SCALE = math.exp(-0.5)  # log w = -exp(-0.5) * sigmoid(.), so w lies in (0.545, 1)
GROUP_NORM_EPS = 64e-5
CHUNK_LEN = 32  # time steps per chunk of the parallel recurrence


@dataclass
class RWKV7State:
    """The recurrent state of a batch of sequences, one named tensor per kind, stacked per layer."""

    att_shift: torch.Tensor  # (L, B, C) previous token's ln1 output
    wkv: torch.Tensor  # (L, B, H, N, N) fp32 matrix state, [value dim, key dim]
    ffn_shift: torch.Tensor  # (L, B, C) previous token's ln2 output

    @classmethod
    def zeros(cls, config: ModelConfig, batch_size: int, dtype=torch.float32, device="cpu") -> "RWKV7State":
        L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
        return cls(
            att_shift=torch.zeros(L, batch_size, C, dtype=dtype, device=device),
            wkv=torch.zeros(L, batch_size, H, N, N, dtype=torch.float32, device=device),
            ffn_shift=torch.zeros(L, batch_size, C, dtype=dtype, device=device),
        )

    # The state protocol (backends/base.py State); every method returns new tensors.

    @property
    def batch_size(self) -> int:
        return self.att_shift.shape[1]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.att_shift, self.wkv, self.ffn_shift

    def select(self, rows: list[int]) -> "RWKV7State":
        """A new state holding the given batch rows (in that order; a row may repeat)."""
        index = torch.tensor(rows, dtype=torch.long, device=self.att_shift.device)
        return RWKV7State(*(t.index_select(1, index) for t in self.tensors()))

    def repeat(self, n: int) -> "RWKV7State":
        """n copies of a single-row state, as a batch of n rows."""
        return self.select([0] * n)

    def joinable(self, other: object) -> bool:
        """Always, for states of one model: same layers, widths, dtype and device."""
        return isinstance(other, RWKV7State) and all(
            (a.shape[0], *a.shape[2:], a.dtype, a.device) == (b.shape[0], *b.shape[2:], b.dtype, b.device)
            for a, b in zip(self.tensors(), other.tensors()))

    def concat(self, other: "RWKV7State") -> "RWKV7State":
        """One batch: this state's rows, then the other's."""
        if not self.joinable(other):
            raise ValueError("these RWKV states are not of one model: they cannot share a batch")
        return RWKV7State(*(torch.cat([a, b], dim=1) for a, b in zip(self.tensors(), other.tensors())))

    def clone(self) -> "RWKV7State":
        return RWKV7State(*(t.clone() for t in self.tensors()))


def token_shift(x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """x shifted one step back in time, with `previous` (B, C) in front: (B, T, C)."""
    if x.shape[1] == 1:
        return previous.unsqueeze(1)
    return torch.cat([previous.unsqueeze(1), x[:, :-1]], dim=1)


def wkv_step(state, r, w, k, v, a, b):
    """One step of S = S·diag(w) + (S·a)·bᵀ + v·kᵀ; y = S·r. Inputs (B, H, N), state (B, H, N, N)."""
    state_a = state @ a.unsqueeze(-1)  # (B, H, N, 1)
    new = state * w.unsqueeze(-2)  # a new tensor: the given state is never changed
    new.addcmul_(state_a, b.unsqueeze(-2)).addcmul_(v.unsqueeze(-1), k.unsqueeze(-2))
    y = (new @ r.unsqueeze(-1)).squeeze(-1)  # (B, H, N)
    return y, new


def wkv_chunked(state, r, log_w, k, v, a, b, chunk_len: int = CHUNK_LEN):
    """The same recurrence over T steps, computed chunk by chunk with matrix products.

    Inside a chunk, with Γ_t the running product of the decays, the vectors u_t = S_{t-1}·a_t
    solve a unit lower-triangular system; outputs and the chunk's final state then follow as
    products. Only the hand-over of the state between chunks is sequential.
    Inputs (B, T, H, N) in fp32, state (B, H, N, N). Returns y (B, T, H, N) and the new state.
    """
    B, T, H, N = r.shape
    pad = (-T) % chunk_len
    if pad:  # padded steps have w = 1 and every other input 0: they leave the state alone
        r, log_w, k, v, a, b = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (r, log_w, k, v, a, b))
    n_chunks = (T + pad) // chunk_len

    def by_chunk(t):  # (B, T, H, N) -> (B, H, n_chunks, chunk_len, N), laid out for the batched products
        return t.view(B, n_chunks, chunk_len, H, N).permute(0, 3, 1, 2, 4).contiguous()

    r, log_w, k, v, a, b = map(by_chunk, (r, log_w, k, v, a, b))
    log_decay = log_w.cumsum(dim=3)  # log Γ_t, inclusive
    log_total = log_decay[:, :, :, -1:]  # log Γ over the whole chunk
    a_decayed = a * (log_decay - log_w).exp()  # a_t·Γ_{t-1}
    r_decayed = r * log_decay.exp()  # r_t·Γ_t
    undo = (-log_decay).exp()
    b_undone, k_undone = b * undo, k * undo  # b_s/Γ_s, k_s/Γ_s
    to_end = (log_total - log_decay).exp()
    b_to_end, k_to_end = b * to_end, k * to_end  # b_s·Γ_end/Γ_s, k_s·Γ_end/Γ_s

    strictly_lower = torch.ones(chunk_len, chunk_len, device=r.device).tril(-1)
    lower = torch.ones(chunk_len, chunk_len, device=r.device).tril()
    a_b = (a_decayed @ b_undone.mT) * strictly_lower  # (B, H, n, t, s)
    a_k = (a_decayed @ k_undone.mT) * strictly_lower
    r_b = (r_decayed @ b_undone.mT) * lower
    r_k = (r_decayed @ k_undone.mT) * lower
    system = torch.eye(chunk_len, device=r.device) - a_b
    # u = A_state·S_startᵀ + u_from_values, for every chunk at once
    a_state = torch.linalg.solve_triangular(system, a_decayed, upper=False, unitriangular=True)
    u_from_values = torch.linalg.solve_triangular(system, a_k @ v, upper=False, unitriangular=True)

    starts, us = [], []
    for j in range(n_chunks):
        starts.append(state)
        u = u_from_values[:, :, j] + a_state[:, :, j] @ state.mT  # (B, H, chunk, N)
        us.append(u)
        state = (
            state * log_total[:, :, j].exp()
            + u.mT @ b_to_end[:, :, j]
            + v[:, :, j].mT @ k_to_end[:, :, j]
        )
    start = torch.stack(starts, dim=2)  # (B, H, n, N, N)
    u = torch.stack(us, dim=2)
    y = r_decayed @ start.mT + r_b @ u + r_k @ v  # (B, H, n, chunk, N)
    y = y.permute(0, 2, 3, 1, 4).reshape(B, n_chunks * chunk_len, H, N)[:, :T]
    return y, state


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def pack_for_onednn(weight: torch.Tensor) -> torch.Tensor:
    """A [out, in] weight reordered once into oneDNN's blocked layout (an opaque tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def onednn_linear(x: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
    """x @ Wᵀ with a packed weight. On CPUs oneDNN's fp32 kernels run both matrix-vector
    (decoding) and matrix-matrix (prefill) products far faster than the default BLAS path
    (measured 2.6x for prefill GEMMs on this project's AMD test machine), at fp32 accuracy."""
    rows = x.reshape(-1, x.shape[-1])
    return torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "").view(*x.shape[:-1], -1)


class Linear(nn.Linear):
    """A bias-free projection that can be packed once for fast CPU inference (see onednn_linear).
    A packed Linear computes the same function but can no longer be trained or saved."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)
        self.packed = None

    def forward(self, x):
        return onednn_linear(x, self.packed) if self.packed is not None else F.linear(x, self.weight)

    def pack_for_inference(self) -> None:
        if self.packed is None:
            self.packed = pack_for_onednn(self.weight)
            self.weight = nn.Parameter(self.weight.new_empty(0), requires_grad=False)  # the packed copy replaces it


class TimeMix(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        C, H, N = config.n_embd, config.n_head, config.head_size
        self.layer_id, self.n_head, self.head_size = layer_id, H, N
        vector = lambda: nn.Parameter(torch.empty(1, 1, C))  # noqa: E731
        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vector() for _ in range(6))
        self.w0, self.a0, self.k_k, self.k_a = vector(), vector(), vector(), vector()
        self.w1, self.w2 = nn.Parameter(torch.empty(C, config.dim_w)), nn.Parameter(torch.empty(config.dim_w, C))
        self.a1, self.a2 = nn.Parameter(torch.empty(C, config.dim_a)), nn.Parameter(torch.empty(config.dim_a, C))
        if layer_id > 0:  # layer 0 produces the first value instead of mixing it in
            self.v0 = vector()
            self.v1, self.v2 = nn.Parameter(torch.empty(C, config.dim_v)), nn.Parameter(torch.empty(config.dim_v, C))
        self.g1, self.g2 = nn.Parameter(torch.empty(C, config.dim_g)), nn.Parameter(torch.empty(config.dim_g, C))
        self.r_k = nn.Parameter(torch.empty(H, N))
        self.receptance, self.key, self.value, self.output = (Linear(C, C) for _ in range(4))
        self.ln_x = nn.GroupNorm(H, C, eps=GROUP_NORM_EPS)
        self.frozen_lerp = None  # the six lerp factors stacked once, for inference
        self.packed_lora: dict[str, torch.Tensor] = {}  # low-rank matrices packed for inference

    def lora(self, x, name: str):
        """x @ self.<name> (a low-rank matrix stored [in, out])."""
        if name in self.packed_lora:
            return onednn_linear(x, self.packed_lora[name])
        return x @ getattr(self, name)

    def pack_for_inference(self) -> None:
        names = ("w1", "w2", "a1", "a2", "g1", "g2") + (("v1", "v2") if self.layer_id > 0 else ())
        self.packed_lora = {name: pack_for_onednn(getattr(self, name).t()) for name in names}

    def lerp_factors(self):
        if self.frozen_lerp is not None:
            return self.frozen_lerp
        return torch.cat([self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g]).unsqueeze(1)  # (6,1,1,C)

    def forward(self, x, shift, wkv, v_first):
        """x (B, T, C) is the ln1 output; returns (out, new shift, new wkv state, v_first)."""
        B, T, C = x.shape
        H, N = self.n_head, self.head_size
        xx = token_shift(x, shift) - x
        xr, xw, xk, xv, xa, xg = torch.addcmul(x, xx, self.lerp_factors()).unbind(0)

        r = self.receptance(xr)
        k = self.key(xk)
        v = self.value(xv)
        w = self.lora(torch.tanh(self.lora(xw, "w1")), "w2")
        a = torch.sigmoid(self.a0 + self.lora(self.lora(xa, "a1"), "a2"))
        g = self.lora(torch.sigmoid(self.lora(xg, "g1")), "g2")

        kk = F.normalize((k * self.k_k).view(B, T, H, N), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        if self.layer_id == 0:
            v_first = v
        else:
            v = v + (v_first - v) * torch.sigmoid(self.v0 + self.lora(self.lora(xv, "v1"), "v2"))
        log_w = -DECAY_SCALE * torch.sigmoid((self.w0 + w).float())

        heads = lambda t: t.float().view(B, T, H, N)  # noqa: E731
        args = (heads(r), log_w.view(B, T, H, N), heads(k), heads(v), -kk.float(), (kk * a.view(B, T, H, N)).float())
        if T == 1:
            r1, lw1, k1, v1, a1, b1 = (t[:, 0] for t in args)
            y, wkv = wkv_step(wkv, r1, lw1.exp(), k1, v1, a1, b1)
        else:
            with torch.autocast(x.device.type, enabled=False):  # the recurrence stays in fp32 under bf16 training
                y, wkv = wkv_chunked(wkv, *args)
        y = self.ln_x(y.to(x.dtype).reshape(B * T, C)).view(B, T, C)
        bonus = (r * k * self.r_k.view(C)).view(B, T, H, N).sum(-1, keepdim=True) * v.view(B, T, H, N)
        y = y + bonus.view(B, T, C)
        return self.output(y * g), x[:, -1], wkv, v_first


class ChannelMix(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.x_k = nn.Parameter(torch.empty(1, 1, config.n_embd))
        self.key = Linear(config.n_embd, config.ffn_dim)
        self.value = Linear(config.ffn_dim, config.n_embd)

    def forward(self, x, shift):
        """x (B, T, C) is the ln2 output; returns (out, new shift)."""
        k = torch.addcmul(x, token_shift(x, shift) - x, self.x_k)
        k = self.key(k)
        if torch.is_inference_mode_enabled():
            k = k.relu_().mul_(k)  # relu(.)² in place: no temporaries at inference
        else:
            k = torch.relu(k)
            k = k * k  # relu(.)²; a product is much faster than pow on CPUs
        return self.value(k), x[:, -1]


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int):
        super().__init__()
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(config.n_embd)  # normalises the embedding
        self.ln1 = nn.LayerNorm(config.n_embd)
        self.ln2 = nn.LayerNorm(config.n_embd)
        self.att = TimeMix(config, layer_id)
        self.ffn = ChannelMix(config)


class RWKV7(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = Linear(config.n_embd, config.vocab_size)

    def prepare_for_inference(self) -> "RWKV7":
        """Fold what never changes at inference: stacked lerp factors, and on the CPU in fp32 the
        projections packed for oneDNN. The result computes the same function but must not be
        trained or saved."""
        self.eval().requires_grad_(False)
        pack = self.ln_out.weight.device.type == "cpu" and self.ln_out.weight.dtype == torch.float32 and onednn_available()
        for module in self.modules():
            if isinstance(module, TimeMix):
                module.frozen_lerp = module.lerp_factors().detach()
            if pack and isinstance(module, (Linear, TimeMix)):
                module.pack_for_inference()
        return self

    def zero_state(self, batch_size: int) -> RWKV7State:
        return RWKV7State.zeros(self.config, batch_size, self.ln_out.weight.dtype, self.ln_out.weight.device)

    def forward(self, tokens: torch.Tensor, state: RWKV7State, all_logits: bool = False):
        """tokens (B, T) -> logits (B, V) for the last position, or (B, T, V); and the new state.

        The given state is not modified.
        """
        x = self.blocks[0].ln0(self.emb(tokens))  # (B, T, C)
        att_shift, wkv, ffn_shift = [], [], []
        v_first = None
        for i, block in enumerate(self.blocks):
            out, shift, layer_wkv, v_first = block.att(block.ln1(x), state.att_shift[i], state.wkv[i], v_first)
            x = x + out
            att_shift.append(shift)
            wkv.append(layer_wkv)
            if i == len(self.blocks) - 1 and not all_logits:
                # only the last position's logits are wanted: the last FFN runs on the last two
                # positions (the first of them only feeds the token shift of the second)
                x = x[:, -2:]
            out, shift = block.ffn(block.ln2(x), state.ffn_shift[i])
            x = x + out
            ffn_shift.append(shift)
        if not all_logits:
            x = x[:, -1]
        logits = self.head(self.ln_out(x))
        return logits, RWKV7State(torch.stack(att_shift), torch.stack(wkv), torch.stack(ffn_shift))
