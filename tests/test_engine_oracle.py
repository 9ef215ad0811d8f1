"""Our RWKV-7, RWKV-6 and RWKV-5.2 against the official `rwkv` package on random checkpoints (fp32).

The package runs in a subprocess (rwkv_oracle.py): its RWKV-7 build for RWKV-7 files, its generic class
(RWKV_V7_ON unset) for the others, which detects RWKV-5.2 and RWKV-6 from the file itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from rwkv7_factory import write_random_rwkv7
from rwkv_oracle import oracle_greedy, oracle_logits
from rwkv_world_factory import write_random_rwkv

from ai_writer.backends.rwkv_torch import TorchBackend
from ai_writer.models.checkpoint import load_checkpoint

pytestmark = pytest.mark.oracle

SHAPES = {
    # RWKV-7 in the AI-Writer size class: width 512, head size 64, the 8849-character vocabulary
    "v7-D512-V8849": dict(version=7, n_layer=2, n_embd=512, head_size=64, vocab_size=8849),
    # RWKV-7 with a world-model vocabulary
    "v7-D128-V65536": dict(version=7, n_layer=2, n_embd=128, head_size=64, vocab_size=65536),
    # RWKV-7 with odd sizes everywhere, and no layer-0 value-residual tensors in the file
    "v7-odd": dict(version=7, n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200,
                   lora_dims=(16, 24, 8, 40), layer0_value_residual=False),
    # RWKV-5.2 and RWKV-6 with the world vocabulary, head size 64 as in every released world model
    "v5.2-D128-V65536": dict(version=5, n_layer=2, n_embd=128, vocab_size=65536),
    "v6-D128-V65536": dict(version=6, n_layer=2, n_embd=128, vocab_size=65536),
    # odd sizes: head size 32, a channel-mix width that is no multiple of C, narrow LoRAs
    "v5.2-odd": dict(version=5, n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200),
    "v6-odd": dict(version=6, n_layer=3, n_embd=96, head_size=32, vocab_size=77, ffn_dim=200, dim_mix=16,
                   dim_decay=24),
}
# more than two chunks of RWKV-7's parallel recurrence; four of RWKV-5.2's and RWKV-6's, and a padded fifth
PROMPT_LEN = 70


@pytest.fixture(scope="module", params=SHAPES, ids=list(SHAPES))
def case(request, tmp_path_factory, one_torch_thread):
    """(checkpoint path, prompt, our torch backend, whether the package runs it as RWKV-7)."""
    path = tmp_path_factory.mktemp("oracle") / f"{request.param}.pth"
    shape = dict(SHAPES[request.param])
    version = shape.pop("version")
    if version == 7:
        write_random_rwkv7(path, seed=11, **shape)
    else:
        write_random_rwkv(path, version=version, seed=11, **shape)
    prompt = np.random.default_rng(5).integers(0, shape["vocab_size"], PROMPT_LEN).tolist()
    checkpoint = load_checkpoint(path)
    assert checkpoint.config.version == version
    return path, prompt, TorchBackend(checkpoint), version == 7


def test_prefill_and_step_logits_match_the_package(case):
    path, prompt, backend, rwkv7 = case
    expected = oracle_logits(path, prompt, threads=1, rwkv7=rwkv7)

    logits, _ = backend.forward([prompt], backend.zero_state(1))
    np.testing.assert_allclose(logits[0], expected["prefill"], atol=1e-4, rtol=0)

    state, steps = backend.zero_state(1), []
    for token in prompt:
        logits, state = backend.forward([[token]], state)
        steps.append(logits[0])
    np.testing.assert_allclose(np.stack(steps), expected["steps"], atol=1e-4, rtol=0)


def test_greedy_continuation_equals_the_package(case):
    path, prompt, backend, rwkv7 = case
    expected = oracle_greedy(path, prompt, 100, threads=1, rwkv7=rwkv7)

    logits, state = backend.forward([prompt], backend.zero_state(1))
    chosen = []
    for _ in range(100):
        token = int(np.argmax(logits[0]))
        chosen.append(token)
        logits, state = backend.forward([[token]], state)
    assert chosen == list(expected)
    assert len(set(chosen)) > 5  # a continuation that says something, not one token repeated
