"""The inference worker: one thread owns the model and serves every request.

Requests wait in a bounded queue. The worker keeps one batch of continuations ("rows") from
all the requests it has admitted and advances them together, one decode step (one token per
row) at a time; a new request joins the batch at the next step, after its prompt is read in
segments that alternate with the decode steps, so a long prompt does not stall the others.
Prompts are read through the prefix cache. A request whose client went away is dropped at
the next step.

A request with a steering block (memory, lore, note: DESIGN.md §11) is read as the story before
the paragraph being continued, the block, then that paragraph (`steered_ids`); the cache also keeps
the states after the story's part and after the block, so the next request from the same story
start reads again only what changed (an unchanged block is not read again).

Each job reports through its own event queue: ("chunk", index, text) and ("finish", index,
reason, rewinds) as its continuations grow and end, then ("done", summary), or ("error", ApiError).
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ai_writer.generation.decode import DecodeBatch, Row
from ai_writer.generation.prefix_cache import PrefixCache
from ai_writer.generation.reading import PromptReading, Reader
from ai_writer.server.requests import ApiError, JobSpec
from ai_writer.story.steering import paragraph_start
from ai_writer.text.char_tokenizer import CharTokenizer
from ai_writer.text.templates import SHIPPED, Template

PREFILL_SEGMENT = 256  # prompt tokens read per step while other requests are being written


@dataclass
class Job:
    spec: JobSpec
    prompt_ids: list[tuple[int, ...]]
    seed: int
    marks: list[tuple[int, ...]] = field(default_factory=list)  # per prompt: positions whose states the cache keeps
    events: "queue.SimpleQueue[tuple]" = field(default_factory=queue.SimpleQueue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.perf_counter)
    reused_tokens: int = 0  # prompt tokens found in the prefix cache
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    rows_left: int = 0

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Reading:
    """A prompt of a job being read."""

    job: Job
    prompt_index: int
    prompt: PromptReading
    marks: tuple[int, ...] = ()  # positions inside the prompt whose states the cache keeps (segments end there)


class InferenceWorker:
    def __init__(self, backend: Any, tokenizer: CharTokenizer, *, max_queue: int = 32, max_batch: int = 32,
                 cache: PrefixCache | None = None, template: Template = SHIPPED["plain"]):
        self.tokenizer, self.template = tokenizer, template
        self.reader = Reader(backend, tokenizer)
        self.batch = DecodeBatch(backend, tokenizer, keep_final_states=True)
        self.max_batch = max_batch
        self.cache = cache if cache is not None else PrefixCache()
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ai-writer-inference", daemon=True)
        self._reading: list[_Reading] = []  # prompts being read, in order
        self._ready: list[_Reading] = []  # prompts read, waiting for rows they cannot join yet
        self._next: Job | None = None  # taken from the queue, waiting for room in the batch
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
        if self._next is not None:
            self._next.events.put(("error", stopped))
            self._next = None
        while True:
            try:
                self._queue.get_nowait().events.put(("error", stopped))
            except queue.Empty:
                break

    def submit(self, spec: JobSpec) -> Job:
        if self._stopping.is_set():
            raise ApiError(503, "the server is shutting down")
        if len(spec.prompts) * spec.runs > self.max_batch:
            raise ApiError(422, f"this request asks for {len(spec.prompts) * spec.runs} continuations; the server "
                           f"writes at most {self.max_batch} at once (--batch)")
        readings = [steered_ids(self.tokenizer.encode, self.template, prompt, spec.steering.block(prompt))
                    for prompt in spec.prompts]
        seed = spec.seed if spec.seed is not None else secrets.randbelow(2**31)
        job = Job(spec, [ids for ids, _ in readings], seed, [marks for _, marks in readings],
                  rows_left=len(readings) * spec.runs)
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
        return len(self.batch) + len(self._reading) + len(self._ready)

    @property
    def steps(self) -> int:
        """Decode steps taken (for tests and stats)."""
        return self.batch.steps

    # -- the worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._admit()
            if not self.active_rows:
                continue
            try:
                self._drop_cancelled()
                if self._reading or self._ready:
                    self._read_one_segment()
                if self.batch:
                    self._decode_step()
            except Exception as exc:  # a backend failure: fail the jobs in flight, keep serving
                self._fail_all(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}"))

    def _admit(self) -> None:
        """Take waiting jobs, in order, while the batch has room for all their rows (so it never holds more
        than max_batch); block briefly when there is nothing to do."""
        idle = not self.active_rows
        while True:
            waiting = self._reading + self._ready
            room = self.max_batch - len(self.batch) - sum(r.job.spec.runs for r in waiting)
            if not idle and (room <= 0 or self._ready):
                return
            if self._next is None:
                try:
                    self._next = self._queue.get(timeout=0.2) if idle else self._queue.get_nowait()
                except queue.Empty:
                    return
            job = self._next
            if job.cancelled.is_set():
                self._next = None
                continue
            if len(job.prompt_ids) * job.spec.runs > room and not idle:
                return  # it waits (and the jobs behind it) until enough rows have finished
            self._next, idle = None, False
            for index, ids in enumerate(job.prompt_ids):
                reading = PromptReading.begin(ids, self.reader, self.cache)
                job.reused_tokens += reading.reused
                self._reading.append(_Reading(job, index, reading, job.marks[index]))

    def _read_one_segment(self) -> None:
        """Read one segment of the first prompt; a prompt read in full starts its rows when it can
        join the batch (the states of window models join only when their windows are as long)."""
        if self._reading:
            reading, prompt = self._reading[0], self._reading[0].prompt
            mark = next((m for m in reading.marks if m > prompt.position), None)
            segment = PREFILL_SEGMENT if mark is None else min(PREFILL_SEGMENT, mark - prompt.position)
            prompt.advance(self.reader, self.cache, segment)
            if prompt.position in reading.marks and not prompt.done:
                self.cache.put(prompt.ids[: prompt.position], prompt.state, prompt.logits)
            if prompt.done:
                self._ready.append(self._reading.pop(0))
        while self._ready and self.batch.can_join(self._ready[0].prompt.start()):
            self._add_rows(self._ready.pop(0))

    def _add_rows(self, reading: _Reading) -> None:
        job, runs = reading.job, reading.job.spec.runs
        rng = np.random.default_rng(job.seed if reading.prompt_index == 0 else [job.seed, reading.prompt_index])
        first = reading.prompt_index * runs
        story = job.spec.prompts[reading.prompt_index]  # what the written text follows: a ban may begin in it
        self.batch.add(reading.prompt.start(), runs, settings=job.spec.settings, rng=rng,
                       max_chars=job.spec.max_chars, stop=job.spec.stop,
                       tags=[(job, reading.prompt.ids, first + run) for run in range(runs)],
                       guards=job.spec.guards, context=story)
        self.max_rows_seen = max(self.max_rows_seen, len(self.batch))

    def _decode_step(self) -> None:
        for row, chunk in self.batch.step():
            job, prompt, index = row.tag
            if chunk:
                job.events.put(("chunk", index, chunk))
            if row.done:
                self._finish(row)

    def _finish(self, row: Row) -> None:
        job, prompt, index = row.tag
        if row.final is not None:  # the state after all but the last token, with the logits it was drawn from
            self.cache.put(prompt + tuple(row.tokens[:-1]), *row.final)
        job.events.put(("finish", index, row.finish_reason, row.rewinds))
        job.results[index] = {"index": index, "text": row.text, "finish_reason": row.finish_reason,
                              "tokens": len(row.tokens), "rewinds": row.rewinds}
        job.rows_left -= 1
        if job.rows_left == 0:
            job.events.put(("done", self._summary(job)))

    def _summary(self, job: Job) -> dict[str, Any]:
        choices = [job.results[i] for i in sorted(job.results)]
        return {"choices": choices, "seed": job.seed, "prompt_tokens": sum(len(ids) for ids in job.prompt_ids),
                "reused_tokens": job.reused_tokens, "completion_tokens": sum(c["tokens"] for c in choices),
                "seconds": round(time.perf_counter() - job.submitted, 4)}

    def _drop_cancelled(self) -> None:
        self._reading = [r for r in self._reading if not r.job.cancelled.is_set()]
        self._ready = [r for r in self._ready if not r.job.cancelled.is_set()]
        self.batch.drop(lambda row: row.tag[0].cancelled.is_set())

    def _fail_all(self, error: ApiError) -> None:
        jobs = {id(r.job): r.job for r in self._reading + self._ready}
        jobs |= {id(row.tag[0]): row.tag[0] for row in self.batch.rows}
        for job in jobs.values():
            job.events.put(("error", error))
        self._reading, self._ready = [], []
        self.batch.clear()


def steered_ids(encode: Callable[[str], list[int]], template: Template, prompt: str,
                block: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The token ids the model reads for `prompt` with the steering `block`, and the positions after the
    story's part and after the block, whose states the prefix cache keeps.

    Without a block: the template's `before`, the prompt and its `after`, encoded as one text (as ever).
    With one: the prompt before the paragraph being continued (story/steering.paragraph_start), the block,
    the paragraph and the template's `after`, each encoded on its own, as the story's SteeredReader reads
    them (the template's `before` goes with the first piece): the ids up to the block's end do not depend on
    the paragraph, so the next request from the same story start finds them in the cache.
    """
    if not block:
        return tuple(encode(template.wrap(prompt))), ()
    cut = paragraph_start(prompt)
    pieces = [piece for piece in (prompt[:cut], block, prompt[cut:], template.after) if piece]
    pieces[0] = template.before + pieces[0]
    ids: list[int] = []
    ends = []
    for piece in pieces:
        ids += encode(piece)
        ends.append(len(ids))
    marks = ends[:2] if cut else ends[:1]  # after the story's part and after the block
    return tuple(ids), tuple(sorted({m for m in marks if 0 < m < len(ids)}))
