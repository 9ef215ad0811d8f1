"""The ONNX graphs of RWKV-5.2 and RWKV-6, built from numpy weights (no torch).

They compute what `rwkv5.RWKV5` and `rwkv6.RWKV6` compute (read those modules for the math),
with onnx_v7.py's skeleton: the same per-layer inputs, outputs and state layout (wkv laid out
[key dim, value dim]), the same graph for any number of tokens (an If per layer on T == 1
between the step and the chunked recurrence), fp16 and the quantized forms as there. What
differs is here: the time and channel mixing, and the recurrence in both forms.

The chunked recurrence is `rwkv5.wkv_chunked`: chunks of CHUNK_LEN steps, every decay ratio
Γ_t/Γ_s (s <= t) taken in log space so that decays near 0 never overflow, the coupling of the
tokens inside a chunk as an elementwise (c, c, N) product, and the hand-over of the state from
chunk to chunk in a Scan.
"""

from __future__ import annotations

import numpy as np
import onnx

from ai_writer.models.config import ModelConfig
from ai_writer.models.rwkv.onnx_v7 import (
    Architecture,
    _ChunkedForm,
    _Graph,
    _Initializers,
    _StepForm,
    _value,
    build_model as _build_model,
    float_reader,
    folded_embedding,
)

CHUNK_LEN = 16  # as rwkv5.CHUNK_LEN (not imported: the ONNX path never imports torch)
GROUP_NORM_EPS = 64e-5  # as rwkv5.GROUP_NORM_EPS
RESCALE_EVERY = 6  # as rwkv5.RESCALE_EVERY
PROJECTIONS = ("receptance", "key", "value", "output", "gate")


def prepare_weights(tensors, config: ModelConfig):
    """Yield (name, array, role) one weight at a time (as onnx_v7.prepare_weights), folding what never
    changes: ln0 into the embedding, projections transposed to [in, out], the token-shift factors
    stacked as "how far toward the previous token", RWKV-5.2's decay as log w."""
    C, H, N = config.n_embd, config.n_head, config.head_size
    get = float_reader(tensors)
    yield "emb", folded_embedding(get), "embedding"
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias"):
            yield p + name, get(p + name), "vector"
        yield p + "att.ln_x.weight", get(p + "att.ln_x.weight", (H, N)), "vector"
        yield p + "att.ln_x.bias", get(p + "att.ln_x.bias", (H, N)), "vector"
        yield p + "att.u", get(p + "att.time_faaaa", (H, N)), "vector"
        if config.version == 5:
            yield p + "att.lerp", 1 - np.stack([get(p + f"att.time_mix_{n}", (1, 1, C)) for n in "rkvg"]), "vector"
            log_w = -np.exp(get(p + "att.time_decay", (C,)).astype(np.float64)).astype(np.float32)
            yield p + "att.log_w", log_w, "vector"
            yield p + "ffn.lerp", 1 - np.stack([get(p + f"ffn.time_mix_{n}", (1, 1, C)) for n in "kr"]), "vector"
        else:
            yield p + "att.lerp", np.stack([get(p + f"att.time_maa_{n}", (1, 1, C)) for n in "wkvrg"]), "vector"
            yield p + "att.time_maa_x", get(p + "att.time_maa_x", (C,)), "vector"
            yield p + "att.time_decay", get(p + "att.time_decay", (C,)), "vector"
            for name in ("time_maa_w1", "time_maa_w2", "time_decay_w1", "time_decay_w2"):
                yield p + "att." + name, get(p + "att." + name), "lora"
            yield p + "ffn.lerp", np.stack([get(p + f"ffn.time_maa_{n}", (1, 1, C)) for n in "kr"]), "vector"
        for name in PROJECTIONS:
            yield p + f"att.{name}", np.ascontiguousarray(get(p + f"att.{name}.weight").T), "matrix"
        for name in ("key", "receptance", "value"):
            yield p + f"ffn.{name}", np.ascontiguousarray(get(p + f"ffn.{name}.weight").T), "matrix"
    yield "ln_out.weight", get("ln_out.weight"), "vector"
    yield "ln_out.bias", get("ln_out.bias"), "vector"
    yield "head", np.ascontiguousarray(get("head.weight").T), "head"


# ---- the recurrence in the two forms ---------------------------------------------------------------


