"""How a training run reports: a quiet recorder for tests and programs, a rich progress bar for people."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

LN2 = math.log(2)


@dataclass(frozen=True)
class StepStats:
    step: int  # steps done
    total_steps: int
    loss: float  # training loss of the step, nats per character
    tokens_per_s: float  # smoothed
    lr: float

    @property
    def bits_per_character(self) -> float:
        return self.loss / LN2


class TrainProgress(Protocol):
    def message(self, text: str) -> None:
        """A status line (settings, resume, interruption)."""

    def start(self, total_steps: int, step: int) -> None:
        """The loop begins at `step` of `total_steps`."""

    def update(self, stats: StepStats) -> None:
        """A step is done."""

    def evaluated(self, step: int, val_loss: float | None, best: bool) -> None:
        """The held-out windows were scored; `best`: the weights were written to the output file."""

    def close(self) -> None:
        """The run ends (finished or interrupted)."""


class QuietProgress:
    """Prints nothing; keeps the messages and the last step's figures."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.last: StepStats | None = None
        self.evaluations: list[tuple[int, float | None, bool]] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def start(self, total_steps: int, step: int) -> None:
        pass

    def update(self, stats: StepStats) -> None:
        self.last = stats

    def evaluated(self, step: int, val_loss: float | None, best: bool) -> None:
        self.evaluations.append((step, val_loss, best))

    def close(self) -> None:
        pass


class RichProgress:
    """A progress bar on stderr: step/total, loss, bits per character, tokens/s, ETA; one line per evaluation."""

    def __init__(self, console=None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("step {task.completed}/{task.total}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[bpc]} bpc"),
            TextColumn("{task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._task = None

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def start(self, total_steps: int, step: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("train", total=total_steps, completed=step, loss="-", bpc="-",
                                             speed="-")

    def update(self, stats: StepStats) -> None:
        self._progress.update(
            self._task, completed=stats.step, loss=f"{stats.loss:.3f}", bpc=f"{stats.bits_per_character:.3f}",
            speed=f"{stats.tokens_per_s:,.0f}",
        )

    def evaluated(self, step: int, val_loss: float | None, best: bool) -> None:
        if val_loss is None:
            self.message(f"step {step}: no held-out text to score; saved the weights")
            return
        note = "best so far, saved" if best else "not better than the best"
        self.message(f"step {step}: held-out loss {val_loss:.4f}, {val_loss / LN2:.4f} bits per character ({note})")

    def close(self) -> None:
        self._progress.stop()
