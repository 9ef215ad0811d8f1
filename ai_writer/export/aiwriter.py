"""Exporting an AI-Writer 2022-02-15 `.pth` to the `.onnx` form its release used for AMD/Intel cards.

The graph takes int64 ids [1, ctx_len] (named `idx`) and returns the logits of every position
[1, ctx_len, vocab] (named `logits`), the computation of models/aiwriter/window.py over a whole
window; the window backend (backends/aiwriter_onnx.py) pads shorter windows with id 0 and reads the
last real row.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ai_writer.errors import ModelFileError
from ai_writer.files import atomic_path

OPSET = 17


def export_legacy(model_path: Path, out: Path, precision: str) -> bool:
    """`ai-writer export onnx` for the original releases: True when `model_path` was one (and is exported)."""
    from ai_writer.models.formats import AIWRITER_KINDS, recognise

    kind = recognise(model_path)
    if kind not in AIWRITER_KINDS:
        return False
    if kind != "aiwriter-window" or precision != "fp32":
        raise ModelFileError(f"{model_path}: of the original AI-Writer models only the 2022-02-15 one has an ONNX "
                             "form, in fp32 (--precision fp32)")
    export_window_onnx(model_path, out)
    return True


def export_window_onnx(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the ONNX form of a 2022-02-15 checkpoint atomically (files.atomic_path)."""
    import torch

    from ai_writer.models.aiwriter.window import AConfig, AIWriterA
    from ai_writer.models.aiwriter.restricted_pickle import read_pth

    model_path, out = Path(model_path), Path(out)
    tensors = read_pth(model_path)
    config = AConfig.from_shapes({key: value.shape for key, value in tensors.items()}, str(model_path))
    model = AIWriterA(config, {key: torch.from_numpy(value) for key, value in tensors.items()})

    class WholeWindow(torch.nn.Module):
        def forward(self, idx):
            return model.forward(idx, None, all_positions=True, keep_cache=False)[0]

    try:
        with atomic_path(out) as temporary, warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(WholeWindow(), (torch.zeros(1, config.ctx_len, dtype=torch.long),), str(temporary),
                              input_names=["idx"], output_names=["logits"], opset_version=OPSET, dynamo=False)
    except (RuntimeError, OSError) as exc:
        raise ModelFileError(f"{model_path}: the ONNX export failed: {str(exc).splitlines()[0][:200]}") from None
    return out
