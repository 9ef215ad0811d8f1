"""Our RWKV-7 against the official `rwkv` package on random checkpoints (fp32)."""

from __future__ import annotations

import numpy as np
import pytest
from rwkv7_factory import write_random_rwkv7
from rwkv_oracle import oracle_greedy, oracle_logits

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint

SHAPES = {
    # the AI-Writer size class: width 512, head size 64, the 8849-character vocabulary
    "D512-V8849": dict(n_layer=2, n_embd=512, head_size=64, vocab_size=8849),
    # a world-model vocabulary
    "D128-V65536": dict(n_layer=2, n_embd=128, head_size=64, vocab_size=65536),
    # odd sizes everywhere, and no layer-0 value-residual tensors in the file
    "odd": dict(n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200, lora_dims=(16, 24, 8, 40),
                layer0_value_residual=False),
}
PROMPT_LEN = 70  # more than two chunks of the parallel recurrence


@pytest.fixture(scope="module", params=SHAPES, ids=list(SHAPES))
def case(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("oracle") / f"{request.param}.pth"
    shape = SHAPES[request.param]
    write_random_rwkv7(path, seed=11, **shape)
    prompt = np.random.default_rng(5).integers(0, shape["vocab_size"], PROMPT_LEN).tolist()
    backend = TorchBackend(load_checkpoint(path))
    return path, prompt, backend


def test_prefill_and_step_logits_match_the_package(case):
    path, prompt, backend = case
    expected = oracle_logits(path, prompt)

    logits, _ = backend.forward([prompt], backend.zero_state(1))
    np.testing.assert_allclose(logits[0], expected["prefill"], atol=1e-4, rtol=0)

    state, steps = backend.zero_state(1), []
    for token in prompt:
        logits, state = backend.forward([[token]], state)
        steps.append(logits[0])
    np.testing.assert_allclose(np.stack(steps), expected["steps"], atol=1e-4, rtol=0)


def test_greedy_continuation_equals_the_package(case):
    path, prompt, backend = case
    expected = oracle_greedy(path, prompt, 100)

    logits, state = backend.forward([prompt], backend.zero_state(1))
    chosen = []
    for _ in range(100):
        token = int(np.argmax(logits[0]))
        chosen.append(token)
        logits, state = backend.forward([[token]], state)
    assert chosen == list(expected)
