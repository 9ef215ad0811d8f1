"""The AI-Writer `_new_` models ("generation B", RWKV_RNN of 2022-02-16), conformance README §5.

An RNN: each layer's time mix keeps `aa` (decayed sum of k*v) and `bb` (decayed sum of k), every
sub-layer keeps the input of the last position for its token shift. Variants, read from the keys:
FFN_PRE (layer 0 has a second channel mix `ffnPre` instead of the time mix) and HEAD_QK (a copy
mechanism over the last ctx_len positions: their `head_k` vectors are part of the state).

Two modes compute the same thing: `step` (one token, the recurrence) and `parallel` (many
tokens at once from any state, the recurrence unrolled into a decay matrix per chunk).

    d = exp(-exp(time_decay)),  f = exp(time_first),  k = exp(min(W_k mix_k, 60))
    out = W_o( sigmoid(r) * (aa + f k v) / (bb + f k + b_eps) );  aa := d aa + k v;  bb := d bb + k
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from ai_writer.models.aiwriter.window import LN_EPS, check_shapes
from ai_writer.errors import ModelFileError

K_MAX = 60.0  # k = exp(min(x, K_MAX))
HEAD_QK_DIM = 256
CHUNK = 64  # tokens per decay matrix in parallel mode: (CHUNK, CHUNK, C) floats


@dataclass(frozen=True)
class Preset:
    """A model type of the original `_new_/run.py` (RWKV_CFG)."""

    ctx_len: int
    n_layer: int
    n_embd: int
    b_eps: float  # added to the denominator of the time mix
    head_qk: bool
    ffn_pre: bool


PRESETS = {
    "L6_CHN": Preset(1536, 6, 512, 1e-16, True, True),
    "L24_CHN": Preset(1024, 24, 1024, 1e-9, True, True),
    "L12_ENG": Preset(768, 12, 768, 1e-9, False, False),
}


@dataclass(frozen=True)
class BConfig:
    vocab_size: int  # V: rows of emb and head
    n_layer: int
    n_embd: int  # C
    ctx_len: int  # positions the copy mechanism looks back over (copy_mask's size, else the type's)
    ffn_pre: bool  # layer 0 has ffnPre instead of att
    head_qk: bool  # the copy mechanism (head_q, head_k, copy_mask)
    b_eps: float  # the type's denominator epsilon
    model_type: str  # the original type this file matches, e.g. "L24_CHN" ("L6_CHN-like" when only similar)
    generation: ClassVar[str] = "_new_"

    def describe(self) -> str:
        flags = ", ".join(name for name, on in (("FFN_PRE", self.ffn_pre), ("HEAD_QK", self.head_qk)) if on)
        return (f"AI-Writer _new_ RWKV-RNN {self.model_type} L{self.n_layer}-D{self.n_embd}"
                f"{', ' + flags if flags else ''}, vocab {self.vocab_size}, ctx_len {self.ctx_len}")

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, **dataclasses.asdict(self)})

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], source: str) -> "BConfig":
        if "emb.weight" not in shapes:
            raise ModelFileError(f"{source}: not an AI-Writer _new_ model: tensor 'emb.weight' is missing")
        vocab_size, n_embd = shapes["emb.weight"]
        layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
        n_layer = max(layers, default=-1) + 1
        ffn_pre, head_qk = "blocks.0.ffnPre.key.weight" in shapes, "head_q.weight" in shapes
        name, preset = _closest_type(n_layer, n_embd, head_qk, ffn_pre)
        ctx_len = shapes["copy_mask"][0] if head_qk and "copy_mask" in shapes else preset.ctx_len
        config = cls(vocab_size, n_layer, n_embd, int(ctx_len), ffn_pre, head_qk, preset.b_eps, name)
        check_shapes(source, "AI-Writer _new_ model", config.expected_shapes(), shapes)
        return config

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        V, C = self.vocab_size, self.n_embd
        shapes = {"emb.weight": (V, C), "ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)}
        if self.head_qk:
            shapes.update({"head_q.weight": (HEAD_QK_DIM, C), "head_k.weight": (HEAD_QK_DIM, C),
                           "copy_mask": (self.ctx_len, self.ctx_len)})
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            for name in ("ln1", "ln2"):
                shapes[p + name + ".weight"] = shapes[p + name + ".bias"] = (C,)
            mixes = ("ffnPre", "ffn") if i == 0 and self.ffn_pre else ("ffn",)
            for mix in mixes:
                shapes.update({f"{p}{mix}.time_mix_k": (1, 1, C), f"{p}{mix}.time_mix_r": (1, 1, C),
                               f"{p}{mix}.key.weight": (4 * C, C), f"{p}{mix}.receptance.weight": (C, C),
                               f"{p}{mix}.value.weight": (C, 4 * C)})
            if not (i == 0 and self.ffn_pre):
                shapes.update({p + "att.time_decay": (C, 1), p + "att.time_first": (C, 1)})
                for name in ("time_mix_k", "time_mix_v", "time_mix_r"):
                    shapes[p + "att." + name] = (1, 1, C)
                for name in ("key", "value", "receptance", "output"):
                    shapes[p + f"att.{name}.weight"] = (C, C)
        return shapes


def _closest_type(n_layer: int, n_embd: int, head_qk: bool, ffn_pre: bool) -> tuple[str, Preset]:
    """The original type with the same variant flags and the nearest depth ("-like" unless exact)."""
    def distance(item):
        preset = item[1]
        return ((preset.head_qk != head_qk) + (preset.ffn_pre != ffn_pre), abs(preset.n_layer - n_layer),
                abs(preset.n_embd - n_embd))

    name, preset = min(PRESETS.items(), key=distance)
    exact = (preset.n_layer, preset.n_embd, preset.head_qk, preset.ffn_pre) == (n_layer, n_embd, head_qk, ffn_pre)
    return (name if exact else name + "-like"), preset


@dataclass(frozen=True)
class BState:
    """The recurrent state of a batch; every field is (n_layer, B, C) but the copy window."""

    first_shift: torch.Tensor  # input of the first sub-layer (att, or ffnPre in layer 0) at the last position
    aa: torch.Tensor  # decayed sum of k*v (unused in an ffnPre layer)
    bb: torch.Tensor  # decayed sum of k
    ffn_shift: torch.Tensor  # input of the channel mix at the last position
    hk: torch.Tensor  # (B, n, 256) head_k of the last n <= ctx_len positions (n = 0 without HEAD_QK)
    window: torch.Tensor  # (B, n) their ids

    # The state protocol (backends/base.py State); every method returns new tensors.

    @property
    def batch_size(self) -> int:
        return self.aa.shape[1]

    def layered(self) -> tuple[torch.Tensor, ...]:
        """The (n_layer, B, C) tensors."""
        return self.first_shift, self.aa, self.bb, self.ffn_shift

    def windowed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The copy window's (B, n, ...) tensors."""
        return self.hk, self.window

    def select(self, rows: list[int]) -> "BState":
        index = torch.tensor(rows, dtype=torch.long, device=self.aa.device)
        return BState(*(t.index_select(1, index) for t in self.layered()),
                      *(t.index_select(0, index) for t in self.windowed()))

    def repeat(self, n: int) -> "BState":
        return self.select([0] * n)

    def joinable(self, other: object) -> bool:
        """For states of one model, always without HEAD_QK; with it, when the copy windows are as
        long (they differ only while a text is shorter than ctx_len)."""
        return isinstance(other, BState) and self._row_shapes() == other._row_shapes()

    def concat(self, other: "BState") -> "BState":
        """One batch: this state's rows, then the other's."""
        if not self.joinable(other):
            raise ValueError("these states cannot share a batch (copy windows of different lengths, or "
                             "another model's)")
        return BState(*(torch.cat([a, b], dim=1) for a, b in zip(self.layered(), other.layered())),
                      *(torch.cat([a, b], dim=0) for a, b in zip(self.windowed(), other.windowed())))

    def clone(self) -> "BState":
        return BState(*(t.clone() for t in (*self.layered(), *self.windowed())))

    def _row_shapes(self) -> list[tuple]:
        return ([(t.shape[0], *t.shape[2:], t.dtype, t.device) for t in self.layered()]
                + [(*t.shape[1:], t.dtype, t.device) for t in self.windowed()])


