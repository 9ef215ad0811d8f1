"""The shape and the starting weights of a new RWKV-7 model, for training from scratch.

The rules follow BlinkDL's RWKV-LM training code for x070 (RWKV-v7/train_temp: the module
constructors in src/model.py, `generate_init_weight` there, and rwkv7_train_simplified.py),
restated here; each rule says what it does and why. Notation: C = n_embd, N = head_size,
L = n_layer, layer i, channel n.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ai_writer.models.config import ModelConfig
from ai_writer.models.rwkv.rwkv7 import RWKV7


def lora_dim(n_embd: int, factor: float, power: float) -> int:
    """The reference's low-rank width rule: factor * C**power rounded to a multiple of 32, at least 32."""
    return max(32, int(round(factor * n_embd**power / 32)) * 32)


def new_model_config(vocab_size: int, n_layer: int, n_embd: int, head_size: int, ctx_len: int) -> ModelConfig:
    """The config of a new model: channel-mix width 4*C as in the released RWKV-7 models, and the
    reference's LoRA widths (decay and in-context rate 1.8*sqrt(C), value 1.3*sqrt(C), gate 0.6*C**0.8)."""
    return ModelConfig(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        head_size=head_size,
        ffn_dim=4 * n_embd,
        dim_w=lora_dim(n_embd, 1.8, 0.5),
        dim_a=lora_dim(n_embd, 1.8, 0.5),
        dim_v=lora_dim(n_embd, 1.3, 0.5),
        dim_g=lora_dim(n_embd, 0.6, 0.8),
        ctx_len=ctx_len,
    )


@torch.no_grad()
def init_weights(model: RWKV7, seed: int) -> None:
    """Give every parameter of `model` its RWKV-7 starting value, deterministically for a seed."""
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    C, V, L = config.n_embd, config.vocab_size, config.n_layer

    # Embedding: tiny uniform values (±1e-4). ln0 normalises them right away, so the scale does not
    # matter for the forward pass; small values let the rows move freely early in training.
    _uniform(model.emb.weight, 1e-4, gen)
    # Head: orthogonal with gain 0.5, raised by sqrt(V/C) when the vocabulary is wider than the
    # model so that the logits start with a similar spread whatever the vocabulary size.
    _orthogonal(model.head.weight, 0.5 * math.sqrt(V / C) if V > C else 0.5, gen)
    for norm in [model.ln_out, model.blocks[0].ln0] + [m for b in model.blocks for m in (b.ln1, b.ln2)]:
        norm.weight.fill_(1.0)
        norm.bias.zero_()
    for i, block in enumerate(model.blocks):
        _init_time_mix(block.att, i, L, config, gen)
        _init_channel_mix(block.ffn, i, L, gen)


def _init_time_mix(att, i: int, L: int, config: ModelConfig, gen: torch.Generator) -> None:
    C, N = config.n_embd, config.head_size
    depth = i / (L - 1) if L > 1 else 0.0  # 0 at the first layer, 1 at the last
    shallowness = 1.0 - i / L  # 1 at the first layer, falling towards 0
    n = torch.arange(C, dtype=torch.float32)
    position = n / C  # 0 .. <1 across the channels
    linear = n / (C - 1) - 0.5  # -0.5 .. +0.5
    zigzag = ((n % N) - (N - 1) / 2) / ((N - 1) / 2)  # -1 .. +1 inside every head
    zigzag = zigzag * zigzag.abs()

    # Token-shift lerp factors 1 - position**p: the first channels take mostly the previous token,
    # the last mostly the current one. p shrinks with depth, so deep layers mix less of the past;
    # the receptance and gate inputs (small p) lean most on the current token.
    for name, power in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
        _set(getattr(att, name), 1.0 - position.pow(power * shallowness))

    # Decay bias w0: a ramp from -6 (decay ≈ 1, long memory) to 0 (fast decay) across the channels,
    # bent more in deeper layers, plus a zig-zag inside each head so every head holds both slow and
    # fast channels, plus the reference's offset of 0.5. (The reference's soft clamp of w,
    # exp(-exp(-softplus(-x) - 0.5)), is the same decay as rwkv7.py's exp(-e^-0.5 * sigmoid(x)).)
    ramp = -6.0 + 6.0 * (n / (C - 1)).pow(1.0 + depth**0.3)
    _set(att.w0, ramp + 0.5 + 2.5 * zigzag)
    # In-context learning rate bias a0 (a = sigmoid(a0 + lora)): around sigmoid(-0.19) ≈ 0.45.
    _set(att.a0, -0.19 + 0.3 * zigzag + 0.4 * linear)
    # Value-residual gate bias v0: layers > 0 start by mixing in about two thirds of layer 0's value.
    if hasattr(att, "v0"):
        _set(att.v0, 0.73 - 0.4 * linear)
    # k_k scales the key before it is normalised into the removal direction kk; k_a = 1.02 makes the
    # key almost fully scaled by the in-context rate a; r_k (the per-head "bonus") starts slightly negative.
    _set(att.k_k, 0.71 - 0.1 * linear)
    att.k_a.fill_(1.02)
    att.r_k.fill_(-0.04)

    # LoRAs (x @ first @ second): the first matrix starts at zero, so every LoRA adds nothing at
    # first; the second is orthogonal with gain 0.1 so the gradient reaches the first from step one.
    for first, second in (("w1", "w2"), ("a1", "a2"), ("v1", "v2"), ("g1", "g2")):
        if hasattr(att, first):
            getattr(att, first).zero_()
            _orthogonal(getattr(att, second), 0.1, gen)

    # Projections: orthogonal (the reference's generate_init_weight); the key at gain 0.1 so the
    # state starts small; the output projection at zero, so each block starts as the identity.
    _orthogonal(att.receptance.weight, 1.0, gen)
    _orthogonal(att.key.weight, 0.1, gen)
    _orthogonal(att.value.weight, 1.0, gen)
    att.output.weight.zero_()
    # Group norm of the heads' output: weight ((i+1)/L)**0.7, so early layers write less at first.
    att.ln_x.weight.fill_(((i + 1) / L) ** 0.7)
    att.ln_x.bias.zero_()


def _init_channel_mix(ffn, i: int, L: int, gen: torch.Generator) -> None:
    C = ffn.x_k.shape[-1]
    position = torch.arange(C, dtype=torch.float32) / C
    # Lerp factor 1 - position**(shallowness**4): deep layers use almost only the current token.
    _set(ffn.x_k, 1.0 - position.pow((1.0 - i / L) ** 4))
    _orthogonal(ffn.key.weight, 1.0, gen)
    ffn.value.weight.zero_()  # zero output projection: the block starts as the identity


def _set(parameter: torch.Tensor, values: torch.Tensor) -> None:
    parameter.copy_(values.reshape(parameter.shape))


def _uniform(parameter: torch.Tensor, bound: float, gen: torch.Generator) -> None:
    parameter.copy_(torch.rand(parameter.shape, generator=gen) * (2 * bound) - bound)


def _orthogonal(parameter: torch.Tensor, gain: float, gen: torch.Generator) -> None:
    """Orthonormal rows or columns (whichever are fewer), times `gain`."""
    values = torch.empty(parameter.shape)
    nn.init.orthogonal_(values, gain=gain, generator=gen)
    parameter.copy_(values)
