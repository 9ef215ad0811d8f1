"""The ONNX graph of an RWKV-7 model, built node by node from numpy weights (no torch).

It computes exactly what `rwkv7.RWKV7.forward` computes (read that module for the math);
export/onnx.py writes it to a file. Inputs `tokens` (B, T) and the state `att_shift`
(L, B, C), `wkv` (L, B, H, N, N), `ffn_shift` (L, B, C); outputs the last position's `logits`
(B, V) and `new_att_shift`, `new_wkv`, `new_ffn_shift`. B and T are dynamic.

Two forms of the layer stack share the weights, the initializers of the main graph:

- step (decoding): (1, B, C) rows, matrix-vector products, the wkv update as in
  `rwkv7.wkv_step`;
- chunked (prefill): the projections as (B·T, C) matrix products and the recurrence as
  `rwkv7.wkv_chunked`: padded to whole chunks of CHUNK_LEN steps (padded steps have decay 1
  and every other input 0, so they leave the state alone), everything inside a chunk computed
  for all chunks at once, and only the hand-over of the state from chunk to chunk sequential,
  in a Scan. ONNX has no triangular solve: (I - A)⁻¹ for strictly lower-triangular A is built
  by doubling the solved block size, X₂ₛ = Xₛ + Xₛ·Aₛ·Xₛ (Aₛ: the entries of A that couple
  two neighbouring s-blocks); that is block forward substitution, exact and as stable as it.

How one graph holds both ("prefix" design): an `If` on T > 1 reads the first T - 1 tokens in
the chunked form into a state (the other branch passes the state through), then the main graph
runs the step form on the last token, which gives the logits. Decoding thus runs the step form
in the main graph, where ONNX Runtime plans memory best, and pays only for one near-empty If
call (about 6 µs); the last FFN and the head run on one position in every case. The obvious
design, an If on T == 1 choosing between a whole step form and a whole chunked form, runs every
decode step as a subgraph and was measurably slower. The figures are in export/onnx.py's
docstring; benchmarks/onnx_decode_design.py measures them again.

In fp16 the weights and activations are fp16 and the decay and wkv recurrence run in fp32, as
the torch model does under half precision; the graph's inputs and outputs stay float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ai_writer.models.config import ModelConfig

OPSET = 21
ACCURACY_LEVEL = 4  # MatMulNBits: activations quantized to int8 per block too, integer dot products
CHUNK_LEN = 32  # time steps per chunk of the parallel recurrence (a power of two)
DECAY_SCALE = math.exp(-0.5)  # as rwkv7.DECAY_SCALE: log w = -exp(-0.5) * sigmoid(.)
GROUP_NORM_EPS = 64e-5  # as rwkv7.GROUP_NORM_EPS
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default
NORMALIZE_EPS = 1e-12  # F.normalize's default
LORAS = ("w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2")
PROJECTIONS = ("receptance", "key", "value", "output")


# ---- weights: the checkpoint's tensors in the form the graph reads them ---------------------------


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias).astype(np.float32)


def float_reader(tensors):
    """get(key, shape=None): a checkpoint tensor as a new float32 array, reshaped if asked. `tensors` is a
    models.tensors.TensorSource (each tensor read when asked for, nothing kept) or a mapping."""
    fresh = hasattr(tensors, "read")  # a TensorSource's arrays are new; a mapping's are the caller's: copied

    def get(key, shape=None):
        array = tensors.read(key) if fresh else np.array(tensors[key], dtype=np.float32)
        return array.reshape(shape) if shape is not None else array

    return get


EMBEDDING_ROWS = 8192  # rows of the embedding normalised at a time: bounds the float64 temporaries


def folded_embedding(get) -> np.ndarray:
    """The embedding with layer 0's ln0 applied once, as every RWKV version reads it."""
    emb, weight, bias = get("emb.weight"), get("blocks.0.ln0.weight"), get("blocks.0.ln0.bias")
    for start in range(0, emb.shape[0], EMBEDDING_ROWS):
        emb[start : start + EMBEDDING_ROWS] = layer_norm(emb[start : start + EMBEDDING_ROWS], weight, bias)
    return emb


