"""The sampler: AI-Writer rule vectors (conformance README §6.3, §7), settings, draws, penalties."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from helpers import DATA

from ai_writer.errors import AiWriterError, SettingsError
from ai_writer.generation.sampler import (
    PenaltyTracker,
    SamplerSettings,
    _nucleus_cutoff,
    kept_probabilities,
    sample,
)

VECTORS = json.loads((DATA / "sampler_vectors.json").read_text(encoding="utf-8"))
UNKNOWN = VECTORS["unknown_id"]
CASES = {case["name"]: case for case in VECTORS["cases"]}


def _kept(logits: np.ndarray, settings: SamplerSettings, banned: tuple[int, ...] = (UNKNOWN,)) -> np.ndarray:
    return kept_probabilities(logits, after_newline=False, settings=settings, banned_ids=banned)


def _draw(
    logits: np.ndarray,
    settings: SamplerSettings,
    rng: np.random.Generator,
    banned: tuple[int, ...] = (UNKNOWN,),
    after_newline: bool = False,
    penalties: PenaltyTracker | None = None,
) -> int:
    return sample(
        logits,
        after_newline=after_newline,
        settings=settings,
        rng=rng,
        banned_ids=banned,
        penalties=penalties,
    )


def _settings_for(case: dict, rule: str) -> SamplerSettings:
    """Our settings for a vector case. Gen A ("result_2022") is our rule with allow_p = 1;
    a threshold of None (gen A only: no nucleus cutoff at all) is reproduced by allow_p = 0."""
    threshold = case["top_p_newline"] if case["last_is_newline"] else case["top_p_usual"]
    allow_p = case["allow_p"] if rule == "result_new" else 1.0
    return SamplerSettings(
        top_p=0.7 if case["top_p_usual"] is None else case["top_p_usual"],  # None: unused here
        top_p_newline=0.9 if case["top_p_newline"] is None else case["top_p_newline"],
        allow_p=0.0 if threshold is None else allow_p,
        temperature=case["temperature"],
    )


RULE_CASES = [
    pytest.param(case, rule, id=f"{case['name']}-{rule}")
    for case in VECTORS["cases"]
    for rule in ("result_new", "result_2022")
    if case[rule] is not None
]


@pytest.mark.parametrize("case, rule", RULE_CASES)
def test_kept_tokens_and_probabilities_match_the_original(case: dict, rule: str) -> None:
    expected = case[rule]
    settings = _settings_for(case, rule)
    kept = kept_probabilities(
        np.array(case["logits"], dtype=np.float32),
        after_newline=case["last_is_newline"],
        settings=settings,
        banned_ids=[UNKNOWN],
    )
    ids = np.flatnonzero(kept)
    assert ids.tolist() == expected["kept_ids"]
    weights = kept[ids].astype(np.float64) ** (1 / settings.temperature)
    np.testing.assert_allclose(weights / weights.sum(), expected["kept_probs"], rtol=1e-6, atol=0)
    if settings.temperature == 1:  # the original's float32 weights, up to a few ulps of softmax
        np.testing.assert_allclose(kept, expected["multinomial_weights"], rtol=1e-6, atol=0)


def test_vectors_cover_both_rules_and_all_cases() -> None:
    assert len(VECTORS["cases"]) == 25
    assert len(RULE_CASES) == 49  # one case cannot run under the new rule


# ---------------------------------------------------------------- settings


def test_defaults_are_the_ai_writer_ones() -> None:
    assert SamplerSettings().as_dict() == {
        "temperature": 1.0,
        "top_p": 0.7,
        "top_p_newline": 0.9,
        "allow_p": 0.01,
        "top_k": 0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "penalty_decay": 0.996,
    }
    assert set(SamplerSettings.RANGES) == set(SamplerSettings().as_dict())


BAD_SETTINGS = [
    ("temperature", -0.1, "temperature must be a number between 0 and 10, got -0.1"),
    ("temperature", 10.5, "temperature must be a number between 0 and 10, got 10.5"),
    ("temperature", float("nan"), "temperature must be a number between 0 and 10, got nan"),
    ("temperature", "1", "temperature must be a number between 0 and 10, got '1'"),
    ("top_p", 1.5, "top_p must be a number between 0 and 1, got 1.5"),
    ("top_p", None, "top_p must be a number between 0 and 1, got None"),
    ("top_p", True, "top_p must be a number between 0 and 1, got True"),
    ("top_p_newline", -1, "top_p_newline must be a number between 0 and 1, got -1"),
    ("allow_p", float("inf"), "allow_p must be a number between 0 and 1, got inf"),
    ("top_k", -1, "top_k must be a whole number >= 0 (0 = off), got -1"),
    ("top_k", 5.0, "top_k must be a whole number >= 0 (0 = off), got 5.0"),
    ("top_k", False, "top_k must be a whole number >= 0 (0 = off), got False"),
    ("top_p", np.float32(1.5), "top_p must be a number between 0 and 1, got 1.5"),
    ("presence_penalty", 11, "presence_penalty must be a number between 0 and 10, got 11"),
    ("frequency_penalty", -0.5, "frequency_penalty must be a number between 0 and 10, got -0.5"),
    ("penalty_decay", 1.01, "penalty_decay must be a number between 0 and 1, got 1.01"),
]


@pytest.mark.parametrize("name, value, message", BAD_SETTINGS)
def test_bad_settings_name_the_setting_range_and_value(name: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        SamplerSettings(**{name: value})
    assert str(info.value) == message
    with pytest.raises(SettingsError):
        SamplerSettings().replace(**{name: value})


def test_numbers_are_normalised_and_bounds_are_inclusive() -> None:
    settings = SamplerSettings(
        temperature=0, top_p=np.float32(0.5), top_p_newline=1, allow_p=0.0, top_k=np.int64(3)
    )
    assert settings.temperature == 0.0 and type(settings.temperature) is float
    assert type(settings.top_p) is float and settings.top_p == 0.5
    assert settings.top_k == 3 and type(settings.top_k) is int
    SamplerSettings(temperature=10, presence_penalty=10, frequency_penalty=10, penalty_decay=0, top_k=65536)


def test_replace_validates_and_rejects_unknown_names() -> None:
    base = SamplerSettings()
    changed = base.replace(top_p=0.8, top_k=5)
    assert (changed.top_p, changed.top_k, base.top_p) == (0.8, 5, 0.7)
    with pytest.raises(SettingsError) as info:
        base.replace(top_q=0.5)
    assert str(info.value).startswith("unknown setting 'top_q'; valid settings: temperature, top_p,")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.top_p = 0.1  # type: ignore[misc]


def test_range_text_is_usable_as_help() -> None:
    assert SamplerSettings.range_text("top_p") == "a number between 0 and 1"
    assert SamplerSettings.range_text("top_k") == "a whole number >= 0 (0 = off)"


# ---------------------------------------------------------------- drawing


def _case_logits(name: str) -> np.ndarray:
    return np.array(CASES[name]["logits"], dtype=np.float32)


def test_greedy_is_the_argmax_and_never_the_unknown_id() -> None:
    greedy = SamplerSettings(temperature=0)
    rng = np.random.default_rng(0)
    before = rng.bit_generator.state
    for name in ("typical_defaults_new", "unknown_is_argmax", "large_logits", "some_minus_inf"):
        logits = _case_logits(name)
        allowed = logits.copy()
        allowed[UNKNOWN] = -np.inf
        token = _draw(logits, greedy, rng)
        assert token == int(np.argmax(allowed)) != UNKNOWN
    assert rng.bit_generator.state == before  # greedy uses no randomness
    ties = np.array([0.0, 3.0, 1.0, 3.0], dtype=np.float32)
    assert _draw(ties, greedy, rng, banned=()) == 1


def test_seeded_draws_are_reproducible() -> None:
    logits, settings = _case_logits("typical_defaults_new"), SamplerSettings()

    def draws(seed: int) -> list[int]:
        rng = np.random.default_rng(seed)
        return [_draw(logits, settings, rng) for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


@pytest.mark.parametrize("name", ["typical_defaults_new", "temperature_2"])
def test_draw_frequencies_follow_the_kept_probabilities(name: str) -> None:
    case = CASES[name]
    settings = _settings_for(case, "result_new")
    rng = np.random.default_rng(1234)
    n = 20_000
    logits, after_newline = _case_logits(name), case["last_is_newline"]
    draws = [_draw(logits, settings, rng, after_newline=after_newline) for _ in range(n)]
    counts = np.bincount(draws, minlength=VECTORS["vocab_size"])
    kept_ids = case["result_new"]["kept_ids"]
    assert set(np.flatnonzero(counts)) <= set(kept_ids)
    for token, p in zip(kept_ids, case["result_new"]["kept_probs"]):
        standard_error = math.sqrt(p * (1 - p) / n)
        assert abs(counts[token] / n - p) < 5 * standard_error, token


def test_sampling_never_returns_a_banned_id() -> None:
    rng = np.random.default_rng(3)
    logits = _case_logits("unknown_is_argmax")
    flat = SamplerSettings(top_p=1.0, allow_p=0.0, temperature=5.0)
    drawn = {_draw(logits, flat, rng, banned=(UNKNOWN, 0)) for _ in range(2000)}
    assert UNKNOWN not in drawn and 0 not in drawn and len(drawn) > 30


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_no_valid_logits_is_an_error(temperature: float) -> None:
    settings = SamplerSettings(temperature=temperature)
    rng = np.random.default_rng(0)
    for logits in ([-np.inf, -np.inf, 0.0], [np.nan, np.nan, 5.0]):
        with pytest.raises(AiWriterError, match="no valid probabilities"):
            _draw(np.array(logits), settings, rng, banned=(2,))
    partly_nan = np.array([np.nan, 1.0, 0.0])
    assert _draw(partly_nan, settings, rng, banned=(2,)) == 1


def test_tiny_temperatures_do_not_underflow() -> None:
    settings = SamplerSettings(temperature=0.01, top_p=1.0, allow_p=0.0)
    logits = np.array([0.0, -0.5, -100.0], dtype=np.float32)
    rng = np.random.default_rng(0)
    assert {_draw(logits, settings, rng, banned=()) for _ in range(100)} == {0}


# ---------------------------------------------------------------- top_k and penalties


def test_top_k_keeps_the_k_largest_survivors() -> None:
    logits = np.log(np.array([0.05, 0.3, 0.2, 0.2, 0.15, 0.1], dtype=np.float32))
    wide = SamplerSettings(top_p=1.0, allow_p=0.0)

    def kept(k: int) -> list[int]:
        return np.flatnonzero(_kept(logits, wide.replace(top_k=k), banned=())).tolist()

    assert kept(0) == [0, 1, 2, 3, 4, 5]
    assert kept(1) == [1]
    assert kept(2) == [1, 2]  # the tie between ids 2 and 3 goes to the lower id
    assert kept(3) == [1, 2, 3]
    assert kept(10) == [0, 1, 2, 3, 4, 5]
    narrow = SamplerSettings(top_p=0.4, allow_p=0.5, top_k=5)  # the nucleus keeps 3; top_k adds nothing
    assert np.flatnonzero(_kept(logits, narrow, banned=())).tolist() == [1, 2, 3]


def test_penalty_tracker_counts_decay_and_lower_logits() -> None:
    settings = SamplerSettings(presence_penalty=0.5, frequency_penalty=0.25, penalty_decay=0.5)
    tracker = PenaltyTracker(4, settings)
    for token in (1, 1, 2):
        tracker.update(token)
    np.testing.assert_allclose(tracker.counts, [0, 0.75, 1, 0])  # 1 -> 1.5 -> 0.75; 2 -> 1
    penalised = tracker.apply(np.zeros(4, dtype=np.float32))
    np.testing.assert_allclose(penalised, [0, -(0.5 + 0.25 * 0.75), -(0.5 + 0.25), 0])
    tracker.reset()
    assert not tracker.counts.any()


def test_penalties_off_is_a_no_op() -> None:
    tracker = PenaltyTracker(3, SamplerSettings())
    tracker.update(1)
    logits = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert tracker.apply(logits) is logits


def test_penalties_lower_a_repeated_token_probability() -> None:
    logits = _case_logits("typical_defaults_new")
    favourite = int(np.argmax(logits))
    settings = SamplerSettings(presence_penalty=0.4, frequency_penalty=0.4)
    tracker = PenaltyTracker(logits.size, settings)
    before = _kept(tracker.apply(logits), settings)
    for _ in range(3):
        tracker.update(favourite)
    after = _kept(tracker.apply(logits), settings)
    assert after[favourite] < before[favourite]
    greedy = settings.replace(temperature=0)
    for _ in range(10):
        tracker.update(favourite)
    rng = np.random.default_rng(0)
    assert _draw(logits, greedy, rng, penalties=tracker) != favourite


# ---------------------------------------------------------------- the large-vocabulary fast path


def _full_sort_kept(probs: np.ndarray, threshold: float, allow_p: float) -> np.ndarray:
    """The rule written plainly: full descending sort, sequential float32 running sum."""
    ordered = np.sort(probs)[::-1]
    running = np.cumsum(ordered, dtype=np.float32)
    over = np.flatnonzero(running > np.float32(threshold))
    cutoff = min(ordered[over[0]] if over.size else ordered[0], np.float32(allow_p))
    return np.where(probs < cutoff, np.float32(0), probs)


def _large_logits() -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    v = 65_536
    peaked = (rng.standard_normal(v) * 4).astype(np.float32)
    flat = (rng.standard_normal(v) * 0.1).astype(np.float32)  # the top 1,024 never reach 0.5
    ties = np.round(rng.standard_normal(v) * 2).astype(np.float32)  # a handful of distinct values
    return [peaked, flat, ties]


@pytest.mark.parametrize("threshold", [0.0, 0.1, 0.5, 0.7, 0.9, 0.99, 0.999, 1.0])
def test_fast_path_is_bit_identical_to_a_full_sort(threshold: float) -> None:
    settings = SamplerSettings(top_p=threshold, allow_p=1.0)
    for logits in _large_logits():
        kept = _kept(logits, settings, banned=(7,))
        probs = _kept(logits, settings.replace(allow_p=0.0), banned=(7,))  # the plain softmax
        assert np.array_equal(kept, _full_sort_kept(probs, threshold, 1.0))
        for candidates in (1, 16, 1024, None):
            fast = _nucleus_cutoff(probs, np.float32(threshold), candidates)
            assert fast.tobytes() == _nucleus_cutoff(probs, np.float32(threshold), probs.size).tobytes()


@pytest.mark.parametrize("vocab", [50, 5000])
def test_sample_rows_equals_sample_row_by_row(vocab):
    from ai_writer.generation.sampler import PenaltyTracker, sample_rows

    rng = np.random.default_rng(vocab)
    settings = [SamplerSettings(), SamplerSettings(temperature=0), SamplerSettings(top_p=1.0, allow_p=0.0),
                SamplerSettings(top_k=3, temperature=0.5), SamplerSettings(top_p=0.0, temperature=2.0),
                SamplerSettings(top_p=0.99, top_p_newline=0.2, presence_penalty=0.5, frequency_penalty=0.3),
                SamplerSettings(allow_p=0.5), SamplerSettings(temperature=0.05)]
    for trial in range(40):
        rows = len(settings)
        logits = (rng.standard_normal((rows, vocab)) * rng.uniform(0.5, 8)).astype(np.float32)
        logits[rng.random((rows, vocab)) < 0.01] = np.nan
        if trial % 5 == 0:
            logits[2, 7] = np.inf  # shared out by sample()
        after = list(rng.random(rows) < 0.5)
        shared = trial % 2 == 0  # rows of one request share a generator
        seeds = [trial] * rows if shared else list(range(trial, trial + rows))
        a_rngs = [np.random.default_rng(s) for s in seeds] if not shared else [np.random.default_rng(trial)] * rows
        b_rngs = [np.random.default_rng(s) for s in seeds] if not shared else [np.random.default_rng(trial)] * rows
        trackers = []
        for _ in range(2):
            tracker = PenaltyTracker(vocab, settings[5])
            for token in rng.integers(0, vocab, 20):
                tracker.update(int(token))
            trackers.append(tracker)
        a_pen = [None] * 5 + [trackers[0]] + [None] * 2
        b_pen = [None] * 5 + [trackers[1]] + [None] * 2
        trackers[1].counts[:] = trackers[0].counts
        one_by_one = [sample(logits[r], after_newline=after[r], settings=settings[r], rng=a_rngs[r], banned_ids=[0, 3],
                             penalties=a_pen[r]) for r in range(rows)]
        together = sample_rows(logits, after_newline=after, settings=settings, rngs=b_rngs, banned_ids=[0, 3],
                               penalties=b_pen)
        assert together == one_by_one
    assert a_rngs[0].random() == b_rngs[0].random()  # the generators advanced alike


def test_sample_rows_reports_a_row_without_valid_logits():
    from ai_writer.generation.sampler import sample_rows

    logits = np.zeros((2, 6), dtype=np.float32)
    logits[1] = np.nan
    with pytest.raises(AiWriterError, match="no valid probabilities"):
        sample_rows(logits, after_newline=[False, False], settings=[SamplerSettings()] * 2,
                    rngs=[np.random.default_rng(0)] * 2, banned_ids=[])
