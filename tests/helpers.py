"""Plain helpers shared by the test modules: paths, the environment of a subprocess, files that would run
code when unpickled, and running an exported ONNX graph. Fixtures live in conftest.py.

Importing this module imports neither torch nor onnxruntime: the helpers that need one import it when called.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent  # the checkout: `python -m ai_writer` runs from here
DATA = Path(__file__).resolve().parent / "data"  # conformance vectors and vocabularies


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of an `ai-writer` subprocess: this one's, less the developer's AI_WRITER_MODEL (the
    tests name their model), plus `extra`."""
    env = {key: value for key, value in os.environ.items() if key != "AI_WRITER_MODEL"}
    env.update(extra)
    return env


# ---- files that would run code when unpickled ----------------------------------------------------------


class RunsAShellCommand:
    """Unpickling this with a permissive unpickler would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def save_original_module_with_payload(path, marker, monkeypatch) -> None:
    """torch.save a whole-module pickle shaped like the 2022-02-15 release (class src.model.GPT) whose unpickling
    would create `marker` with a shell command."""
    import types

    import torch

    package, module = types.ModuleType("src"), types.ModuleType("src.model")
    GPT = type("GPT", (), {"__module__": "src.model"})
    module.GPT, package.model = GPT, module
    model = GPT()
    model._parameters = OrderedDict(weight=torch.zeros(2, 2))
    model._buffers, model._modules = OrderedDict(), OrderedDict()
    model.payload = RunsAShellCommand(marker)
    for name, fake in {"src": package, "src.model": module}.items():
        monkeypatch.setitem(sys.modules, name, fake)  # torch.save pickles the class by its module's name
    torch.save(model, path)
    for name in ("src", "src.model"):
        monkeypatch.delitem(sys.modules, name)


# ---- running an exported RWKV graph in ONNX Runtime (the same inputs and outputs for every version) ----


def session(path):
    """An ONNX Runtime session on the CPU provider, on one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run(sess, tokens, state):
    """Run the ONNX graph on a torch state (an RWKV7State); returns (logits, new state as RWKV7State)."""
    import torch

    from ai_writer.models.rwkv.rwkv7 import RWKV7State

    from ai_writer.models.onnx_file import run_graph

    arrays = [t.numpy() for t in (state.att_shift, state.wkv, state.ffn_shift)]
    logits, new = run_graph(sess, np.asarray(tokens, dtype=np.int64), arrays)
    return logits, RWKV7State(*(torch.from_numpy(t) for t in new))


def max_diff(ours, theirs) -> float:
    """The largest absolute difference over the logits and the three state tensors of two (logits, state)."""
    (logits, state), (ref_logits, ref_state) = ours, theirs
    diffs = [np.abs(logits - ref_logits).max()]
    diffs += [(getattr(state, n) - getattr(ref_state, n)).abs().max().item() for n in ("att_shift", "wkv", "ffn_shift")]
    return float(max(diffs))


def favourite_phrases(text: str, count: int) -> list[str]:
    """The most frequent 2-4 character runs of Chinese characters in `text`, none inside another (the phrases a
    model favours, to ban in tests and benchmarks)."""
    import collections
    import re

    counts = collections.Counter(text[i:i + k] for k in (2, 3, 4) for i in range(len(text) - k + 1)
                                 if re.fullmatch(r"[\u4e00-\u9fff]+", text[i:i + k]))
    chosen: list[str] = []
    for phrase, _ in counts.most_common():
        if not any(phrase in c or c in phrase for c in chosen):
            chosen.append(phrase)
        if len(chosen) == count:
            break
    return chosen