class _Step(_StepForm):
    def wkv(self, g: _Graph, r, log_w, k, v, u, state):
        """As rwkv5.wkv_step: r, k, v (1, B, C), log_w (1, B, C) fp32, u (H, N), state (B, H, N, N)."""
        H, N = self.config.n_head, self.config.head_size
        heads = lambda t: g.reshape(g.to_f32(t), [-1, H, N])  # noqa: E731
        r, k, v = heads(r), heads(k), heads(v)
        read = g.op("MatMul", g.reshape(r, [-1, H, 1, N]), state)  # (B, H, 1, N)
        bonus = g.op("ReduceSum", g.op("Mul", g.op("Mul", r, g.to_f32(u)), k), g.const([-1]), keepdims=1)
        y = g.op("Add", g.reshape(read, [-1, H, N]), g.op("Mul", bonus, v))  # (B, H, N)
        new = g.op("Mul", state, g.op("Exp", g.reshape(log_w, [-1, H, N, 1])))
        new = g.op("Add", new, g.op("Mul", g.reshape(k, [-1, H, N, 1]), g.reshape(v, [-1, H, 1, N])))
        return g.reshape(y, [1, -1, H, N]), new


class _Chunked(_ChunkedForm):
    chunk_len = CHUNK_LEN

    def wkv(self, g: _Graph, r, log_w, k, v, u, state):
        """As rwkv5.wkv_chunked: r, k, v, log_w (B, T, C), u (H, N), state (B, H, N, N) -> y (B, T, H, N), state."""
        C, H, N, c = self.config.n_embd, self.config.n_head, self.config.head_size, CHUNK_LEN
        x = g.op("Concat", g.to_f32(r), log_w, g.to_f32(k), g.to_f32(v), axis=2)
        x = g.op("Pad", x, self.pads)  # (B, Tp, 4C), zeros after T
        x = g.op("Transpose", g.reshape(x, [0, -1, c, 4, H, N]), perm=[3, 1, 0, 4, 2, 5])  # (4, n, B, H, c, N)
        r, log_w, k, v = (g.op("Squeeze", t, g.const([0])) for t in g.split(x, 4, axis=0))

        log_decay = g.op("CumSum", log_w, g.const(3))  # log Γ_t, inclusive
        before = g.op("Sub", log_decay, log_w)  # log Γ_{t-1}
        log_total = g.op("Slice", log_decay, g.const([c - 1]), g.const([c]), g.const([3]))  # (n, B, H, 1, N)
        coupling = g.op("Sub", g.op("Unsqueeze", before, g.const([4])), g.op("Unsqueeze", log_decay, g.const([3])))
        earlier = np.where(np.tril(np.ones((c, c)), -1) > 0, 0.0, -np.inf)[:, :, None]  # (t, s, 1): s < t
        coupling = g.op("Exp", g.op("Add", coupling, g.const(earlier, np.float32)))  # (n, B, H, t, s, N)
        coupling = g.op("Mul", g.op("Mul", coupling, g.op("Unsqueeze", r, g.const([4]))),
                        g.op("Unsqueeze", k, g.const([3])))
        coupling = g.op("ReduceSum", coupling, g.const([-1]), keepdims=0)  # (n, B, H, t, s)
        u = g.reshape(g.to_f32(u), [H, 1, N])
        bonus = g.op("ReduceSum", g.op("Mul", g.op("Mul", r, u), k), g.const([-1]), keepdims=1)  # (n, B, H, c, 1)
        coupling = g.op("Add", coupling, g.op("Mul", bonus, g.const(np.eye(c), np.float32)))
        own = g.op("MatMul", coupling, v)  # (n, B, H, c, N)

        r_decayed = g.op("Mul", r, g.op("Exp", before))
        k_to_end = g.op("Mul", k, g.op("Exp", g.op("Sub", log_total, log_decay)))
        self._scans += 1
        body = _chunk_step_body(g.init, f"{g.scope}chunk{self._scans}/")
        state, from_state = g.op("Scan", state, r_decayed, g.op("Exp", log_total), k_to_end, v, outputs=2,
                                 body=body, num_scan_inputs=4)
        y = g.op("Add", own, from_state)
        y = g.reshape(g.op("Transpose", y, perm=[1, 0, 3, 2, 4]), [0, -1, H, N])  # (B, Tp, H, N)
        return g.op("Slice", y, g.const([0]), self.length, g.const([1])), state


def _chunk_step_body(init: _Initializers, scope: str) -> onnx.GraphProto:
    """One chunk's hand-over (the Scan body): y from the starting state, and the state at its end."""
    g = _Graph(init, scope)
    names = ["state", "r_decayed", "total", "k_to_end", "v"]
    state, r_decayed, total, k_to_end, v = (scope + n for n in names)
    y = g.op("MatMul", r_decayed, state, name="y")  # (B, H, c, N)
    carried = g.op("MatMul", g.op("Transpose", k_to_end, perm=[0, 1, 3, 2]), v)
    new_state = g.op("Add", g.op("Mul", state, g.op("Transpose", total, perm=[0, 1, 3, 2])), carried,
                     name="new_state")
    return g.graph("chunk", [_value(scope + n) for n in names], [_value(new_state), _value(y)])


