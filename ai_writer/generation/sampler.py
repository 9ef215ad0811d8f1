"""Choosing the next character: the AI-Writer sampling rule as pure, seeded functions.

The rule (conformance README §7.2, "_new_" generation): ban the unknown character;
softmax in float32; nucleus cutoff at `top_p` inside a paragraph and `top_p_newline` right
after a newline; but every token with probability >= `allow_p` stays allowed; then
temperature as ``p ** (1/T)`` on the kept tokens, renormalise, draw. On top, optionally:
`top_k`, and ChatRWKV-style presence/frequency penalties with per-token decay.

`kept_probabilities` is the deterministic part, `sample` the draw. Nothing here keeps
global state: the random generator and the penalty counts are passed in.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from ai_writer.errors import AiWriterError, SettingsError

# Above this many tokens, the nucleus cutoff first looks only at the largest candidates.
_FULL_SORT_MAX_VOCAB = 4096
_NUCLEUS_CANDIDATES = 1024


@dataclass(frozen=True)
class SamplerSettings:
    """Every sampling setting, validated on creation (out of range -> SettingsError)."""

    temperature: float = 1.0  # p ** (1/T) on the kept tokens; 0 = greedy (always the most likely)
    top_p: float = 0.7  # nucleus threshold inside a paragraph
    top_p_newline: float = 0.9  # nucleus threshold right after a newline
    allow_p: float = 0.01  # tokens at least this likely are kept whatever top_p says
    top_k: int = 0  # keep at most this many tokens; 0 = no limit
    presence_penalty: float = 0.0  # subtracted from the logit of every token already produced
    frequency_penalty: float = 0.0  # subtracted once per (decayed) occurrence of a token
    penalty_decay: float = 0.996  # occurrence counts are multiplied by this at every step

    # Valid range of each setting (inclusive); used for validation and for help texts.
    RANGES: ClassVar[Mapping[str, tuple[float, float]]] = MappingProxyType(
        {
            "temperature": (0.0, 10.0),
            "top_p": (0.0, 1.0),
            "top_p_newline": (0.0, 1.0),
            "allow_p": (0.0, 1.0),
            "top_k": (0, math.inf),
            "presence_penalty": (0.0, 10.0),
            "frequency_penalty": (0.0, 10.0),
            "penalty_decay": (0.0, 1.0),
        }
    )

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not self._is_valid(field.name, value):
                valid = self.range_text(field.name)
                raise SettingsError(f"{field.name} must be {valid}, got {_plain(value)!r}")
            if field.name != "top_k":
                object.__setattr__(self, field.name, float(value))  # 1 -> 1.0, np.float32 -> float
            else:
                object.__setattr__(self, field.name, int(value))

    @classmethod
    def _is_valid(cls, name: str, value: Any) -> bool:
        low, high = cls.RANGES[name]
        if name == "top_k":
            return isinstance(value, numbers.Integral) and _is_number(value) and value >= low
        return _is_number(value) and low <= float(value) <= high  # NaN fails both comparisons

    @classmethod
    def range_text(cls, name: str) -> str:
        """The valid values of setting `name` in words, e.g. "a number between 0 and 1"."""
        low, high = cls.RANGES[name]
        if name == "top_k":
            return f"a whole number >= {low:g} (0 = off)"
        return f"a number between {low:g} and {high:g}"

    def replace(self, **changes: Any) -> "SamplerSettings":
        """A validated copy with some settings changed."""
        names = [field.name for field in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise SettingsError(f"unknown setting {unknown[0]!r}; valid settings: {', '.join(names)}")
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers, so messages read "1.5" rather than "np.float32(1.5)"."""
    if isinstance(value, numbers.Integral) and _is_number(value):
        return int(value)
    return float(value) if _is_number(value) else value


