"""The shape of an RWKV model (RWKV-7, RWKV-6 or RWKV-5.2), read from a checkpoint and saved with it.

Nobody types these numbers by hand: `ModelConfig.from_tensors` detects the version
(model_version.py) and infers every field from the tensor shapes of a standard RWKV
checkpoint, and the native `.safetensors` file stores the config in its metadata.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Mapping

from ai_writer.errors import ModelFileError
from ai_writer.models.version import NAMES, SUPPORTED, SUPPORTED_TEXT, detect_version

MAXIMUM = 2**31 - 1  # no field of a real model comes near it; a bigger one is a damaged or hostile file
MINIMUM = {"vocab_size": 1, "n_layer": 1, "n_embd": 1, "head_size": 1, "ffn_dim": 1}  # the others may be 0
_LAYER_KEY = re.compile(r"blocks\.(\d{1,12})\.")


def layer_numbers(shapes: Mapping[str, object]) -> set[int]:
    """The layer numbers that a checkpoint's tensor names (blocks.N.*) hold: never more than it has names."""
    return {int(m.group(1)) for key in shapes if (m := _LAYER_KEY.match(key))}


def _show(value: int) -> str:
    return str(value) if abs(value) < 10**30 else f"a number of {value.bit_length()} bits"


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int  # rows of emb.weight and head.weight
    n_layer: int  # number of blocks
    n_embd: int  # model width C
    head_size: int  # N; the model has n_embd // head_size heads
    ffn_dim: int  # channel-mix hidden width F (4*C in released models)
    dim_w: int  # low-rank width of the decay LoRA (RWKV-7 w1/w2, RWKV-6 time_decay_w1/w2; 0 in RWKV-5.2)
    dim_a: int  # low-rank width of the in-context learning-rate LoRA (a1/a2; RWKV-7 only, else 0)
    dim_v: int  # low-rank width of the value-residual LoRA (v1/v2; RWKV-7 only, else 0)
    dim_g: int  # low-rank width of the output-gate LoRA (g1/g2; RWKV-7 only, else 0)
    ctx_len: int = 0  # context length the model was trained on (0 = unknown)
    version: int = 7  # architecture: 7, 6 or 5 (RWKV-5.2); stored only when not 7
    dim_mix: int = 0  # RWKV-6 only: width of each of the five token-shift LoRAs (time_maa_w1/w2)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    def describe(self) -> str:
        return (
            f"{NAMES.get(self.version, f'RWKV-{self.version}')} L{self.n_layer}-D{self.n_embd} "
            f"({self.n_head} heads of {self.head_size}), "
            f"vocab {self.vocab_size}, ffn {self.ffn_dim}"
            + (f", ctx_len {self.ctx_len}" if self.ctx_len else "")
        )

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        for name in ("version", "dim_mix"):  # RWKV-7 files keep the layout they always had
            if fields[name] == (7 if name == "version" else 0):
                del fields[name]
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str, source: str) -> "ModelConfig":
        """The config a native file stores, every field a whole number in its range (else one line)."""
        where = f"{source}: the model config in the metadata is invalid"
        try:
            fields = json.loads(text)
        except ValueError as exc:  # JSONDecodeError, or a number of thousands of digits
            raise ModelFileError(f"{where} (not JSON: {str(exc)[:100]})") from None
        except RecursionError:
            raise ModelFileError(f"{where} (not JSON: nested too deeply)") from None
        if not isinstance(fields, dict):
            raise ModelFileError(f"{where} (not a JSON object)")
        values = {}
        for f in dataclasses.fields(cls):
            if f.name not in fields:
                if f.default is dataclasses.MISSING:
                    raise ModelFileError(f"{where} (no {f.name})")
                continue
            value = fields[f.name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise ModelFileError(f"{where} ({f.name} is not a whole number)")
            values[f.name] = value
        return cls(**values).checked(source)

    def checked(self, source: str) -> "ModelConfig":
        """This config, if every field is in its range (a one-line ModelFileError if not): what a hostile file
        could otherwise turn into a division by zero or a loop of a billion layers."""
        for f in dataclasses.fields(self):
            value, low = getattr(self, f.name), MINIMUM.get(f.name, 0)
            if not low <= value <= MAXIMUM:
                raise ModelFileError(f"{source}: the model config is invalid ({f.name} {_show(value)} is not "
                                     f"between {low} and {MAXIMUM})")
        if self.version not in SUPPORTED:
            raise ModelFileError(f"{source}: the model config names RWKV version {_show(self.version)}; "
                                 f"{SUPPORTED_TEXT}")
        if self.n_embd % self.head_size:
            raise ModelFileError(f"{source}: the model config is invalid (head_size {self.head_size} does not "
                                 f"divide n_embd {self.n_embd})")
        return self

    def parameter_count(self) -> int:
        """How many numbers the model's tensors hold, computed without listing them (see check_tensors)."""
        def count(n_layer: int) -> int:
            shapes = dataclasses.replace(self, n_layer=n_layer).expected_shapes()
            return sum(math.prod(shape) for shape in shapes.values())

        one, two = count(1), count(2)
        return one + (self.n_layer - 1) * (two - one)

    def check_tensors(self, shapes: Mapping[str, object], file_size: int, source: str) -> None:
        """Before anything is allocated for this config: its layers are the ones the file's tensor names number
        (so listing its tensors costs no more than the file's own header), and the file is big enough for its
        numbers (two bytes each, the narrowest float stored). A config whose n_layer says a billion thus fails
        here, in the time it takes to read the file's keys; each tensor is checked by name afterwards."""
        layers = layer_numbers(shapes)
        if len(layers) != self.n_layer or (layers and max(layers) >= self.n_layer):
            raise ModelFileError(f"{source}: the model config says {self.n_layer} layers but the file's tensors "
                                 f"are of {len(layers)} layers")
        needed = 2 * self.parameter_count()
        if needed > file_size:
            raise ModelFileError(f"{source}: the model config needs at least {needed:,} bytes of weights but the "
                                 f"file has {file_size:,} (truncated, or a config that does not match)")

    @classmethod
    def from_tensors(cls, shapes: Mapping[str, tuple[int, ...]], source: str, ctx_len: int = 0) -> "ModelConfig":
        """Infer the config from the shapes of the standard keys of an RWKV-7, RWKV-6 or RWKV-5.2 checkpoint."""
        version = detect_version(shapes, source)

        def shape(key: str, ndim: int | None = None) -> tuple[int, ...]:
            if key not in shapes:
                raise ModelFileError(f"{source}: not an {NAMES[version]} checkpoint (no tensor {key!r})")
            if ndim is not None and len(shapes[key]) != ndim:
                raise ModelFileError(f"{source}: tensor {key!r} has shape {list(shapes[key])}, expected {ndim} "
                                     "dimensions")
            return tuple(shapes[key])

        vocab_size, n_embd = shape("emb.weight", 2)
        heads = "att.r_k" if version == 7 else "att.time_faaaa"  # (n_head, head_size)
        n_head, head_size = shape("blocks.0." + heads, 2)
        layer_ids = layer_numbers(shapes)
        n_layer = max(layer_ids) + 1
        if len(layer_ids) != n_layer:  # never set(range(n_layer)): a key blocks.999999999.x would make it huge
            missing = next(i for i, n in enumerate(sorted(layer_ids)) if i != n)
            raise ModelFileError(f"{source}: layers are missing: {n_layer - len(layer_ids)} of the {n_layer} that "
                                 f"the keys number, the first is {missing}")
        if head_size == 0 or n_head * head_size != n_embd:
            raise ModelFileError(
                f"{source}: {heads} has shape {[n_head, head_size]}, which does not divide n_embd {n_embd}"
            )
        att = "blocks.0.att."
        common = dict(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd, head_size=head_size,
                      ffn_dim=shape("blocks.0.ffn.key.weight", 2)[0], ctx_len=ctx_len, version=version)
        if version == 7:
            return cls(**common, dim_w=shape(att + "w1", 2)[1], dim_a=shape(att + "a1", 2)[1],
                       dim_v=shape("blocks.1.att.v1", 2)[1] if n_layer > 1 else 0,  # layer 0 has no value residual
                       dim_g=shape(att + "g1", 2)[1]).checked(source)
        return cls(**common, dim_w=shape(att + "time_decay_w1", 2)[1] if version == 6 else 0, dim_a=0, dim_v=0,
                   dim_g=0, dim_mix=shape(att + "time_maa_w2", 3)[1] if version == 6 else 0).checked(source)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every key of a checkpoint of this config with its stored shape (layer-0 v0/v1/v2 excluded)."""
        C, F, V = self.n_embd, self.ffn_dim, self.vocab_size
        shapes: dict[str, tuple[int, ...]] = {
            "emb.weight": (V, C),
            "blocks.0.ln0.weight": (C,),
            "blocks.0.ln0.bias": (C,),
            "ln_out.weight": (C,),
            "ln_out.bias": (C,),
            "head.weight": (V, C),
        }
        if self.version != 7:
            return {**shapes, **self._layer_shapes_v5_v6()}
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"):
                shapes[p + name] = (C,)
            for name in ("x_r", "x_w", "x_k", "x_v", "x_a", "x_g", "w0", "a0", "k_k", "k_a"):
                shapes[p + "att." + name] = (1, 1, C)
            if i > 0:
                shapes[p + "att.v0"] = (1, 1, C)
                shapes[p + "att.v1"] = (C, self.dim_v)
                shapes[p + "att.v2"] = (self.dim_v, C)
            for lora, dim in (("w", self.dim_w), ("a", self.dim_a), ("g", self.dim_g)):
                shapes[p + f"att.{lora}1"] = (C, dim)
                shapes[p + f"att.{lora}2"] = (dim, C)
            shapes[p + "att.r_k"] = (self.n_head, self.head_size)
            for name in ("receptance", "key", "value", "output"):
                shapes[p + f"att.{name}.weight"] = (C, C)
            shapes[p + "ffn.x_k"] = (1, 1, C)
            shapes[p + "ffn.key.weight"] = (F, C)
            shapes[p + "ffn.value.weight"] = (C, F)
        return shapes

    def _layer_shapes_v5_v6(self) -> dict[str, tuple[int, ...]]:
        """The per-layer keys of RWKV-5.2 and RWKV-6 (the `rwkv` package's loader reads these)."""
        C, F, H, N = self.n_embd, self.ffn_dim, self.n_head, self.head_size
        vector = (1, 1, C)
        shapes: dict[str, tuple[int, ...]] = {}
        for i in range(self.n_layer):
            p = f"blocks.{i}."
            for name in ("ln1.weight", "ln1.bias", "ln2.weight", "ln2.bias", "att.ln_x.weight", "att.ln_x.bias"):
                shapes[p + name] = (C,)
            for name in ("receptance", "key", "value", "output", "gate"):
                shapes[p + f"att.{name}.weight"] = (C, C)
            shapes[p + "att.time_faaaa"] = (H, N)  # the bonus u of the current token
            if self.version == 5:
                for name in "kvrg":
                    shapes[p + f"att.time_mix_{name}"] = vector
                shapes[p + "att.time_decay"] = (H, N)
                shapes[p + "ffn.time_mix_k"] = shapes[p + "ffn.time_mix_r"] = vector
            else:
                for name in "xwkvrg":
                    shapes[p + f"att.time_maa_{name}"] = vector
                shapes[p + "att.time_maa_w1"] = (C, 5 * self.dim_mix)
                shapes[p + "att.time_maa_w2"] = (5, self.dim_mix, C)
                shapes[p + "att.time_decay"] = vector
                shapes[p + "att.time_decay_w1"] = (C, self.dim_w)
                shapes[p + "att.time_decay_w2"] = (self.dim_w, C)
                shapes[p + "ffn.time_maa_k"] = shapes[p + "ffn.time_maa_r"] = vector
            shapes[p + "ffn.key.weight"] = (F, C)
            shapes[p + "ffn.receptance.weight"] = (C, C)
            shapes[p + "ffn.value.weight"] = (C, F)
        return shapes
