"""The ONNX graph of an RWKV-7 model, built node by node from numpy weights (no torch).

It computes exactly what `rwkv7.RWKV7.forward` computes (read that module for the math);
export/onnx.py writes it to a file. Inputs `tokens` (B, T) and each layer's state,
`att_shift.i` (1, B, C), `wkv.i` (B, H, N, N), `ffn_shift.i` (1, B, C) (models/onnx_file.py
names them); outputs the last position's `logits` (B, V) and `new_att_shift.i`, `new_wkv.i`,
`new_ffn_shift.i`. B and T are dynamic. Per-layer inputs and outputs let the backend bind each
layer's slice of its stacked state arrays: the state is never split or joined in the graph.

One graph reads any number of tokens (_AnyLengthForm): the projections, the mixing and the FFN
run once on all T positions, so every weight has exactly one node and ONNX Runtime packs each
quantized matrix once; only the recurrence differs, an If per layer on T == 1 choosing between

- the step recurrence (decoding): matrix-vector products, the wkv update as in `rwkv7.wkv_step`;
- the chunked recurrence (prefill): as `rwkv7.wkv_chunked`, padded to whole chunks of CHUNK_LEN
  steps (padded steps have decay 1 and every other input 0, so they leave the state alone),
  everything inside a chunk computed for all chunks at once, and only the hand-over of the state
  from chunk to chunk sequential, in a Scan. ONNX has no triangular solve: (I - A)⁻¹ for
  strictly lower-triangular A is built by doubling the solved block size, X₂ₛ = Xₛ + Xₛ·Aₛ·Xₛ
  (Aₛ: the entries of A that couple two neighbouring s-blocks); that is block forward
  substitution, exact and as stable as it.

Neither branch holds a weight. The earlier design (an If reading the first T - 1 tokens in a
chunked copy of the whole layer stack, then the step form on the last token) had two nodes per
weight: ONNX Runtime packed every matrix twice, which was half of a quantized model's start
(RWKV-7 1.5B int8: session 2.4 s, now 1.4 s) at the same decode speed (export/onnx.py). The
last layer's FFN and the head run on the last position only.

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
from ai_writer.models.onnx_file import STATE_PARTS, state_names

OPSET = 21
ACCURACY_LEVEL = 4  # MatMulNBits: activations quantized to int8 per block too, integer dot products
CHUNK_LEN = 32  # time steps per chunk of the parallel recurrence (a power of two)
DECAY_SCALE = math.exp(-0.5)  # as rwkv7.DECAY_SCALE: log w = -exp(-0.5) * sigmoid(.)
GROUP_NORM_EPS = 64e-5  # as rwkv7.GROUP_NORM_EPS
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default
NORMALIZE_EPS = 1e-12  # F.normalize's default
LORAS_IN = ("w1", "a1", "v1", "g1")  # the low-rank matrices that read the token-shifted input
LORAS_OUT = ("w2", "a2", "v2", "g2")
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


def low_rank_inputs(get, prefix: str, with_v: bool) -> np.ndarray:
    """w1, a1, (v1,) g1 as one (2C, Dw + Da + Dv + Dg) matrix that reads [x, xx] (xx: the previous token
    minus x). Each LoRA reads its own mix x + xx·x_n; as x·m + xx·(x_n·m), one product serves them all:
    one matrix-vector call a layer instead of four."""
    parts = [(get(prefix + n), get(prefix + f"x_{n[0]}", (-1,))) for n in LORAS_IN if with_v or n != "v1"]
    return np.concatenate([np.concatenate([m for m, _ in parts], axis=1),
                           np.concatenate([m * lerp[:, None] for m, lerp in parts], axis=1)], axis=0)


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
        for n in "rkv":
            yield p + f"att.x_{n}", get(p + f"att.x_{n}", (C,)), "vector"
        k_a = get(p + "att.k_a", (C,))
        yield p + "att.k_a", k_a, "vector"
        yield p + "att.one_minus_k_a", 1 - k_a, "vector"  # 1 + (a - 1)·k_a = a·k_a + (1 - k_a)
        yield p + "att.ln_x.weight", get(p + "att.ln_x.weight", (H, N)), "vector"
        yield p + "att.ln_x.bias", get(p + "att.ln_x.bias", (H, N)), "vector"
        yield p + "att.lora_in", low_rank_inputs(get, p + "att.", i > 0), "lora"
        for name in LORAS_OUT:
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

    def split(self, x: str, parts: int | list[int], axis: int) -> list[str]:
        """`x` cut along `axis` into `parts` equal pieces, or into pieces of the sizes listed."""
        if isinstance(parts, int):
            return self.op("Split", x, axis=axis, num_outputs=parts, outputs=parts) if parts > 1 else [x]
        return self.op("Split", x, self.const(parts), axis=axis, outputs=len(parts)) if len(parts) > 1 else [x]

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

    def last_row(self, g: _Graph, x: str) -> str:
        """The last position as a state row (1, B, C)."""
        return x

    def wkv(self, g: _Graph, r, log_w, k, v, a, b, state):
        """As rwkv7.wkv_step: r, k, v (1, B, C), log_w (1, B, C) fp32, a, b (1, B, H, N), state (B, H, N, N)."""
        H, N = self.config.n_head, self.config.head_size
        column = lambda t: g.reshape(g.to_f32(t), [-1, H, N, 1])  # noqa: E731
        row = lambda t: g.reshape(g.to_f32(t), [-1, H, 1, N])  # noqa: E731
        state_a = g.op("MatMul", state, column(a))  # (B, H, N, 1)
        new = g.op("Mul", state, row(g.op("Exp", log_w)))
        # state_a·bᵀ + v·kᵀ as one product of rank 2: one pass over the (B, H, N, N) state instead of four
        outer = g.op("MatMul", g.op("Concat", state_a, column(v), axis=3), g.op("Concat", row(b), row(k), axis=2))
        new = g.op("Add", new, outer)  # (B, H, N, N)
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

    def last_row(self, g: _Graph, x: str) -> str:
        return g.reshape(self.last(g, x), [1, -1, self.config.n_embd])

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


class _AnyLengthForm:
    """Any T (the file's form): rows are (B, T, C). Projections, mixing and the FFN run once on all T
    positions, so each weight has one node and ONNX Runtime packs it once; only the recurrence
    differs: an If on T == 1 runs the step recurrence, else the chunked one. Neither branch holds a
    weight, and each writes its results straight into the If's outputs."""

    def __init__(self, config: ModelConfig, g: _Graph, arch: "Architecture"):
        self.config = config
        length = g.op("Shape", "tokens", start=1, end=2)
        self.step, self.chunked = arch.step_form(config), arch.chunked_form(config, g, length)
        self.is_step = g.op("Equal", length, g.const([1]))
        self._branches = 0

    def enter(self, g: _Graph, x: str) -> str:
        return x

    def previous(self, g: _Graph, x: str, shift: str) -> str:
        return self.chunked.previous(g, x, shift)

    def last(self, g: _Graph, x: str) -> str:
        return self.chunked.last(g, x)

    def last_row(self, g: _Graph, x: str) -> str:
        return self.chunked.last_row(g, x)

    def wkv(self, g: _Graph, *args):
        """(y (B, T, H, N) float32, the new state (B, H, N, N)) from the form's wkv arguments."""
        H, N = self.config.n_head, self.config.head_size
        self._branches += 1
        step = _Graph(g.init, f"{g.scope}step{self._branches}/")
        y, state = self.step.wkv(step, *args)
        step_out = [step.reshape(y, [-1, 1, H, N]), state]
        chunked = _Graph(g.init, f"{g.scope}chunked{self._branches}/")
        chunked_out = list(self.chunked.wkv(chunked, *args))
        y, state = g.op("If", self.is_step, name=f"wkv{self._branches}", outputs=2,
                        then_branch=step.graph("step", [], [_value(t) for t in step_out]),
                        else_branch=chunked.graph("chunked", [], [_value(t) for t in chunked_out]))
        return y, state


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
    xr, xk, xv = (g.op("Add", x, g.op("Mul", xx, p + f"x_{n}")) for n in "rkv")
    r, k, v = g.matmul(xr, p + "receptance"), g.matmul(xk, p + "key"), g.matmul(xv, p + "value")
    widths = [config.dim_w, config.dim_a] + ([config.dim_v] if i > 0 else []) + [config.dim_g]
    low = g.split(lora(g.op("Concat", x, xx, axis=-1), "lora_in"), widths, axis=-1)  # low_rank_inputs
    w = lora(g.op("Tanh", low[0]), "w2")
    a = g.op("Sigmoid", g.op("Add", p + "a0", lora(low[1], "a2")))
    gate = lora(g.op("Sigmoid", low[-1]), "g2")

    kk = heads(g.op("Mul", k, p + "k_k"))
    norm = g.op("Max", g.op("ReduceL2", kk, g.const([-1]), keepdims=1), g.act(NORMALIZE_EPS))
    kk = g.op("Div", kk, norm)  # F.normalize per head
    k = g.op("Mul", k, g.op("Add", g.op("Mul", a, p + "k_a"), p + "one_minus_k_a"))
    if i == 0:
        v_first = v
    else:
        mix = g.op("Sigmoid", g.op("Add", p + "v0", lora(low[2], "v2")))
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


def _layers(g: _Graph, form, config: ModelConfig, x: str, att: list, wkv: list, ffn: list, arch: Architecture):
    """The layer stack on per-layer states: att and ffn shifts (1, B, C), wkv (B, H, N, N).

    Returns (logits (B, V) of the last position, new att shifts, new wkv states, new ffn shifts),
    the states again per layer. The last layer's FFN and the head run on the last position only.
    """
    x = form.enter(g, x)
    new_att, new_wkv, new_ffn, carry = [], [], [], None
    for i in range(config.n_layer):
        p = f"blocks.{i}."
        h = g.layer_norm(x, p + "ln1")
        out, state, carry = arch.time_mix(g, form, config, i, h, att[i], wkv[i], carry)
        x = g.op("Add", x, out)
        new_att.append(form.last_row(g, h))
        new_wkv.append(state)
        h = g.layer_norm(x, p + "ln2")
        previous = form.previous(g, h, ffn[i])
        new_ffn.append(form.last_row(g, h))
        if i == config.n_layer - 1:  # only the last position's output is read, by the head
            x, h, previous = (form.last(g, t) for t in (x, h, previous))
        x = arch.after_layer(g, i, g.op("Add", x, arch.channel_mix(g, i, h, previous)))
    head = g.reshape(g.matmul(g.layer_norm(x, "ln_out"), "head"), [-1, config.vocab_size])
    return head, new_att, new_wkv, new_ffn


RWKV7 = Architecture(_time_mix, _channel_mix, _StepForm, _ChunkedForm)


def build_model(weights, config: ModelConfig, writer, *, fp16: bool = False, decode_only: bool = False,
                arch: Architecture = RWKV7) -> onnx.ModelProto:
    """The model as an ONNX ModelProto. `weights` yields (name, array, role) as `prepare_weights` does; each
    goes to `writer` (export/weights.py) as it comes, so the proto holds references to the weights only.

    The file's graph reads any number of tokens (_AnyLengthForm); `decode_only` builds the step form
    alone, for one token at a time (measurements: the bound of what the If on T costs).
    """
    init = _Initializers(np.dtype(np.float16 if fp16 else np.float32), writer)
    for name, array, role in weights:
        init.weight(name, array, role)
        del array  # the writer has stored it: nothing of it stays
    L, C, H, N, V = config.n_layer, config.n_embd, config.n_head, config.head_size, config.vocab_size
    g = _Graph(init, "")
    inputs = {part: state_names(part, L) for part in STATE_PARTS}
    state = [[g.to_act(name) for name in inputs["att_shift"]], inputs["wkv"],
             [g.to_act(name) for name in inputs["ffn_shift"]]]
    form = arch.step_form(config) if decode_only else _AnyLengthForm(config, g, arch)
    logits, *new = _layers(g, form, config, g.embed("tokens", name="embedding"), *state, arch=arch)
    outputs = {"logits": logits, **{name: value for part, values in zip(STATE_PARTS, new)
                                    for name, value in zip(state_names(part, L, "new_"), values)}}
    for name, result in outputs.items():
        if fp16 and not name.startswith("new_wkv"):
            g.op("Cast", result, to=TensorProto.FLOAT, name=name)
            g.rename(g.nodes[-1].output[0], name)
        else:
            g.rename(result, name)

    shapes = {"att_shift": [1, "batch", C], "wkv": ["batch", H, N, N], "ffn_shift": [1, "batch", C]}
    graph_inputs = [_value("tokens", ["batch", "time"], TensorProto.INT64)]
    graph_outputs = [_value("logits", ["batch", V])]
    for part in STATE_PARTS:
        graph_inputs += [_value(name, shapes[part]) for name in state_names(part, L)]
        graph_outputs += [_value(name, shapes[part]) for name in state_names(part, L, "new_")]
    graph = helper.make_graph(g.nodes, f"rwkv{config.version}", graph_inputs, graph_outputs,
                              initializer=writer.initializers)
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("com.microsoft", 1)] if writer.quantized else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ai-writer")
    model.ir_version = 10  # the IR of opset 21; onnxruntime 1.17+ reads it
    return model