class AIWriterB:
    """The weights, transformed once at load (d, f, mixes as [C]), and the two modes."""

    def __init__(self, config: BConfig, tensors: Mapping[str, torch.Tensor], dtype=torch.float32, device="cpu"):
        self.config = config
        self.dtype, self.device = dtype, torch.device(device)
        w = {key: torch.as_tensor(t).to(device=device, dtype=dtype) for key, t in tensors.items()}
        for key in list(w):
            if key.endswith("time_decay"):
                w[key + "_rate"] = torch.exp(w[key][:, 0])  # e: d^n is computed as exp(-e n), as the original
                w[key] = torch.exp(-w[key + "_rate"])  # d, the per-step decay
            elif key.endswith("time_first"):
                w[key] = torch.exp(w[key][:, 0])  # f, the current token's bonus
            elif ".time_mix_" in key:
                w[key] = w[key].reshape(-1)
        self.w = w

    def zero_state(self, batch: int) -> BState:
        c = self.config
        zeros = lambda: torch.zeros(c.n_layer, batch, c.n_embd, dtype=self.dtype, device=self.device)  # noqa: E731
        return BState(zeros(), zeros(), zeros(), zeros(),
                      torch.zeros(batch, 0, HEAD_QK_DIM, dtype=self.dtype, device=self.device),
                      torch.zeros(batch, 0, dtype=torch.long, device=self.device))

    def forward(self, ids: torch.Tensor, state: BState) -> tuple[torch.Tensor, BState]:
        """Read ids (B, T) from `state`: the logits after the last one (B, V) and the new state.
        T == 1 is the step mode; longer inputs run the parallel mode chunk by chunk."""
        for start in range(0, ids.shape[1], CHUNK):
            logits, state = self._chunk(ids[:, start:start + CHUNK], state)
        return logits, state

    def _chunk(self, ids: torch.Tensor, state: BState) -> tuple[torch.Tensor, BState]:
        c, w = self.config, self.w
        x = F.embedding(ids, w["emb.weight"])  # (B, T, C)
        first, aa, bb, ffn = [], [], [], []
        for i in range(c.n_layer):
            p = f"blocks.{i}."
            x = F.layer_norm(x, (c.n_embd,), w[p + "ln1.weight"], w[p + "ln1.bias"], LN_EPS)
            if i == 0 and c.ffn_pre:
                y, new_aa, new_bb = self._channel_mix(p + "ffnPre.", x, state.first_shift[i]), state.aa[i], state.bb[i]
            else:
                y, new_aa, new_bb = self._time_mix(p + "att.", x, state.first_shift[i], state.aa[i], state.bb[i])
            first.append(x[:, -1])
            x = x + y
            x = F.layer_norm(x, (c.n_embd,), w[p + "ln2.weight"], w[p + "ln2.bias"], LN_EPS)
            ffn.append(x[:, -1])
            x = x + self._channel_mix(p + "ffn.", x, state.ffn_shift[i])
            aa.append(new_aa)
            bb.append(new_bb)
        z = F.layer_norm(x, (c.n_embd,), w["ln_out.weight"], w["ln_out.bias"], LN_EPS)  # (B, T, C)
        logits = F.linear(z[:, -1], w["head.weight"])  # (B, V)
        hk, window = state.hk, state.window
        if c.head_qk:
            hk = torch.cat([hk, F.linear(z, w["head_k.weight"])], dim=1)[:, -c.ctx_len:]  # (B, n, 256)
            window = torch.cat([window, ids], dim=1)[:, -c.ctx_len:]
            q = F.linear(z[:, -1], w["head_q.weight"])  # (B, 256)
            scores = (hk @ q[:, :, None])[:, :, 0] / HEAD_QK_DIM  # (B, n)
            logits = logits.scatter_add(1, window, scores)
        return logits, BState(torch.stack(first), torch.stack(aa), torch.stack(bb), torch.stack(ffn), hk, window)

    def _time_mix(self, p: str, x: torch.Tensor, last: torch.Tensor, aa: torch.Tensor, bb: torch.Tensor):
        w, T = self.w, x.shape[1]
        previous = torch.cat([last[:, None], x[:, :-1]], dim=1)  # (B, T, C)
        k = F.linear(_mix(x, previous, w[p + "time_mix_k"]), w[p + "key.weight"])
        v = F.linear(_mix(x, previous, w[p + "time_mix_v"]), w[p + "value.weight"])
        r = F.linear(_mix(x, previous, w[p + "time_mix_r"]), w[p + "receptance.weight"])
        k = torch.exp(torch.clamp(k, max=K_MAX))
        d, e, f = w[p + "time_decay"], w[p + "time_decay_rate"], w[p + "time_first"]  # (C,)
        if T == 1:  # step mode: the recurrence
            kv, k1 = (k * v)[:, 0], k[:, 0]
            num, den = aa + f * kv, bb + f * k1
            new_aa, new_bb = d * aa + kv, d * bb + k1
            out = (torch.sigmoid(r[:, 0]) * num / (den + self.config.b_eps))[:, None]
        else:  # parallel mode: decay[t, u] = d^(t-1-u) for u < t, f for u == t
            n = torch.arange(T, device=x.device, dtype=x.dtype)
            gap = n[:, None] - 1 - n[None, :]  # (T, T)
            decay = torch.exp(-e * gap.clamp(min=0)[:, :, None]) * (gap >= 0)[:, :, None]  # (T, T, C)
            decay = decay + torch.eye(T, device=x.device, dtype=x.dtype)[:, :, None] * f
            carried = torch.exp(-e * n[:, None])  # (T, C): d^t for the state before the chunk
            num = torch.einsum("tuc,buc->btc", decay, k * v) + carried * aa[:, None]
            den = torch.einsum("tuc,buc->btc", decay, k) + carried * bb[:, None]
            out = torch.sigmoid(r) * num / (den + self.config.b_eps)
            tail = torch.exp(-e * (T - 1 - n)[:, None])  # (T, C): d^(T-1-u)
            new_aa = torch.einsum("uc,buc->bc", tail, k * v) + torch.exp(-e * T) * aa
            new_bb = torch.einsum("uc,buc->bc", tail, k) + torch.exp(-e * T) * bb
        return F.linear(out, w[p + "output.weight"]), new_aa, new_bb

    def _channel_mix(self, p: str, x: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        w = self.w
        previous = torch.cat([last[:, None], x[:, :-1]], dim=1)
        k = F.linear(_mix(x, previous, w[p + "time_mix_k"]), w[p + "key.weight"])
        r = F.linear(_mix(x, previous, w[p + "time_mix_r"]), w[p + "receptance.weight"])
        return torch.sigmoid(r) * F.linear(torch.square(torch.relu(k)), w[p + "value.weight"])


def _mix(x: torch.Tensor, previous: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    return x * mu + previous * (1 - mu)