def prepare_weights(tensors, config: ModelConfig):
    """Yield (name, array, role) one weight at a time, folding what never changes, as the torch model
    does at load: ln0 into the embedding, the projections transposed to [in, out], vectors flattened,
    the six lerp factors stacked. Roles (export/weights.py): embedding, matrix, head, lora, vector."""
    C, H, N = config.n_embd, config.n_head, config.head_size
    get = float_reader(tensors)
    yield "emb", folded_embedding(get), "embedding"
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.w0", "att.a0", "att.k_k",
                     "att.r_k", "ffn.x_k") + (("att.v0",) if i > 0 else ()):
            yield p + name, get(p + name, (C,)), "vector"
        yield p + "att.lerp", np.stack([get(p + f"att.x_{n}", (1, 1, C)) for n in "rwkvag"]), "vector"  # (6,1,1,C)
        k_a = get(p + "att.k_a", (C,))
        yield p + "att.k_a", k_a, "vector"
        yield p + "att.one_minus_k_a", 1 - k_a, "vector"  # 1 + (a - 1)·k_a = a·k_a + (1 - k_a)
        yield p + "att.ln_x.weight", get(p + "att.ln_x.weight", (H, N)), "vector"
        yield p + "att.ln_x.bias", get(p + "att.ln_x.bias", (H, N)), "vector"
        for name in LORAS:
            if i > 0 or name[0] != "v":
                yield p + "att." + name, get(p + "att." + name), "lora"
        for name in PROJECTIONS:
            yield p + f"att.{name}", np.ascontiguousarray(get(p + f"att.{name}.weight").T), "matrix"
        yield p + "ffn.key", np.ascontiguousarray(get(p + "ffn.key.weight").T), "matrix"
        yield p + "ffn.value", np.ascontiguousarray(get(p + "ffn.value.weight").T), "matrix"
    yield "ln_out.weight", get("ln_out.weight"), "vector"
    yield "ln_out.bias", get("ln_out.bias"), "vector"
    yield "head", np.ascontiguousarray(get("head.weight").T), "head"


# ---- graph building blocks ------------------------------------------------------------------------