class PenaltyTracker:
    """Decayed occurrence counts of the tokens of one sequence (ChatRWKV style).

    Call `update(token)` for every generated token; `apply(logits)` then lowers the logits
    of tokens already seen. With both penalties 0 it does nothing at all.
    """

    def __init__(self, vocab_size: int, settings: SamplerSettings) -> None:
        self.presence_penalty = np.float32(settings.presence_penalty)
        self.frequency_penalty = np.float32(settings.frequency_penalty)
        self.decay = np.float32(settings.penalty_decay)
        self.counts = np.zeros(vocab_size, dtype=np.float32)  # (V,)

    @property
    def active(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

    def update(self, token_id: int) -> None:
        """Decay every count, then count `token_id` once more."""
        if not self.active:
            return
        self.counts *= self.decay
        self.counts[token_id] += 1

    def reset(self) -> None:
        self.counts[:] = 0

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """`logits` minus presence * (count > 0) + frequency * count (a new array)."""
        if not self.active:
            return logits
        penalty = self.presence_penalty * (self.counts > 0) + self.frequency_penalty * self.counts
        return logits - penalty.astype(np.float32)


def kept_probabilities(
    logits: np.ndarray, *, after_newline: bool, settings: SamplerSettings, banned_ids: Sequence[int]
) -> np.ndarray:
    """The float32 probabilities the AI-Writer rule keeps, 0 for every other token.

    Banned ids (the unknown character) get probability 0; softmax in float32; the
    threshold is `top_p_newline` after a newline, else `top_p`; over the probabilities
    sorted in descending order, the first one at which the float32 running sum exceeds
    the threshold is the cutoff (the largest one if the sum never does, so `top_p` = 1
    may keep only the most likely token); the cutoff is lowered to `allow_p` if larger;
    every probability below the cutoff becomes 0 (ties with it stay); finally `top_k`, if
    set, keeps only the k largest. The result is not renormalised and temperature is not
    applied. With ``allow_p=1.0`` this is exactly the 2022 (generation A) rule.
    """
    probs = _softmax32(logits, banned_ids)  # (V,)
    threshold = np.float32(settings.top_p_newline if after_newline else settings.top_p)
    cutoff = min(_nucleus_cutoff(probs, threshold), np.float32(settings.allow_p))
    kept = np.where(probs < cutoff, np.float32(0), probs)
    return _keep_top_k(kept, settings.top_k) if settings.top_k else kept


def sample(
    logits: np.ndarray,
    *,
    after_newline: bool,
    settings: SamplerSettings,
    rng: np.random.Generator,
    banned_ids: Sequence[int],
    penalties: PenaltyTracker | None = None,
) -> int:
    """Draw the next token id; never a banned id.

    Penalties (if given) are applied to the logits first; the caller updates them with the
    chosen token. Temperature 0 returns the most likely allowed token (lowest id on ties)
    without using `rng`; otherwise exactly one ``rng.random()`` is drawn.
    """
    if penalties is not None:
        logits = penalties.apply(logits)
    if settings.temperature == 0:
        return int(np.argmax(_masked_logits(logits, banned_ids)))
    kept = kept_probabilities(logits, after_newline=after_newline, settings=settings, banned_ids=banned_ids)
    ids = np.flatnonzero(kept)  # (K,)
    weights = _with_temperature(kept[ids], settings.temperature)  # (K,) float64, all > 0
    cumulative = np.cumsum(weights)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return int(ids[min(index, ids.size - 1)])


def sample_rows(
    logits: np.ndarray,
    *,
    after_newline: Sequence[bool],
    settings: Sequence[SamplerSettings],
    rngs: Sequence[np.random.Generator],
    banned_ids: Sequence[int],
    penalties: Sequence[PenaltyTracker | None] | None = None,
) -> list[int]:
    """`sample` for each row of a batch of logits (R, V), with the same result for every row.

    The softmax and the nucleus cutoff run on all rows at once (a batch of continuations from
    several requests, each with its own settings and random generator); the draws then happen
    row by row, in order, so each generator is used exactly as a loop over `sample` uses it.
    Rows the vectorized path does not cover (+inf or no finite logit) go through `sample`.
    """
    count = len(logits)
    penalties = list(penalties) if penalties is not None else [None] * count
    z = np.array(logits, dtype=np.float32).reshape(count, -1)  # (R, V)
    for row, tracker in enumerate(penalties):
        if tracker is not None and tracker.active:
            z[row] = tracker.apply(z[row])
    z[np.isnan(z)] = -np.inf
    if len(banned_ids):
        z[:, list(banned_ids)] = -np.inf
    top = z.max(axis=1)  # (R,)
    drawn = np.array([s.temperature != 0 for s in settings]) & np.isfinite(top)
    kept = _kept_rows(z[drawn], top[drawn], [a for a, d in zip(after_newline, drawn) if d],
                      [s for s, d in zip(settings, drawn) if d])
    tokens, next_kept = [], iter(kept)
    for row in range(count):
        if not np.isfinite(top[row]):  # sample() says what is wrong, or shares out the +inf
            tokens.append(sample(logits[row], after_newline=after_newline[row], settings=settings[row], rng=rngs[row],
                                 banned_ids=banned_ids, penalties=penalties[row]))
        elif not drawn[row]:
            tokens.append(int(np.argmax(z[row])))
        else:
            probs = next(next_kept)
            if settings[row].top_k:
                probs = _keep_top_k(probs, settings[row].top_k)
            ids = np.flatnonzero(probs)
            weights = _with_temperature(probs[ids], settings[row].temperature)
            cumulative = np.cumsum(weights)
            index = int(np.searchsorted(cumulative, rngs[row].random() * cumulative[-1], side="right"))
            tokens.append(int(ids[min(index, ids.size - 1)]))
    return tokens


def _kept_rows(z: np.ndarray, top: np.ndarray, after_newline: list[bool],
               settings: list[SamplerSettings]) -> np.ndarray:
    """kept_probabilities (before top_k) of rows with finite logits, all at once: (R, V)."""
    if not len(z):
        return z
    e = np.exp(z - top[:, None])  # (R, V) float32
    probs = e / e.sum(axis=1, dtype=np.float32, keepdims=True)
    threshold = np.array([s.top_p_newline if a else s.top_p for s, a in zip(settings, after_newline)],
                         dtype=np.float32)
    size = probs.shape[1]
    candidates = _NUCLEUS_CANDIDATES if size > _FULL_SORT_MAX_VOCAB else size
    head = np.sort(np.partition(probs, size - candidates, axis=1)[:, -candidates:], axis=1)[:, ::-1]
    over = np.cumsum(head, axis=1, dtype=np.float32) > threshold[:, None]
    cutoff = head[np.arange(len(head)), np.argmax(over, axis=1)]
    for row in np.flatnonzero(~over.any(axis=1)) if candidates < size else ():
        cutoff[row] = _nucleus_cutoff(probs[row], threshold[row], candidates=size)  # needs the full sort
    cutoff = np.minimum(cutoff, np.array([s.allow_p for s in settings], dtype=np.float32))
    return np.where(probs < cutoff[:, None], np.float32(0), probs)


def _masked_logits(logits: np.ndarray, banned_ids: Sequence[int]) -> np.ndarray:
    """float32 copy of `logits` with banned ids and NaN set to -inf; raises if nothing is left."""
    z = np.array(logits, dtype=np.float32).reshape(-1)  # (V,)
    z[np.isnan(z)] = -np.inf
    z[list(banned_ids)] = -np.inf
    if not np.any(z > -np.inf):
        raise AiWriterError("the model produced no valid probabilities (all logits are -inf or NaN)")
    return z


def _softmax32(logits: np.ndarray, banned_ids: Sequence[int]) -> np.ndarray:
    z = _masked_logits(logits, banned_ids)
    top = z.max()
    if np.isposinf(top):  # +inf logits share all the probability
        return (z == top).astype(np.float32) / np.float32(np.count_nonzero(z == top))
    e = np.exp(z - top)  # (V,) float32, banned -> 0
    return e / e.sum(dtype=np.float32)


def _nucleus_cutoff(probs: np.ndarray, threshold: np.float32, candidates: int | None = None) -> np.float32:
    """The probability s[j*] of the AI-Writer nucleus rule (float32, sequential running sum).

    Only the `candidates` largest probabilities are sorted first (np.partition); since they
    are the head of the fully sorted array, their running sum is bit-identical to the full
    one, and the full sort is needed only if it never exceeds `threshold` there.
    """
    if candidates is None:
        candidates = _NUCLEUS_CANDIDATES if probs.size > _FULL_SORT_MAX_VOCAB else probs.size
    if candidates < probs.size:
        head = np.sort(np.partition(probs, probs.size - candidates)[-candidates:])[::-1]
        over = np.cumsum(head, dtype=np.float32) > threshold
        if over.any():
            return head[int(np.argmax(over))]
    ordered = np.sort(probs)[::-1]
    over = np.cumsum(ordered, dtype=np.float32) > threshold
    return ordered[int(np.argmax(over))]  # argmax of all-False is 0: the largest probability


def _keep_top_k(kept: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the k largest nonzero entries (ties at the boundary: lowest ids win)."""
    if np.count_nonzero(kept) <= k:
        return kept
    kth = np.partition(kept, kept.size - k)[kept.size - k]
    result = np.where(kept > kth, kept, np.float32(0))
    ties = np.flatnonzero(kept == kth)[: k - np.count_nonzero(result)]
    result[ties] = kth
    return result


def _with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """p ** (1/T), scaled so the largest is 1 (computed in log space: no underflow at small T)."""
    if temperature == 1:
        return probs.astype(np.float64)
    log_p = np.log(probs.astype(np.float64))
    return np.exp((log_p - log_p.max()) / temperature)
