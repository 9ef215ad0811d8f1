"""The AI-Writer 2022-02-15 model ("generation A"), conformance README §4.

A windowed model: it reads the last `ctx_len` characters, and every position of the window has
its own parameters (decay curves, output scales). It has no recurrent state, so once the text is
longer than the window, each new character re-reads the whole window: the window slides and
every position changes. Until then the model is causal, and a new character costs one position:
`WindowCache` keeps what the positions already read leave behind (per layer the token-shift
inputs, the running sum of k and every position's k*v; the copy mechanism's keys), much like the
key/value cache of a transformer.

Load-time transform (§4.2): time_ww[h, t, u] = time_w[h, L-1-(t-u)] * time_alpha[h, 0, u]
* time_beta[h, t, 0] for u <= t. Only the rows a step needs are built, on the fly.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn.functional as F

from ai_writer.errors import ModelFileError

LN_EPS = 1e-5


@dataclass(frozen=True)
class AConfig:
    vocab_size: int  # V: rows of tok_emb and head
    ctx_len: int  # L: the window; each position has its own parameters
    n_layer: int
    n_head: int  # H: decay curves per layer
    n_embd: int  # C: model width
    n_attn: int  # A: width of key/value/receptance (C in the release)
    ffn_dim: int  # F: hidden width of the channel mix (5C/2 in the release)
    head_qk_dim: int  # Q: width of the copy mechanism's query and key (256)
    generation: ClassVar[str] = "2022-02-15"

    def describe(self) -> str:
        return (f"AI-Writer 2022-02-15 window model L{self.n_layer}-D{self.n_embd} ({self.n_head} heads), "
                f"vocab {self.vocab_size}, ctx_len {self.ctx_len} (re-reads the last {self.ctx_len} "
                "characters for each new one once the text is longer)")

    def to_json(self) -> str:
        return json.dumps({"generation": self.generation, **dataclasses.asdict(self)})

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], source: str) -> "AConfig":
        """Infer the config from the tensor shapes and check every key against it."""
        def shape(key):
            if key not in shapes:
                raise ModelFileError(f"{source}: not an AI-Writer 2022-02-15 model: tensor {key!r} is missing")
            return tuple(shapes[key])

        vocab_size, n_embd = shape("tok_emb.weight")
        layers = {int(m.group(1)) for k in shapes if (m := re.match(r"blocks\.(\d+)\.", k))}
        config = cls(vocab_size=vocab_size, ctx_len=shape("time_out")[1], n_layer=max(layers, default=-1) + 1,
                     n_head=shape("blocks.0.attn.time_w")[0], n_embd=n_embd,
                     n_attn=shape("blocks.0.attn.key.weight")[0], ffn_dim=shape("blocks.0.mlp.key.weight")[0],
                     head_qk_dim=shape("head_q.weight")[0])
        if config.n_attn % config.n_head or config.n_embd % 2:
            raise ModelFileError(f"{source}: {config.n_head} heads do not divide the attention width {config.n_attn}")
        check_shapes(source, "AI-Writer 2022-02-15 model", config.expected_shapes(), shapes)
        return config

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        V, L, C, H, A, Fd, Q = (self.vocab_size, self.ctx_len, self.n_embd, self.n_head, self.n_attn,
                                self.ffn_dim, self.head_qk_dim)
        shapes = {"time_out": (1, L, 1), "copy_mask": (L, L), "tok_emb.weight": (V, C), "ln_f.weight": (C,),
                  "ln_f.bias": (C,), "head.weight": (V, C), "head_q.weight": (Q, C), "head_q.bias": (Q,),
                  "head_k.weight": (Q, C), "head_k.bias": (Q,)}
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            for name in ("ln1", "ln2"):
                shapes[p + name + ".weight"] = shapes[p + name + ".bias"] = (C,)
            shapes.update({p + "attn.time_w": (H, L), p + "attn.time_alpha": (H, 1, L),
                           p + "attn.time_beta": (H, L, 1), p + "attn.time_gamma": (L, 1)})
            for name in ("key", "value", "receptance"):
                shapes[p + f"attn.{name}.weight"], shapes[p + f"attn.{name}.bias"] = (A, C), (A,)
            shapes[p + "attn.output.weight"], shapes[p + "attn.output.bias"] = (C, A), (C,)
            for name in ("key", "value"):
                shapes[p + f"mlp.{name}.weight"], shapes[p + f"mlp.{name}.bias"] = (Fd, C), (Fd,)
            shapes[p + "mlp.weight.weight"], shapes[p + "mlp.weight.bias"] = (C, Fd), (C,)
            shapes[p + "mlp.receptance.weight"], shapes[p + "mlp.receptance.bias"] = (C, C), (C,)
        return shapes


def check_shapes(source: str, what: str, expected: Mapping[str, tuple], shapes: Mapping[str, tuple]) -> None:
    """Every expected key present with its shape, and nothing else: one line naming the first fault."""
    for key, want in expected.items():
        if key not in shapes:
            raise ModelFileError(f"{source}: not an {what} of this shape: tensor {key!r} is missing")
        if tuple(shapes[key]) != tuple(want):
            raise ModelFileError(f"{source}: tensor {key!r} has shape {list(shapes[key])}, expected {list(want)}")
    extra = [key for key in shapes if key not in expected]
    if extra:
        more = f" and {len(extra) - 1} more" if len(extra) > 1 else ""
        raise ModelFileError(f"{source}: not an {what}: unexpected tensor {extra[0]!r}{more}")


def time_ww(time_w: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, t0: int, t1: int, u1: int) -> torch.Tensor:
    """Rows t0..t1-1, columns 0..u1-1 of the (H, L, L) position-pair weights of one layer."""
    L = time_w.shape[1]
    t = torch.arange(t0, t1, device=time_w.device)[:, None]
    u = torch.arange(u1, device=time_w.device)[None, :]
    distance_index = (L - 1 - (t - u)).clamp(0, L - 1)  # (T, U); u > t is masked below
    ww = time_w[:, distance_index] * alpha[:, :, :u1] * beta[:, t0:t1, :]  # (H, T, U)
    return ww * (u <= t)


class PositionStore:
    """Per-position tensors of a batch, appended to in place: a state of length n reads positions
    < n only, and they are never written again. A writer that finds positions from n on already
    taken (another branch continued from the same state) copies the first n positions first."""

    def __init__(self, kv: torch.Tensor, kappa: torch.Tensor, ids: torch.Tensor, filled: int = 0):
        self.kv = kv  # (n_layer, B, L, A) k*v of every position read
        self.kappa = kappa  # (B, L, Q) the copy mechanism's key of every position
        self.ids = ids  # (B, L) the ids read
        self.filled = filled

    @classmethod
    def empty(cls, config: AConfig, batch: int, dtype, device) -> "PositionStore":
        L = config.ctx_len
        return cls(torch.empty(config.n_layer, batch, L, config.n_attn, dtype=dtype, device=device),
                   torch.empty(batch, L, config.head_qk_dim, dtype=dtype, device=device),
                   torch.zeros(batch, L, dtype=torch.long, device=device))

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.kv, self.kappa, self.ids))

    def for_writing(self, length: int) -> "PositionStore":
        if self.filled == length:
            return self
        return self.select(list(range(self.ids.shape[0])), length)

    def select(self, rows: list[int], length: int) -> "PositionStore":
        """A new store of the given rows' first `length` positions."""
        return PositionStore.gather([(self, rows)], length)

    @staticmethod
    def gather(parts: list[tuple["PositionStore", list[int]]], length: int) -> "PositionStore":
        """A new store of the first `length` positions of the rows of several stores, in order."""
        first = parts[0][0]
        n_layer, _, L, A = first.kv.shape
        batch = sum(len(rows) for _, rows in parts)
        copy = PositionStore(first.kv.new_empty(n_layer, batch, L, A),
                             first.kappa.new_empty(batch, L, first.kappa.shape[2]), first.ids.new_zeros(batch, L),
                             length)
        at = 0
        for store, rows in parts:
            index, end = torch.tensor(rows, dtype=torch.long, device=store.ids.device), at + len(rows)
            copy.kv[:, at:end, :length] = store.kv[:, :, :length].index_select(1, index)
            copy.kappa[at:end, :length] = store.kappa[:, :length].index_select(0, index)
            copy.ids[at:end, :length] = store.ids[:, :length].index_select(0, index)
            at = end
        return copy


