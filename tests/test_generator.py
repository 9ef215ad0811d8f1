"""The generator: exact lengths, batches of runs from one prefill, stop strings that never leak."""

from __future__ import annotations

import numpy as np
import pytest

from ai_writer.errors import InputTextError, SettingsError
from ai_writer.generation.generator import Generator, RunResult
from ai_writer.generation.reading import CountingBackend
from ai_writer.backends.open import load_model
from ai_writer.generation.sampler import SamplerSettings


@pytest.fixture(scope="module")
def loaded(tiny_model, tiny_onnx_cache):
    return load_model(tiny_model, onnx_cache=tiny_onnx_cache)  # the automatic backend


def write(generator, start, **kwargs):
    results: list[RunResult] = []
    chunks = list(generator.stream(start, results=results, **kwargs))
    return chunks, sorted(results, key=lambda r: r.run)


def test_length_is_exact_and_chunks_add_up(loaded):
    generator = Generator(loaded.backend, loaded.tokenizer)
    chunks, results = write(generator, generator.prefill("\n这是"), max_chars=77, rng=np.random.default_rng(0))
    assert "".join(c.text for c in chunks) == results[0].text
    assert len(results[0].text) == 77 and results[0].finish_reason == "length"


def test_greedy_runs_in_a_batch_equal_a_single_run(loaded):
    generator = Generator(loaded.backend, loaded.tokenizer, SamplerSettings(temperature=0))
    start = generator.prefill("\n林黛玉")
    _, single = write(generator, start, max_chars=40, rng=np.random.default_rng(0))
    _, batch = write(generator, start, max_chars=40, runs=4, rng=np.random.default_rng(0))
    assert [r.text for r in batch] == [single[0].text] * 4


def test_runs_share_one_prefill_and_writing_again_rereads_nothing(loaded):
    counting = CountingBackend(loaded.backend)
    generator = Generator(counting, loaded.tokenizer)
    start = generator.prefill("\n这是一颗魔法" * 50)
    assert counting.fed == start.n_tokens == 350
    write(generator, start, max_chars=10, runs=3, rng=np.random.default_rng(1))
    write(generator, start, max_chars=10, runs=1, rng=np.random.default_rng(2))  # a rewrite from the snapshot
    assert counting.fed == 350 + 3 * 9 + 9  # the last character of each run is never fed back


def test_stop_strings_end_a_run_and_never_leak(loaded):
    greedy = Generator(loaded.backend, loaded.tokenizer, SamplerSettings(temperature=0))
    start = greedy.prefill("\n这是")
    _, full = write(greedy, start, max_chars=120, rng=np.random.default_rng(0))
    stop = full[0].text[60:63]
    chunks, cut = write(greedy, start, max_chars=120, rng=np.random.default_rng(0), stop=["never-there", stop])
    expected = full[0].text[: full[0].text.index(stop)]
    assert cut[0].text == expected and cut[0].finish_reason == "stop"
    assert "".join(c.text for c in chunks) == expected


def test_penalties_change_the_text(loaded):
    plain = Generator(loaded.backend, loaded.tokenizer, SamplerSettings(temperature=0))
    penalized = Generator(loaded.backend, loaded.tokenizer,
                          SamplerSettings(temperature=0, presence_penalty=2.0, frequency_penalty=1.0))
    a = write(plain, plain.prefill("\n这是"), max_chars=60, rng=np.random.default_rng(0))[1][0].text
    b = write(penalized, penalized.prefill("\n这是"), max_chars=60, rng=np.random.default_rng(0))[1][0].text
    assert a != b
    assert len(set(b)) > len(set(a))  # fewer repeats


def test_bad_requests(loaded):
    generator = Generator(loaded.backend, loaded.tokenizer)
    with pytest.raises(InputTextError):
        generator.prefill("")
    start = generator.prefill("\n这")
    with pytest.raises(SettingsError):
        list(generator.stream(start, max_chars=0, rng=np.random.default_rng(0)))
    with pytest.raises(SettingsError):
        list(generator.stream(start, max_chars=5, runs=0, rng=np.random.default_rng(0)))
