"""The inference worker: one thread owns the model and serves every request.

Requests wait in a bounded queue. The worker keeps one batch of continuations ("rows") from
all the requests it has admitted and advances them together, one decode step (one token per
row) at a time; a new request joins the batch at the next step, after its prompt is read in
segments that alternate with the decode steps, so a long prompt does not stall the others.
Prompts are read through the prefix cache. A request whose client went away is dropped at
the next step.

Each job reports through its own event queue: ("chunk", index, text) and ("finish", index,
reason) as its continuations grow and end, then ("done", summary), or ("error", ApiError).
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ai_writer.backends import Backend
from ai_writer.generation.generator import settle_row
from ai_writer.generation.prefix_cache import PrefixCache
from ai_writer.generation.sampler import PenaltyTracker, sample_rows
from ai_writer.server.requests import ApiError, JobSpec
from ai_writer.text.char_tokenizer import CharTokenizer

PREFILL_SEGMENT = 256  # prompt tokens read per step while other requests are being written


@dataclass
class Job:
    spec: JobSpec
    prompt_ids: list[tuple[int, ...]]
    seed: int
    events: "queue.SimpleQueue[tuple]" = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    reused_tokens: int = 0  # prompt tokens found in the prefix cache
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    rows_left: int = 0

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Row:
    job: Job
    index: int  # the choice index within the job: prompt * runs + run
    prompt: tuple[int, ...]
    rng: np.random.Generator
    penalties: PenaltyTracker | None
    last_token: int
    decoder: Any  # the tokenizer's stream decoder: a chunk never holds a broken character
    generated: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    done: bool = False
    finish_reason: str = "length"


@dataclass
class _Reading:
    """A prompt being read: what is left of it and the state so far."""

    job: Job
    prompt_index: int
    ids: tuple[int, ...]
    position: int
    state: Any
    logits: np.ndarray | None


class InferenceWorker:
    def __init__(self, backend: Backend, tokenizer: CharTokenizer, *, max_queue: int = 32, max_batch: int = 32,
                 cache: PrefixCache | None = None):
        self.backend, self.tokenizer = backend, tokenizer
        self.max_batch = max_batch
        self.cache = cache if cache is not None else PrefixCache()
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ai-writer-inference", daemon=True)
        self._rows: list[_Row] = []
        self._state: Any = None
        self._logits: np.ndarray | None = None
        self._reading: list[_Reading] = []
        self.steps = 0  # decode steps taken (for tests and stats)
        self.max_rows_seen = 0  # the largest batch decoded so far

    # -- the request side (HTTP threads) ------------------------------------------------------

    def start(self) -> "InferenceWorker":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        stopped = ApiError(503, "the server is shutting down")
        self._fail_all(stopped)
        while True:
            try:
                self._queue.get_nowait().events.put(("error", stopped))
            except queue.Empty:
                break

    def submit(self, spec: JobSpec) -> Job:
        if self._stopping.is_set():
            raise ApiError(503, "the server is shutting down")
        prompt_ids = [tuple(self.tokenizer.encode(prompt)) for prompt in spec.prompts]
        seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
        job = Job(spec, prompt_ids, seed, rows_left=len(prompt_ids) * spec.runs)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise ApiError(429, "the server is busy: too many requests are waiting; try again shortly",
                           headers={"Retry-After": "2"}) from None
        return job

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def active_rows(self) -> int:
        return len(self._rows) + len(self._reading)

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._admit()
            if not self._rows and not self._reading:
                continue
            try:
                self._drop_cancelled()
                if self._reading:
                    self._read_one_segment()
                if self._rows:
                    self._decode_step()
            except Exception as exc:  # a backend failure: fail the jobs in flight, keep serving
                self._fail_all(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}"))

    def _admit(self) -> None:
        """Take waiting jobs while the batch has room; block briefly when there is nothing to do."""
        idle = not self._rows and not self._reading
        while True:
            room = self.max_batch - len(self._rows) - sum(r.job.spec.runs for r in self._reading)
            if not idle and (room <= 0 or not self._can_join()):
                return
            try:
                job = self._queue.get(timeout=0.2) if idle else self._queue.get_nowait()
            except queue.Empty:
                return
            idle = False
            if job.cancelled.is_set():
                continue
            for index, ids in enumerate(job.prompt_ids):
                self._reading.append(self._start_reading(job, index, ids))

    def _can_join(self) -> bool:
        """Requests share a batch when the backend's states can be concatenated."""
        return self._state is None or hasattr(self._state, "concat")

    def _start_reading(self, job: Job, prompt_index: int, ids: tuple[int, ...]) -> _Reading:
        cached = self.cache.longest_prefix(ids)
        if cached is None:
            return _Reading(job, prompt_index, ids, 0, self.backend.zero_state(1), None)
        job.reused_tokens += len(cached.ids)
        return _Reading(job, prompt_index, ids, len(cached.ids), cached.state, cached.logits)

    def _read_one_segment(self) -> None:
        reading = self._reading[0]
        if reading.position < len(reading.ids):
            segment = reading.ids[reading.position : reading.position + PREFILL_SEGMENT]
            logits, reading.state = self.backend.forward([list(segment)], reading.state)
            reading.logits, reading.position = logits[0], reading.position + len(segment)
            if reading.position < len(reading.ids):
                return
            self.cache.put(reading.ids, reading.state, reading.logits)
        self._reading.pop(0)
        self._add_rows(reading)

    def _add_rows(self, reading: _Reading) -> None:
        job, runs = reading.job, reading.job.spec.runs
        settings = job.spec.settings
        penalize = settings.presence_penalty > 0 or settings.frequency_penalty > 0
        rng = np.random.default_rng(job.seed if reading.prompt_index == 0 else [job.seed, reading.prompt_index])
        for run in range(runs):
            penalties = PenaltyTracker(self.tokenizer.vocab_size, settings) if penalize else None
            self._rows.append(_Row(job, reading.prompt_index * runs + run, reading.ids, rng, penalties,
                                   reading.ids[-1], self.tokenizer.stream_decoder()))
        state = reading.state.repeat(runs) if runs > 1 else reading.state
        logits = np.repeat(reading.logits[None, :], runs, axis=0)
        if self._state is None:
            self._state, self._logits = state, logits
        else:
            self._state = self._state.concat(state)
            self._logits = np.concatenate([self._logits, logits])
        self.max_rows_seen = max(self.max_rows_seen, len(self._rows))

    def _decode_step(self) -> None:
        banned = list(self.tokenizer.banned_ids)
        line_ends = self.tokenizer.line_end_ids
        rows = self._rows
        tokens = sample_rows(self._logits, after_newline=[row.last_token in line_ends for row in rows],
                             settings=[row.job.spec.settings for row in rows], rngs=[row.rng for row in rows],
                             banned_ids=banned, penalties=[row.penalties for row in rows])
        for position, (row, token) in enumerate(zip(rows, tokens)):
            if row.penalties is not None:
                row.penalties.update(token)
            row.generated.append(token)
            row.last_token = token
            row.text += row.decoder.decode(token)
            chunk = settle_row(row, row.job.spec.max_chars, row.job.spec.stop)
            if chunk:
                row.job.events.put(("chunk", row.index, chunk))
            if row.done:
                self._finish(row, position)
        self.steps += 1
        keep = [p for p, row in enumerate(self._rows) if not row.done]
        self._keep(keep)
        if self._rows:
            self._logits, self._state = self.backend.forward([[tokens[p]] for p in keep], self._state)

    def _finish(self, row: _Row, position: int) -> None:
        job = row.job
        if len(row.generated) > 1:  # the state after all but the last token, with the logits it was drawn from
            self.cache.put(row.prompt + tuple(row.generated[:-1]), self._state.select([position]),
                           self._logits[position])
        job.events.put(("finish", row.index, row.finish_reason))
        job.results[row.index] = {"index": row.index, "text": row.text, "finish_reason": row.finish_reason,
                                  "tokens": len(row.generated)}
        job.rows_left -= 1
        if job.rows_left == 0:
            job.events.put(("done", self._summary(job)))

    def _summary(self, job: Job) -> dict[str, Any]:
        choices = [job.results[i] for i in sorted(job.results)]
        return {"choices": choices, "seed": job.seed, "prompt_tokens": sum(len(ids) for ids in job.prompt_ids),
                "reused_tokens": job.reused_tokens, "completion_tokens": sum(c["tokens"] for c in choices),
                "seconds": round(time.perf_counter() - job.submitted, 4)}

    def _keep(self, positions: list[int]) -> None:
        if len(positions) == len(self._rows):
            return
        self._rows = [self._rows[p] for p in positions]
        if self._rows:
            self._state, self._logits = self._state.select(positions), self._logits[positions]
        else:
            self._state, self._logits = None, None

    def _drop_cancelled(self) -> None:
        self._reading = [r for r in self._reading if not r.job.cancelled.is_set()]
        self._keep([p for p, row in enumerate(self._rows) if not row.job.cancelled.is_set()])

    def _fail_all(self, error: ApiError) -> None:
        jobs = {id(r.job): r.job for r in self._rows} | {id(r.job): r.job for r in self._reading}
        for job in jobs.values():
            job.events.put(("error", error))
        self._rows, self._reading, self._state, self._logits = [], [], None, None