@dataclass(frozen=True)
class WindowCache:
    """What the first `length` positions of the window leave for the next ones."""

    length: int
    shift1: torch.Tensor  # (n_layer, B, C) ln1 output of the last position
    shift2: torch.Tensor  # (n_layer, B, C) ln2 output of the last position
    ksum: torch.Tensor  # (n_layer, B, A) running sum of k
    store: PositionStore

    @property
    def batch_size(self) -> int:
        return self.shift1.shape[1]

    @property
    def nbytes(self) -> int:
        small = sum(t.element_size() * t.nelement() for t in (self.shift1, self.shift2, self.ksum))
        return small + self.store.nbytes

    def select(self, rows: list[int]) -> "WindowCache":
        index = torch.tensor(rows, dtype=torch.long, device=self.shift1.device)
        return WindowCache(self.length, *(t.index_select(1, index) for t in (self.shift1, self.shift2, self.ksum)),
                           self.store.select(rows, self.length))

    def concat(self, other: "WindowCache") -> "WindowCache":
        """One batch: this cache's rows, then the other's, of windows of the same length."""
        if other.length != self.length:
            raise ValueError(f"caches of {self.length} and {other.length} positions cannot share a batch")
        small = (torch.cat([a, b], dim=1) for a, b in zip((self.shift1, self.shift2, self.ksum),
                                                           (other.shift1, other.shift2, other.ksum)))
        parts = [(self.store, list(range(self.batch_size))), (other.store, list(range(other.batch_size)))]
        return WindowCache(self.length, *small, PositionStore.gather(parts, self.length))


