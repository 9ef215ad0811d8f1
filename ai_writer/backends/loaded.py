"""A model opened for writing: its file, shape, tokenizer, the backend that runs it, and why that one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_writer.backends.base import Backend
from ai_writer.backends.select import Choice


@dataclass
class LoadedModel:
    path: Path  # the model file asked for
    config: Any  # models.config.ModelConfig, or an original AI-Writer model's config
    tokenizer: Any  # CharTokenizer or WorldTokenizer; None only when opened with need_vocab=False
    backend: Backend
    choice: Choice
    runs: Path | None = None  # the .onnx the ONNX Runtime backends run
    state_file: Path | None = None  # --state: the tuned state every text starts from

    def describe(self) -> str:
        return (
            f"{self.path.name}: {self.config.describe()}; "
            f"backend {self.choice.backend} {self.choice.precision} ({self.choice.reason})"
            + (f"; starting from state {self.state_file.name}" if self.state_file else "")
        )


@dataclass
class ModelPlan:
    """What opening a model would run when its ONNX export has yet to be made (backends/open.py,
    plan_export): all `ai-writer info` reports, without the export that takes a big model minutes."""

    path: Path
    config: Any
    tokenizer: Any
    choice: Choice
