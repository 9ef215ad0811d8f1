"""Our RWKV-5.2 and RWKV-6 against the official `rwkv` package on random world checkpoints (fp32).

The package runs in a subprocess with its generic class (RWKV_V7_ON unset), which detects
these versions from the file itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from rwkv_oracle import oracle_greedy, oracle_logits
from rwkv_world_factory import write_random_rwkv

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint

SHAPES = {
    # the world vocabulary, head size 64 as in every released world model
    "v5.2-D128-V65536": dict(version=5, n_layer=2, n_embd=128, vocab_size=65536),
    "v6-D128-V65536": dict(version=6, n_layer=2, n_embd=128, vocab_size=65536),
    # odd sizes: head size 32, a channel-mix width that is no multiple of C, narrow LoRAs
    "v5.2-odd": dict(version=5, n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200),
    "v6-odd": dict(version=6, n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200, dim_mix=16,
                   dim_decay=24),
}
PROMPT_LEN = 70  # four chunks of the parallel recurrence and a padded fifth


@pytest.fixture(scope="module", params=SHAPES, ids=list(SHAPES))
def case(request, tmp_path_factory, one_torch_thread):
    path = tmp_path_factory.mktemp("world") / f"{request.param}.pth"
    shape = SHAPES[request.param]
    write_random_rwkv(path, seed=11, **shape)
    prompt = np.random.default_rng(5).integers(0, shape["vocab_size"], PROMPT_LEN).tolist()
    checkpoint = load_checkpoint(path)
    assert checkpoint.config.version == shape["version"]
    return path, prompt, TorchBackend(checkpoint)


def test_prefill_and_step_logits_match_the_package(case):
    path, prompt, backend = case
    expected = oracle_logits(path, prompt, threads=1, rwkv7=False)

    logits, _ = backend.forward([prompt], backend.zero_state(1))
    np.testing.assert_allclose(logits[0], expected["prefill"], atol=1e-4, rtol=0)

    state, steps = backend.zero_state(1), []
    for token in prompt:
        logits, state = backend.forward([[token]], state)
        steps.append(logits[0])
    np.testing.assert_allclose(np.stack(steps), expected["steps"], atol=1e-4, rtol=0)


def test_greedy_continuation_equals_the_package(case):
    path, prompt, backend = case
    expected = oracle_greedy(path, prompt, 100, threads=1, rwkv7=False)

    logits, state = backend.forward([prompt], backend.zero_state(1))
    chosen = []
    for _ in range(100):
        token = int(np.argmax(logits[0]))
        chosen.append(token)
        logits, state = backend.forward([[token]], state)
    assert chosen == list(expected)
    assert len(set(chosen)) > 5  # a continuation that says something, not one token repeated