class AIWriterA:
    """The model's weights (float32 by default) and its forward pass over new positions of the window."""

    def __init__(self, config: AConfig, tensors: Mapping[str, torch.Tensor], dtype=torch.float32, device="cpu"):
        self.config = config
        self.w = {key: torch.as_tensor(t).to(device=device, dtype=dtype) for key, t in tensors.items()}
        self.dtype, self.device = dtype, torch.device(device)

    def forward(self, ids: torch.Tensor, cache: WindowCache | None, *, all_positions: bool = False,
                keep_cache: bool = True) -> tuple[torch.Tensor, WindowCache | None]:
        """Read ids (B, T) at positions cache.length.. (0 without a cache); they must fit in the window.

        Returns the logits of the last position (B, V), or of every new position (B, T, V), and the
        cache after them (None with keep_cache=False, which writes nothing: used for export)."""
        c, w = self.config, self.w
        B, T = ids.shape
        at = 0 if cache is None else cache.length
        if at + T > c.ctx_len:
            raise ValueError(f"{at} + {T} positions do not fit in a window of {c.ctx_len}")
        store = None
        if keep_cache:
            store = cache.store.for_writing(at) if cache is not None else PositionStore.empty(c, B, self.dtype,
                                                                                              self.device)
            store.ids[:, at:at + T] = ids
        zeros = torch.zeros(c.n_layer, B, c.n_embd, dtype=self.dtype, device=self.device)
        shift1 = zeros if cache is None else cache.shift1
        shift2 = zeros if cache is None else cache.shift2
        ksum = torch.zeros(c.n_layer, B, c.n_attn, dtype=self.dtype, device=self.device) if cache is None \
            else cache.ksum
        new_shift1, new_shift2, new_ksum = [], [], []
        x = F.embedding(ids, w["tok_emb.weight"])  # (B, T, C)
        for i in range(c.n_layer):
            p = f"blocks.{i}."
            a = F.layer_norm(x, (c.n_embd,), w[p + "ln1.weight"], w[p + "ln1.bias"], LN_EPS)
            y, last_ksum = self._time_mix(i, _half_shift(a, shift1[i]), at, ksum[i], store)
            x = x + y
            b = F.layer_norm(x, (c.n_embd,), w[p + "ln2.weight"], w[p + "ln2.bias"], LN_EPS)
            x = x + self._channel_mix(i, _half_shift(b, shift2[i]))
            new_shift1.append(a[:, -1])
            new_shift2.append(b[:, -1])
            new_ksum.append(last_ksum)
        h = F.layer_norm(x, (c.n_embd,), w["ln_f.weight"], w["ln_f.bias"], LN_EPS)  # (B, T, C)
        kappa = F.linear(h, w["head_k.weight"], w["head_k.bias"])  # (B, T, Q)
        if store is not None:
            store.kappa[:, at:at + T] = kappa
            store.filled = at + T
            kappa_all, ids_all = store.kappa[:, :at + T], store.ids[:, :at + T]
        else:
            kappa_all, ids_all = kappa, ids
        out = slice(0, T) if all_positions else slice(T - 1, T)
        logits = self._head(h[:, out], kappa_all, ids_all, at + out.start, at + T)  # (B, T_out, V)
        new_cache = None
        if store is not None:
            new_cache = WindowCache(at + T, torch.stack(new_shift1), torch.stack(new_shift2), torch.stack(new_ksum),
                                    store)
        return (logits if all_positions else logits[:, -1]), new_cache

    def _time_mix(self, i: int, mixed: torch.Tensor, at: int, ksum: torch.Tensor, store: PositionStore | None):
        c, w, p = self.config, self.w, f"blocks.{i}.attn."
        B, T, _ = mixed.shape
        k = torch.exp(torch.clamp(F.linear(mixed, w[p + "key.weight"], w[p + "key.bias"]), min=-60, max=30))
        v = F.linear(mixed, w[p + "value.weight"], w[p + "value.bias"])
        r = F.linear(mixed, w[p + "receptance.weight"], w[p + "receptance.bias"])  # (B, T, A)
        sum_k = ksum[:, None, :] + torch.cumsum(k, dim=1)  # (B, T, A)
        kv = k * v
        if store is not None:
            store.kv[i, :, at:at + T] = kv
            kv = store.kv[i, :, :at + T]  # (B, U, A) every position read so far
        ww = time_ww(w[p + "time_w"], w[p + "time_alpha"], w[p + "time_beta"], at, at + T, at + T)  # (H, T, U)
        H, D = c.n_head, c.n_attn // c.n_head
        wkv = torch.einsum("htu,buhd->bthd", ww, kv.reshape(B, at + T, H, D)).reshape(B, T, c.n_attn)
        y = F.linear(torch.sigmoid(r) * wkv / sum_k, w[p + "output.weight"], w[p + "output.bias"])
        return y * w[p + "time_gamma"][at:at + T], sum_k[:, -1]

    def _channel_mix(self, i: int, mixed: torch.Tensor) -> torch.Tensor:
        w, p = self.w, f"blocks.{i}.mlp."
        k = F.linear(mixed, w[p + "key.weight"], w[p + "key.bias"])
        v = F.linear(mixed, w[p + "value.weight"], w[p + "value.bias"])
        wkv = F.linear(F.mish(k) * v, w[p + "weight.weight"], w[p + "weight.bias"])
        return torch.sigmoid(F.linear(mixed, w[p + "receptance.weight"], w[p + "receptance.bias"])) * wkv

    def _head(self, h: torch.Tensor, kappa_all: torch.Tensor, ids_all: torch.Tensor, t0: int, t1: int):
        """Logits at positions t0..t1-1: the scaled head plus the copy term over positions <= t."""
        w = self.w
        logits = F.linear(h, w["head.weight"]) * w["time_out"][0, t0:t1]  # (B, T_out, V)
        q = F.linear(h, w["head_q.weight"], w["head_q.bias"])  # (B, T_out, Q)
        scores = q @ kappa_all.transpose(1, 2) / self.config.head_qk_dim  # (B, T_out, U)
        scores = scores * w["copy_mask"][t0:t1, : kappa_all.shape[1]]
        index = ids_all[:, None, :].expand(-1, h.shape[1], -1)
        return logits.scatter_add(2, index, scores)


def _half_shift(a: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """The first half of the channels from the position before (previous for the first), the rest as is."""
    half = a.shape[-1] // 2
    shifted = torch.cat([previous[:, None, :half], a[:, :-1, :half]], dim=1)
    return torch.cat([shifted, a[..., half:]], dim=-1)