# ---- mixing ----------------------------------------------------------------------------------------


def _out_scale(g: _Graph, i: int, x: str) -> str:
    """In fp16 the outputs of layer i are scaled by 2^-(i // 6) (rwkv5.RESCALE_EVERY)."""
    if g.init.act != np.float16 or i < RESCALE_EVERY:
        return x
    return g.op("Mul", x, g.act(0.5 ** (i // RESCALE_EVERY)))


def _halve(g: _Graph, i: int, x: str) -> str:
    if g.init.act == np.float16 and (i + 1) % RESCALE_EVERY == 0:
        return g.op("Mul", x, g.act(0.5))
    return x


def _lerped(g: _Graph, x: str, xx: str, factors: str, n: int) -> list[str]:
    mixed = g.op("Add", x, g.op("Mul", xx, factors))  # (n, ..., C)
    return [g.op("Squeeze", t, g.const([0])) for t in g.split(mixed, n, axis=0)]


def _time_mix(g: _Graph, form, config: ModelConfig, i: int, x, shift, state, carry):
    """As rwkv5.TimeMix / rwkv6.TimeMix6; x is the ln1 output. Returns (out, wkv state, carry)."""
    C, H, N = config.n_embd, config.n_head, config.head_size
    p = f"blocks.{i}.att."
    xx = g.op("Sub", form.previous(g, x, shift), x)
    if config.version == 5:
        xr, xk, xv, xg = _lerped(g, x, xx, p + "lerp", 4)
        k = g.matmul(xk, p + "key")
        log_w = g.op("Expand", g.to_f32(p + "log_w"), g.op("Shape", k))
    else:
        m = g.op("Tanh", g.matmul(g.op("Add", x, g.op("Mul", xx, p + "time_maa_x")), p + "time_maa_w1"))
        m = g.op("Transpose", g.reshape(m, [-1, 5, config.dim_mix]), perm=[1, 0, 2])  # (5, rows, D)
        m = g.op("Reshape", g.matmul(m, p + "time_maa_w2"), g.op("Concat", g.const([5]), g.op("Shape", x), axis=0))
        xw, xk, xv, xr, xg = _lerped(g, x, xx, g.op("Add", p + "lerp", m), 5)
        k = g.matmul(xk, p + "key")
        w = g.op("Add", p + "time_decay", g.matmul(g.op("Tanh", g.matmul(xw, p + "time_decay_w1")),
                                                   p + "time_decay_w2"))
        log_w = g.op("Neg", g.op("Exp", g.to_f32(w)))
    r, v = g.matmul(xr, p + "receptance"), g.matmul(xv, p + "value")
    gate = g.matmul(xg, p + "gate")
    gate = g.op("Mul", gate, g.op("Sigmoid", gate))  # silu

    y, state = form.wkv(g, r, log_w, k, v, p + "u", state)  # y (..., H, N) fp32
    y = g.op("LayerNormalization", y, g.const(np.ones(N), np.float32), axis=-1, epsilon=GROUP_NORM_EPS)
    y = g.op("Add", g.op("Mul", y, g.to_f32(p + "ln_x.weight")), g.to_f32(p + "ln_x.bias"))  # GroupNorm(H), fp32
    y = g.op("Mul", g.reshape(g.to_act(y), [0, 0, C]), gate)
    return g.matmul(_out_scale(g, i, y), p + "output"), state, carry


def _channel_mix(g: _Graph, i: int, x: str, previous: str) -> str:
    """As rwkv5.ChannelMix; x is the ln2 output, previous its token shift."""
    p = f"blocks.{i}.ffn."
    xk, xr = _lerped(g, x, g.op("Sub", previous, x), p + "lerp", 2)
    k = g.op("Relu", g.matmul(xk, p + "key"))
    value = g.matmul(_out_scale(g, i, g.op("Mul", k, k)), p + "value")
    return g.op("Mul", g.op("Sigmoid", g.matmul(xr, p + "receptance")), value)


RWKV5_6 = Architecture(_time_mix, _channel_mix, _Step, _Chunked, after_layer=_halve)


def build_model(weights, config: ModelConfig, writer, *, fp16: bool = False, decode_only: bool = False) -> onnx.ModelProto:
    """The model as an ONNX ModelProto; `weights` as `prepare_weights` yields them (see onnx_v7.build_model)."""
    return _build_model(weights, config, writer, fp16=fp16, decode_only=decode_only, arch=RWKV5_6)