class _Initializers:
    """The main graph's initializers: the weights and every constant, seen by all subgraphs.

    They go to `writer` (export/weights.py's WeightWriter) one by one as they come, stored in the
    form the precision asks for; a quantized weight is read by MatMulNBits instead of MatMul."""

    def __init__(self, act: np.dtype, writer):
        self.act = act  # dtype of activations (and of the float weights, but for a float16 embedding)
        self.writer = writer
        self._small: dict[tuple, str] = {}

    def weight(self, name: str, array: np.ndarray, role: str) -> str:
        self.writer.add(name, array, role)
        return name

    def const(self, value, dtype=np.int64) -> str:
        """A small constant, stored once however often it is asked for."""
        array = np.asarray(value, dtype=dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._small:
            name = f"const_{len(self._small)}"
            self.writer.add_constant(name, array)
            self._small[key] = name
        return self._small[key]


class _Graph:
    """The nodes of one graph or subgraph; value names are unique across the whole model."""

    def __init__(self, init: _Initializers, scope: str):
        self.init, self.scope, self.nodes = init, scope, []
        self._names: set[str] = set()

    def op(self, op_type: str, *inputs: str, name: str | None = None, outputs: int = 1, **attrs):
        base = f"{self.scope}{name or op_type}"
        if base in self._names or name is None:
            base = f"{base}_{len(self.nodes)}"
        self._names.add(base)
        outs = [base] if outputs == 1 else [f"{base}:{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=base, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        return self.init.const(value, dtype)

    def act(self, value) -> str:
        return self.init.const(value, self.init.act)

    def to_f32(self, x: str) -> str:
        return x if self.init.act == np.float32 else self.op("Cast", x, to=TensorProto.FLOAT)

    def to_act(self, x: str) -> str:
        return x if self.init.act == np.float32 else self.op("Cast", x, to=TensorProto.FLOAT16)

    def reshape(self, x: str, shape) -> str:
        return self.op("Reshape", x, self.const(shape))

    def matmul(self, x: str, weight: str) -> str:
        q = self.init.writer.quantized.get(weight)
        if q is None:
            return self.op("MatMul", x, weight, name=weight + ".matmul")
        return self.op("MatMulNBits", x, q.blocks, q.scales, name=weight + ".matmul", domain="com.microsoft",
                       K=q.k, N=q.n, bits=q.bits, block_size=q.block, accuracy_level=ACCURACY_LEVEL)

    def embed(self, ids: str, name: str | None = None) -> str:
        """The embedding rows of `ids`, in the activations' dtype (a float16 embedding is widened)."""
        rows = self.op("Gather", "emb", ids, axis=0, name=name)
        stored = np.dtype(self.init.writer.dtypes.get("emb", self.init.act))
        return rows if stored == self.init.act else self.op("Cast", rows, to=helper.np_dtype_to_tensor_dtype(
            self.init.act))

    def layer_norm(self, x: str, prefix: str, eps: float = LAYER_NORM_EPS) -> str:
        return self.op("LayerNormalization", x, prefix + ".weight", prefix + ".bias", axis=-1, epsilon=eps)

    def split(self, x: str, n: int, axis: int) -> list[str]:
        return self.op("Split", x, axis=axis, num_outputs=n, outputs=n) if n > 1 else [x]

    def graph(self, name: str, inputs, outputs) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, inputs, outputs)

    def rename(self, old: str, new: str) -> None:
        """Give a value another name (a graph output's, say) without an Identity node."""
        for node in self.nodes:
            for names in (node.input, node.output):
                for k, name in enumerate(names):
                    if name == old:
                        names[k] = new


def _value(name: str, shape=None, elem=TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


# ---- the two forms: what differs between decoding one token and reading many --------------------


class _StepForm:
    """T == 1: rows are (1, B, C), the state is the previous token."""

    def __init__(self, config: ModelConfig):
        self.config = config

    def enter(self, g: _Graph, x: str) -> str:
        return g.reshape(x, [1, -1, self.config.n_embd])  # (B, 1, C) -> (1, B, C)

    def previous(self, g: _Graph, x: str, shift: str) -> str:
        return shift

    def last(self, g: _Graph, x: str) -> str:
        return x

    def wkv(self, g: _Graph, r, log_w, k, v, a, b, state):
        """As rwkv7.wkv_step: r, k, v (1, B, C), log_w (1, B, C) fp32, a, b (1, B, H, N), state (B, H, N, N)."""
        H, N = self.config.n_head, self.config.head_size
        column = lambda t: g.reshape(g.to_f32(t), [-1, H, N, 1])  # noqa: E731
        row = lambda t: g.reshape(g.to_f32(t), [-1, H, 1, N])  # noqa: E731
        state_a = g.op("MatMul", state, column(a))  # (B, H, N, 1)
        new = g.op("Mul", state, row(g.op("Exp", log_w)))
        new = g.op("Add", new, g.op("Mul", state_a, row(b)))
        new = g.op("Add", new, g.op("Mul", column(v), row(k)))  # (B, H, N, N)
        y = g.op("MatMul", new, column(r))  # (B, H, N, 1)
        return g.reshape(y, [1, -1, H, N]), new


class _ChunkedForm:
    """T > 1: rows are (B, T, C); the recurrence runs chunk by chunk as rwkv7.wkv_chunked."""

    chunk_len = CHUNK_LEN

    def __init__(self, config: ModelConfig, g: _Graph, length: str):
        self.config, self.length = config, length  # length: T as a 1-element int64 tensor
        c = self.chunk_len
        pad = g.op("Mod", g.op("Sub", g.const([c]), g.op("Mod", length, g.const([c]))), g.const([c]))
        self.pads = g.op("Concat", g.const([0, 0, 0, 0]), pad, g.const([0]), axis=0)  # (B, T, 6C): T's end
        self._scans = 0

    def enter(self, g: _Graph, x: str) -> str:
        return x

    def previous(self, g: _Graph, x: str, shift: str) -> str:
        first = g.reshape(shift, [-1, 1, self.config.n_embd])  # (1, B, C) -> (B, 1, C)
        rest = g.op("Slice", x, g.const([0]), g.const([-1]), g.const([1]))
        return g.op("Concat", first, rest, axis=1)

    def last(self, g: _Graph, x: str) -> str:
        return g.op("Slice", x, g.const([-1]), g.const([2**62]), g.const([1]))  # (B, 1, C)

    def wkv(self, g: _Graph, r, log_w, k, v, a, b, state):
        """r, k, v, log_w (B, T, C), a, b (B, T, H, N), state (B, H, N, N) -> y (B, T, H, N), state."""
        C, H, N, c = self.config.n_embd, self.config.n_head, self.config.head_size, CHUNK_LEN
        parts = [g.to_f32(r), log_w, g.to_f32(k), g.to_f32(v), g.reshape(g.to_f32(a), [0, 0, C]),
                 g.reshape(g.to_f32(b), [0, 0, C])]
        x = g.op("Pad", g.op("Concat", *parts, axis=2), self.pads)  # (B, Tp, 6C), zeros after T
        x = g.op("Transpose", g.reshape(x, [0, -1, c, 6, H, N]), perm=[3, 1, 0, 4, 2, 5])  # (6, n, B, H, c, N)
        r, log_w, k, v, a, b = (g.op("Squeeze", t, g.const([0])) for t in g.split(x, 6, axis=0))

        log_decay = g.op("CumSum", log_w, g.const(3))  # log Γ_t, inclusive
        log_total = g.op("Slice", log_decay, g.const([c - 1]), g.const([c]), g.const([3]))  # (n, B, H, 1, N)
        a_decayed = g.op("Mul", a, g.op("Exp", g.op("Sub", log_decay, log_w)))  # a_t·Γ_{t-1}
        r_decayed = g.op("Mul", r, g.op("Exp", log_decay))  # r_t·Γ_t
        undo = g.op("Exp", g.op("Neg", log_decay))
        to_end = g.op("Exp", g.op("Sub", log_total, log_decay))
        left = g.op("Concat", a_decayed, r_decayed, axis=3)  # (n, B, H, 2c, N)
        right = g.op("Concat", g.op("Mul", b, undo), g.op("Mul", k, undo), axis=3)  # b_s/Γ_s, k_s/Γ_s
        products = g.op("MatMul", left, g.op("Transpose", right, perm=[0, 1, 2, 4, 3]))
        products = g.op("Mul", products, g.const(_product_mask(c), np.float32))  # (n, B, H, 2c, 2c)
        top, bottom = g.split(products, 2, axis=3)
        a_b, a_k = g.split(top, 2, axis=4)
        r_b, r_k = g.split(bottom, 2, axis=4)

        inverse = _unit_lower_inverse(g, a_b)  # (I - a_b)⁻¹
        solved = g.op("MatMul", inverse, g.op("Concat", a_decayed, g.op("MatMul", a_k, v), axis=4))
        a_state, u_from_values = g.split(solved, 2, axis=4)  # (n, B, H, c, N) each
        per_chunk = [
            g.op("Concat", a_state, r_decayed, axis=3),  # both meet S_startᵀ
            u_from_values,
            g.op("MatMul", r_k, v),  # y's part from this chunk's values
            r_b,
            g.op("Exp", log_total),  # Γ over the chunk
            g.op("Concat", g.op("Mul", b, to_end), g.op("Mul", k, to_end), axis=3),  # b_s·Γ_end/Γ_s, k_s·…
            v,
        ]
        self._scans += 1
        body = _chunk_step_body(g.init, f"{g.scope}chunk{self._scans}/")
        state, y = g.op("Scan", state, *per_chunk, outputs=2, body=body, num_scan_inputs=len(per_chunk))
        y = g.reshape(g.op("Transpose", y, perm=[1, 0, 3, 2, 4]), [0, -1, H, N])  # (B, Tp, H, N)
        return g.op("Slice", y, g.const([0]), self.length, g.const([1])), state


def _product_mask(c: int) -> np.ndarray:
    """Which entries of [a_dec; r_dec]·[b_undone; k_undone]ᵀ count: strictly lower for a, lower for r."""
    strictly_lower, lower = np.tril(np.ones((c, c)), -1), np.tril(np.ones((c, c)))
    return np.block([[strictly_lower, strictly_lower], [lower, lower]])


def _unit_lower_inverse(g: _Graph, a: str) -> str:
    """(I - a)⁻¹ for strictly lower-triangular a (..., c, c): the inverse of each diagonal block of
    size s gives that of size 2s as X₂ₛ = Xₛ + Xₛ·Aₛ·Xₛ, Aₛ holding the entries of a that couple
    the two halves of a 2s-block (exact: block forward substitution)."""
    c = CHUNK_LEN
    i, j = np.indices((c, c))
    block = lambda s: ((i // (2 * s) == j // (2 * s)) & (i // s % 2 == 1) & (j // s % 2 == 0)).astype(np.float32)  # noqa: E731
    inverse = g.op("Add", g.const(np.eye(c), np.float32), g.op("Mul", a, g.const(block(1), np.float32)))
    s = 2
    while s < c:
        coupling = g.op("Mul", a, g.const(block(s), np.float32))
        inverse = g.op("Add", inverse, g.op("MatMul", g.op("MatMul", inverse, coupling), inverse))
        s *= 2
    return inverse


def _chunk_step_body(init: _Initializers, scope: str) -> onnx.GraphProto:
    """One chunk's hand-over (the Scan body): u = u_values + A·Sᵀ, y, and the state at its end."""
    g = _Graph(init, scope)
    names = ["state", "left", "u_values", "y_values", "r_b", "total", "ends", "v"]
    state, left, u_values, y_values, r_b, total, ends, v = (scope + n for n in names)
    from_state = g.op("MatMul", left, g.op("Transpose", state, perm=[0, 1, 3, 2]))  # (B, H, 2c, N)
    u_part, y_part = g.split(from_state, 2, axis=2)
    u = g.op("Add", u_values, u_part)  # u_t = S_{t-1}·a_t
    y = g.op("Add", g.op("Add", y_values, y_part), g.op("MatMul", r_b, u), name="y")
    carried = g.op("MatMul", g.op("Transpose", g.op("Concat", u, v, axis=2), perm=[0, 1, 3, 2]), ends)
    new_state = g.op("Add", g.op("Mul", state, total), carried, name="new_state")
    return g.graph("chunk", [_value(scope + n) for n in names], [_value(new_state), _value(y)])


# ---- the model ------------------------------------------------------------------------------------


def _time_mix(g: _Graph, form, config: ModelConfig, i: int, x, shift, state, v_first):
    """As rwkv7.TimeMix.forward; x is the ln1 output. Returns (out, wkv state, v_first)."""
    C, H, N = config.n_embd, config.n_head, config.head_size
    p = f"blocks.{i}.att."
    lora = lambda t, name: g.matmul(t, p + name)  # noqa: E731
    heads = lambda t: g.reshape(t, [0, 0, H, N])  # noqa: E731
    xx = g.op("Sub", form.previous(g, x, shift), x)
    mixed = g.op("Add", x, g.op("Mul", xx, p + "lerp"))  # (6, ..., C)
    xr, xw, xk, xv, xa, xg = (g.op("Squeeze", t, g.const([0])) for t in g.split(mixed, 6, axis=0))

    r, k, v = g.matmul(xr, p + "receptance"), g.matmul(xk, p + "key"), g.matmul(xv, p + "value")
    w = lora(g.op("Tanh", lora(xw, "w1")), "w2")
    a = g.op("Sigmoid", g.op("Add", p + "a0", lora(lora(xa, "a1"), "a2")))
    gate = lora(g.op("Sigmoid", lora(xg, "g1")), "g2")

    kk = heads(g.op("Mul", k, p + "k_k"))
    norm = g.op("Max", g.op("ReduceL2", kk, g.const([-1]), keepdims=1), g.act(NORMALIZE_EPS))
    kk = g.op("Div", kk, norm)  # F.normalize per head
    k = g.op("Mul", k, g.op("Add", g.op("Mul", a, p + "k_a"), p + "one_minus_k_a"))
    if i == 0:
        v_first = v
    else:
        mix = g.op("Sigmoid", g.op("Add", p + "v0", lora(lora(xv, "v1"), "v2")))
        v = g.op("Add", v, g.op("Mul", g.op("Sub", v_first, v), mix))
    log_w = g.op("Sigmoid", g.to_f32(g.op("Add", p + "w0", w)))
    log_w = g.op("Mul", log_w, g.const(-DECAY_SCALE, np.float32))

    y, state = form.wkv(g, r, log_w, k, v, g.op("Neg", kk), g.op("Mul", kk, heads(a)), state)
    y = g.op("LayerNormalization", g.to_act(y), g.act(np.ones(N)), axis=-1, epsilon=GROUP_NORM_EPS)
    y = g.op("Add", g.op("Mul", y, p + "ln_x.weight"), p + "ln_x.bias")  # GroupNorm(H) per head
    bonus = g.op("ReduceSum", heads(g.op("Mul", g.op("Mul", r, k), p + "r_k")), g.const([-1]), keepdims=1)
    y = g.reshape(g.op("Add", y, g.op("Mul", bonus, heads(v))), [0, 0, C])
    return g.matmul(g.op("Mul", y, gate), p + "output"), state, v_first


def _channel_mix(g: _Graph, i: int, x: str, previous: str) -> str:
    """As rwkv7.ChannelMix.forward; x is the ln2 output, previous its token shift."""
    p = f"blocks.{i}.ffn."
    k = g.op("Add", x, g.op("Mul", g.op("Sub", previous, x), p + "x_k"))
    k = g.op("Relu", g.matmul(k, p + "key"))
    return g.matmul(g.op("Mul", k, k), p + "value")


@dataclass(frozen=True)
class Architecture:
    """What the layer stack and build_model need of one RWKV version (onnx_v5.py has RWKV-5.2/6)."""

    time_mix: Callable  # (g, form, config, i, x, shift, state, carry) -> (out, state, carry)
    channel_mix: Callable  # (g, i, x, previous) -> out
    step_form: type  # (config) -> a form for T == 1
    chunked_form: type  # (config, g, length) -> a form for T > 1
    after_layer: Callable = lambda g, i, x: x  # noqa: E731  (g, i, x) -> x, e.g. a rescaling


def _layers(g: _Graph, form, config: ModelConfig, x: str, att: list, wkv: list, ffn: list, logits: bool = True,
            arch: Architecture | None = None):
    """The layer stack on per-layer states, att and ffn shifts (1, B, C) and wkv (1, B, H, N, N).

    Returns (logits (B, V), new att shifts, new wkv states, new ffn shifts), the states again per
    layer. With logits=False the logits are None and the last FFN is skipped: only its input's
    shift counts. `arch` defaults to RWKV-7.
    """
    arch = arch or RWKV7
    L, C, H, N = config.n_layer, config.n_embd, config.n_head, config.head_size
    x = form.enter(g, x)
    new_att, new_wkv, new_ffn, v_first = [], [], [], None
    for i in range(L):
        p = f"blocks.{i}."
        h = g.layer_norm(x, p + "ln1")
        out, state, v_first = arch.time_mix(g, form, config, i, h, att[i], g.reshape(wkv[i], [-1, H, N, N]), v_first)
        x = g.op("Add", x, out)
        new_att.append(g.reshape(form.last(g, h), [1, -1, C]))
        new_wkv.append(g.reshape(state, [1, -1, H, N, N]))
        if i == L - 1 and not logits:
            new_ffn.append(g.reshape(g.layer_norm(form.last(g, x), p + "ln2"), [1, -1, C]))
            return None, new_att, new_wkv, new_ffn
        h = g.layer_norm(x, p + "ln2")
        x = g.op("Add", x, arch.channel_mix(g, i, h, form.previous(g, h, ffn[i])))
        new_ffn.append(g.reshape(form.last(g, h), [1, -1, C]))
        x = arch.after_layer(g, i, x)
    head = g.reshape(g.matmul(g.layer_norm(form.last(g, x), "ln_out"), "head"), [-1, config.vocab_size])
    return head, new_att, new_wkv, new_ffn


RWKV7 = Architecture(_time_mix, _channel_mix, _StepForm, _ChunkedForm)


def _stacked(g: _Graph, results) -> list[str]:
    """(logits, att, wkv, ffn) with the per-layer states concatenated to (L, ...)."""
    logits, *states = results
    return [logits] + [g.op("Concat", *t, axis=0) if len(t) > 1 else t[0] for t in states]


INPUTS = ("tokens", "att_shift", "wkv", "ffn_shift")
OUTPUTS = ("logits", "new_att_shift", "new_wkv", "new_ffn_shift")


def build_model(weights, config: ModelConfig, writer, *, fp16: bool = False, design: str = "prefix",
                arch: Architecture = RWKV7) -> onnx.ModelProto:
    """The model as an ONNX ModelProto. `weights` yields (name, array, role) as `prepare_weights` does; each
    goes to `writer` (export/weights.py) as it comes, so the proto holds references to the weights only.

    `design` is for measurements: "prefix" (the file's design: an If reads the first T - 1
    tokens in chunked form when T > 1, then the main graph runs the step form on the last
    token), "if" (an If on T == 1 between a whole step form and a whole chunked form), "step"
    (decoding only).
    """
    init = _Initializers(np.dtype(np.float16 if fp16 else np.float32), writer)
    for name, array, role in weights:
        init.weight(name, array, role)
        del array  # the writer has stored it: nothing of it stays
    L, C, H, N, V = config.n_layer, config.n_embd, config.n_head, config.head_size, config.vocab_size
    g = _Graph(init, "")

    def per_layer(g: _Graph, state) -> list[list[str]]:
        """The state tensors split per layer: shifts (1, B, C), wkv (1, B, H, N, N)."""
        return [g.split(t, L, axis=0) for t in state]

    def tokens_slice(g: _Graph, start: int, end: int) -> str:
        return g.op("Slice", "tokens", g.const([start]), g.const([end]), g.const([1]))

    state = (g.to_act("att_shift"), "wkv", g.to_act("ffn_shift"))
    if design == "prefix":
        prefix = _Graph(init, "prefix/")  # T > 1: every token but the last, chunked, to a state
        length = prefix.op("Shape", tokens_slice(prefix, 0, -1), start=1, end=2)
        x = prefix.embed(tokens_slice(prefix, 0, -1))
        _, *read = _layers(prefix, arch.chunked_form(config, prefix, length), config, x, *per_layer(prefix, state),
                           logits=False, arch=arch)
        unchanged = _Graph(init, "unchanged/")  # T == 1: the state as given
        kept = per_layer(unchanged, state) if L > 1 else [[unchanged.op("Identity", t)] for t in state]
        is_prefill = g.op("Greater", g.op("Shape", "tokens", start=1, end=2), g.const([1]))
        flat = g.op("If", is_prefill, name="prefix", outputs=3 * L,
                    then_branch=prefix.graph("prefix", [], _values(read, init)),
                    else_branch=unchanged.graph("unchanged", [], _values(kept, init)))
        state_per_layer = [flat[k * L : (k + 1) * L] for k in range(3)]
    if design in ("prefix", "step"):
        x = g.embed(tokens_slice(g, -1, 2**62), name="embedding")  # (B, 1, C)
        if design == "step":
            state_per_layer = per_layer(g, state)
        results = _stacked(g, _layers(g, arch.step_form(config), config, x, *state_per_layer, arch=arch))
    else:
        x = g.embed("tokens", name="embedding")  # (B, T, C)
        step, chunked = _Graph(init, "step/"), _Graph(init, "chunked/")
        step_out = _stacked(step, _layers(step, arch.step_form(config), config, x, *per_layer(step, state), arch=arch))
        length = chunked.op("Shape", "tokens", start=1, end=2)
        chunked_out = _stacked(chunked, _layers(chunked, arch.chunked_form(config, chunked, length), config, x,
                                                *per_layer(chunked, state), arch=arch))
        is_step = g.op("Equal", g.op("Shape", "tokens", start=1, end=2), g.const([1]))
        results = g.op("If", is_step, name="form", outputs=4,
                       then_branch=step.graph("step", [], _values(step_out, init, logits=True)),
                       else_branch=chunked.graph("chunked", [], _values(chunked_out, init, logits=True)))
    for result, name in zip(results, OUTPUTS):
        if fp16 and name != "new_wkv":
            g.op("Cast", result, to=TensorProto.FLOAT, name=name)
            g.rename(g.nodes[-1].output[0], name)
        else:
            g.rename(result, name)

    inputs = [_value("tokens", ["batch", "time"], TensorProto.INT64), _value("att_shift", [L, "batch", C]),
              _value("wkv", [L, "batch", H, N, N]), _value("ffn_shift", [L, "batch", C])]
    outputs = [_value("logits", ["batch", V]), _value("new_att_shift", [L, "batch", C]),
               _value("new_wkv", [L, "batch", H, N, N]), _value("new_ffn_shift", [L, "batch", C])]
    graph = helper.make_graph(g.nodes, f"rwkv{config.version}", inputs, outputs, initializer=writer.initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("com.microsoft", 1)] if writer.quantized else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ai-writer")
    model.ir_version = 10  # the IR of opset 21; onnxruntime 1.17+ reads it
    return model


def _values(names, init: _Initializers, logits: bool = False) -> list[onnx.ValueInfoProto]:
    """Value infos of a branch's outputs: (logits,) then att shifts, wkv states (fp32), ffn shifts,
    as lists per layer or as one stacked value each."""
    act = TensorProto.FLOAT16 if init.act == np.float16 else TensorProto.FLOAT
    if logits:
        names = [[n] for n in names]
    elems = ([act] if logits else []) + [act, TensorProto.FLOAT, act]
    return [_value(name, elem=elem) for group, elem in zip(names, elems) for name in group]
