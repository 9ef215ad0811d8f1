"""The one decode loop: a batch of continuations ("rows") advanced together, one token per row a step.

`continue`, the REPL (through `Generator.stream`) and the server's inference worker all write
through `DecodeBatch`, so how rows are sampled, stopped, rewound and shown is decided here only:

- every step samples one token for each row from the batch's logits (`sample_rows`: each row
  with its own settings, random generator and repetition penalties), then feeds all the new
  tokens to the backend in one `forward`;
- each row decodes its tokens through its tokenizer's stream decoder, so the text never holds a
  broken character, and is settled (`settle_row`): it ends at its length in characters or just
  before a stop string, and only text that cannot begin a stop string is shown;
- a row never ends before its first character: if its first token begins one of its stop
  strings, every token that does so is forbidden there and the token is drawn again;
- rows that end leave the batch (`select`), new rows join it between steps (`concat`), and a
  caller may drop rows (a client that went away).

Guards (`guards.py`: banned phrases and the loop guard) are kept by rewinding. A guarded row
keeps checkpoints, each the one-row state, the logits and the penalty counts before one of its
tokens: one every `every` tokens over its last `depth` tokens, where `depth` covers the longest
span a rewind may undo (4 tokens a character for byte-level tokenizers, 1 for character ones,
plus 8) and `every` keeps them within HISTORY_BYTES (about 64 MiB a row, less when many rows
are added at once). When the text completes a banned phrase or a loop, the row goes back to the
last token boundary at or before the first character to undo (never inside a character): its
tokens, text, decoder, penalty counts, stop-string and guard matchers become those of that point
(the state from the checkpoint before it, the tokens in between fed again in one `forward`), the
token that began the undone text is forbidden at that point (its logit is -inf when drawing
there; what was forbidden further on is forgotten), and the row moves to the end of the batch.
Text that a rewind may still undo is never shown: `settle_row` also holds back everything from
the token boundary at or before the earliest character a later character could undo. A row that
needs more than MAX_STUCK_REWINDS rewinds without ever getting further into its text ends there
(finish_reason "length"), as does a row left with no token it may draw. Rows without guards keep
no history and write exactly what they wrote before guards existed.

A row remembers the tokens it drew; with `keep_final_states` a finished row also keeps the
one-row state and logits before its last token, for a prefix cache.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from ai_writer.generation.guards import Guards, MAX_PHRASE_CHARS, Watch, phrase_matcher
from ai_writer.generation.sampler import PenaltyTracker, SamplerSettings, sample_rows

HISTORY_BYTES = 64 * 2**20  # a guarded row's checkpoints stay under about this many bytes ...
HISTORY_BATCH_BYTES = 512 * 2**20  # ... and under this divided by the rows added with it
MAX_STUCK_REWINDS = 200  # a row ends when it needs more rewinds than this without getting further


@dataclass
class Row:
    """One continuation being written."""

    tag: Hashable  # the caller's name for it: a run number, or (job, choice index)
    settings: SamplerSettings
    rng: np.random.Generator  # rows may share one: draws then follow batch order
    max_chars: int
    stop: tuple[str, ...]
    decoder: Any  # the tokenizer's stream decoder: bytes of an unfinished character wait in it
    penalties: PenaltyTracker | None
    last_token: int
    tokens: list[int] = field(default_factory=list)  # the tokens drawn so far
    text: str = ""  # everything produced so far (cut at a stop string or the length once done)
    sent: int = 0  # characters of `text` already shown
    done: bool = False
    finish_reason: str = "length"  # "length" or "stop"
    final: tuple[Any, np.ndarray] | None = None  # (state, logits) before the last token, if kept
    stop_node: int = 0  # the stop strings' matcher after text[:scanned] (guards.PhraseMatcher)
    scanned: int = 0  # characters of `text` already read by the stop strings and guards
    forbidden: dict[int, frozenset[int]] = field(default_factory=dict)  # token index -> ids not drawn there
    rewinds: int = 0  # rewinds so far, for banned phrases and loops
    loop_rewinds: int = 0  # of them, for a loop
    guard: "_Guard | None" = None  # what a row with guards needs to rewind
    undo: tuple[int, str] | None = None  # set by settle_row: (first character to undo, "ban" or "loop")


@dataclass(frozen=True)
class Prefilled:
    """A text read into the model: the one-row state after it and the logits of what comes next."""

    state: Any  # one-row backend state
    logits: np.ndarray  # (V,)
    last_token: int
    n_tokens: int
    text_tail: str = ""  # the last characters of the text read: a banned phrase may begin in them


class _History:
    """Checkpoints of one row: (token index i, one-row state, logits, penalty counts) before token i,
    for i a multiple of `every`, kept while they may be needed for the row's last `depth` tokens."""

    def __init__(self, every: int, depth: int) -> None:
        self.every, self.depth = every, depth
        self.points: deque[tuple[int, Any, np.ndarray, np.ndarray | None]] = deque()

    def wants(self, index: int) -> bool:
        return index % self.every == 0 and not (self.points and self.points[-1][0] == index)

    def keep(self, index: int, state: Any, logits: np.ndarray, counts: np.ndarray | None) -> None:
        self.points.append((index, state, logits, counts))
        while len(self.points) > 1 and self.points[1][0] <= index - self.depth:
            self.points.popleft()

    def back_to(self, index: int) -> tuple[int, Any, np.ndarray, np.ndarray | None] | None:
        """Forget the checkpoints after token `index`; the last one at or before it (None: none kept)."""
        while self.points and self.points[-1][0] > index:
            self.points.pop()
        return self.points[-1] if self.points else None


@dataclass
class _Guard:
    """A guarded row's detector and the bookkeeping its rewinds need."""

    guards: Guards
    context: str  # the end of the text read before the row
    watch: Watch
    history: _History
    first_token: int  # the token before the row's first one
    starts: list[int] = field(default_factory=list)  # starts[i]: characters of text before token i
    clean: list[bool] = field(default_factory=list)  # clean[i]: no character is unfinished before token i
    floors: list[int] = field(default_factory=list)  # floors[i]: `floor` when the row was before token i
    floor: int = 0  # the first character that anything from here on (rewinds included) may undo
    tail: bytes = b""  # the last bytes of the tokens (byte-level tokenizers): is a character unfinished?
    furthest: int = 0  # the most characters of text ever read
    stuck: int = 0  # rewinds since `furthest` last grew

    def boundary(self, char: int, n_tokens: int, n_chars: int) -> int:
        """The index of the last token boundary at or before character `char` where no character is
        unfinished (n_tokens: the end of the row)."""
        if char >= n_chars and not _unfinished(self.tail):
            return n_tokens
        index = bisect.bisect_right(self.starts, char) - 1
        while index > 0 and not self.clean[index]:
            index -= 1
        return max(index, 0)

    def start_of(self, index: int, n_chars: int) -> int:
        return self.starts[index] if index < len(self.starts) else n_chars


@dataclass
class _Group:
    """Rows whose states form one batch. There is one group, but for a window model (original
    AI-Writer) a rewound row's state may not join the others' until their windows are equally long."""

    rows: list[Row]
    state: Any
    logits: np.ndarray  # (R, V)


class DecodeBatch:
    def __init__(self, backend: Any, tokenizer: Any, *, keep_final_states: bool = False):
        self.backend, self.tokenizer = backend, tokenizer
        self.keep_final_states = keep_final_states
        self.groups: list[_Group] = []
        self.steps = 0  # decode steps taken
        self._token_bytes = getattr(tokenizer, "token_bytes", None)  # byte-level tokenizers: characters may split

    @property
    def rows(self) -> list[Row]:
        return [row for group in self.groups for row in group.rows]

    def __len__(self) -> int:
        return sum(len(group.rows) for group in self.groups)

    def can_join(self, start: Prefilled) -> bool:
        """New rows can join between steps when the backend's states can be put together."""
        return not self.groups or self.groups[0].state.joinable(start.state)

    def add(self, start: Prefilled, count: int, *, settings: SamplerSettings, rng: np.random.Generator,
            max_chars: int, stop: Sequence[str] = (), tags: Sequence[Hashable] | None = None,
            guards: Guards = Guards(), context: str = "") -> list[Row]:
        """`count` new rows from `start`, sharing `rng`; they are written from the next step on. `guards`:
        what they must never write; `context`: the end of the text read before them (a banned phrase
        may begin there)."""
        stop = tuple(s for s in stop if s)
        penalize = settings.presence_penalty > 0 or settings.frequency_penalty > 0
        tags = list(range(count)) if tags is None else list(tags)
        rows = [Row(tag, settings, rng, max_chars, stop, self.tokenizer.stream_decoder(),
                    PenaltyTracker(self.tokenizer.vocab_size, settings) if penalize else None, start.last_token)
                for tag in tags]
        if guards.active:
            every, depth = self._history_shape(start, guards, penalize, len(self) + count)
            context = context[max(0, len(context) - MAX_PHRASE_CHARS) :] if guards.bans else ""
            for row in rows:
                history = _History(every, depth)
                history.keep(0, start.state, start.logits, row.penalties.counts.copy() if penalize else None)
                watch = Watch(guards, context)
                row.guard = _Guard(guards, context, watch, history, start.last_token, floor=-watch.held())
        state = start.state.repeat(count) if count > 1 else start.state
        logits = np.repeat(start.logits[None, :], count, axis=0)
        if not self.groups:
            self.groups.append(_Group(rows, state, logits))
        else:
            group = self.groups[0]
            group.state, group.logits = group.state.concat(state), np.concatenate([group.logits, logits])
            group.rows.extend(rows)
        return rows

    def _history_shape(self, start: Prefilled, guards: Guards, penalize: bool, rows: int) -> tuple[int, int]:
        """(every, depth) of a guarded row's checkpoints (see the module docstring)."""
        per_char = 1 if self._token_bytes is None else 4  # a character is at most 4 byte tokens
        depth = per_char * guards.span + 8
        size = _nbytes(start.state) + start.logits.nbytes + (4 * self.tokenizer.vocab_size if penalize else 0)
        budget = min(HISTORY_BYTES, HISTORY_BATCH_BYTES // max(rows, 1))
        slots = max(2, budget // max(size, 1))
        return max(1, math.ceil(depth / (slots - 1))), depth

    def step(self) -> list[tuple[Row, str]]:
        """Draw one token for every row; return (row, newly shown text) for each row in batch order
        (the text may be empty). Rows that ended (row.done) have left the batch afterwards."""
        if not self.groups:
            return []
        rows = self.rows
        logits = self.groups[0].logits if len(self.groups) == 1 else np.concatenate([g.logits for g in self.groups])
        tokens = iter(self._draw(rows, logits))
        shown, groups, rewound = [], [], []
        for group in self.groups:
            keep, fed = [], []
            for position, row in enumerate(group.rows):
                token = next(tokens)
                if token is None:  # every token it may draw is forbidden
                    row.done, row.finish_reason = True, "length"
                    shown.append((row, settle_row(row)))
                    continue
                guard = row.guard
                if guard is not None and guard.history.wants(len(row.tokens)):
                    counts = row.penalties.counts.copy() if row.penalties is not None else None
                    guard.history.keep(len(row.tokens), group.state.select([position]), group.logits[position].copy(),
                                       counts)
                self._append(row, token)
                chunk = settle_row(row)
                if row.undo is not None:
                    back = self._rewind(row)
                    if back is None:
                        chunk = settle_row(row)  # it ended: everything left is shown
                    else:
                        rewound.append((row, *back))
                        shown.append((row, chunk))
                        continue
                elif row.done and self.keep_final_states and len(row.tokens) > 1:
                    row.final = (group.state.select([position]), group.logits[position])
                shown.append((row, chunk))
                if not row.done:
                    keep.append(position)
                    fed.append([token])
            if keep:
                state = group.state if len(keep) == len(group.rows) else group.state.select(keep)
                new_logits, state = self.backend.forward(fed, state)
                groups.append(_Group([group.rows[p] for p in keep], state, new_logits))
        for row, state, row_logits in rewound:
            _join(groups, _Group([row], state, row_logits[None, :]))
        self.groups = _merged(groups)
        self.steps += 1
        return shown

    def _draw(self, rows: list[Row], logits: np.ndarray) -> list[int | None]:
        """One token per row (None: it may draw none), tokens forbidden at a row's position masked."""
        z, masked = logits, []
        for r, row in enumerate(rows):
            ids = row.forbidden.get(len(row.tokens))
            if ids:
                if z is logits:
                    z = logits.copy()
                z[r, list(ids)] = -np.inf
                masked.append(r)
        drawing = [r for r in range(len(rows)) if r not in masked or self._any_left(z[r])]
        drawn = self._sample([rows[r] for r in drawing], z[drawing] if len(drawing) < len(rows) else z)
        tokens: list[int | None] = [None] * len(rows)
        for r, token in zip(drawing, drawn):
            row = rows[r]
            if row.stop and not row.tokens:  # a row never ends before its first character
                first = _stop_starts(self.tokenizer, row.stop)
                if token in first:
                    ids = row.forbidden[0] = row.forbidden.get(0, frozenset()) | first
                    again = logits[r].copy()
                    again[list(ids)] = -np.inf
                    if self._any_left(again):
                        token = self._sample([row], again[None, :])[0]
            tokens[r] = token
        return tokens

    def _sample(self, rows: list[Row], logits: np.ndarray) -> list[int]:
        if not rows:
            return []
        line_ends = self.tokenizer.line_end_ids
        return sample_rows(logits, after_newline=[row.last_token in line_ends for row in rows],
                           settings=[row.settings for row in rows], rngs=[row.rng for row in rows],
                           banned_ids=list(self.tokenizer.banned_ids), penalties=[row.penalties for row in rows])

    def _any_left(self, logits: np.ndarray) -> bool:
        """Whether a row's masked logits leave a token to draw."""
        allowed = np.isfinite(logits) | (logits == np.inf)
        allowed[list(self.tokenizer.banned_ids)] = False
        return bool(allowed.any())

    def _append(self, row: Row, token: int) -> None:
        if row.penalties is not None:
            row.penalties.update(token)
        guard = row.guard
        if guard is not None:
            guard.starts.append(len(row.text))
            guard.clean.append(not _unfinished(guard.tail))
            guard.floors.append(guard.floor)
            if self._token_bytes is not None:
                guard.tail = (guard.tail + self._token_bytes(token))[-3:]
        row.tokens.append(token)
        row.last_token = token
        # A row ends at a length or before a stop string, both before any bytes still waiting in
        # the decoder, so those are never shown and need no flush.
        row.text += row.decoder.decode(token)

    def _rewind(self, row: Row) -> tuple[Any, np.ndarray] | None:
        """Undo what row.undo asks for (see the module docstring); the row's new one-row state and
        logits, or None when it ended instead."""
        guard = row.guard
        char, kind = row.undo
        row.undo = None
        if row.scanned > guard.furthest:
            guard.furthest, guard.stuck = row.scanned, 0
        else:
            guard.stuck += 1
        index = guard.boundary(char, len(row.tokens), len(row.text))
        point = guard.history.back_to(index) if guard.stuck <= MAX_STUCK_REWINDS else None
        undone = row.tokens[index]
        self._truncate(row, index)
        if point is None:  # no rewind left (or, never expected, no checkpoint): the row ends here
            row.done, row.finish_reason = True, "length"
            return None
        at, state, logits, counts = point
        if at < index:  # feed the tokens since the checkpoint again
            out, state = self.backend.forward([row.tokens[at:index]], state)
            logits = out[0]
        if row.penalties is not None:
            row.penalties.counts = counts.copy()
            for token in row.tokens[at:index]:
                row.penalties.update(token)
        row.forbidden[index] = row.forbidden.get(index, frozenset()) | {undone}
        row.rewinds += 1
        row.loop_rewinds += kind == "loop"
        return state, logits

    def _truncate(self, row: Row, index: int) -> None:
        """Make the row what it was before token `index` (a boundary where no character is unfinished)."""
        guard = row.guard
        chars = guard.start_of(index, len(row.text))
        guard.floor = guard.floors[index]
        del row.tokens[index:], guard.starts[index:], guard.clean[index:], guard.floors[index:]
        row.text, row.scanned, row.final = row.text[:chars], chars, None
        row.decoder, guard.tail = self.tokenizer.stream_decoder(), b""  # nothing was unfinished there
        row.last_token = row.tokens[-1] if row.tokens else guard.first_token
        row.stop_node = phrase_matcher(row.stop).node_after(row.text) if row.stop else 0
        guard.watch = Watch.after(guard.guards, guard.context, row.text)
        row.forbidden = {i: ids for i, ids in row.forbidden.items() if i <= index}

    def drop(self, unwanted: Callable[[Row], bool]) -> None:
        """Remove the rows `unwanted` says so of (their continuations are abandoned)."""
        groups = []
        for group in self.groups:
            keep = [p for p, row in enumerate(group.rows) if not unwanted(row)]
            if len(keep) == len(group.rows):
                groups.append(group)
            elif keep:
                groups.append(_Group([group.rows[p] for p in keep], group.state.select(keep), group.logits[keep]))
        self.groups = groups

    def clear(self) -> None:
        self.groups = []


def _join(groups: list[_Group], new: _Group) -> None:
    """Put `new`'s rows at the end of the first group they can join, else in a group of their own."""
    for group in groups:
        if group.state.joinable(new.state):
            group.state, group.logits = group.state.concat(new.state), np.concatenate([group.logits, new.logits])
            group.rows.extend(new.rows)
            return
    groups.append(new)


def _merged(groups: list[_Group]) -> list[_Group]:
    if len(groups) < 2:
        return groups
    merged: list[_Group] = []
    for group in groups:
        _join(merged, group)
    return merged


def settle_row(row: Row) -> str:
    """Settle a row after new text arrived: end it on a stop string or at its length, and return the
    text that is now safe to show (none of it may begin a stop string, nor be undone by a guard).

    The text is read as if it came one character at a time: the row ends at the first character
    (within its length) that completes a stop string, cut just before that stop string (the one
    that starts first, when several end there). A guarded row whose character completes a banned
    phrase or a loop instead gets `row.undo` set and shows nothing: the batch rewinds it. Stop
    strings are matched incrementally (Aho-Corasick), so each new character costs O(1) amortised.
    """
    _scan(row)
    if row.undo is not None:
        return ""
    if not row.done and len(row.text) >= row.max_chars:
        row.text, row.done = row.text[: row.max_chars], True
    if row.done:
        safe = len(row.text)
    else:  # held back: the longest end of the text that begins a stop string, and what a guard may undo
        held = phrase_matcher(row.stop).depth[row.stop_node] if row.stop else 0
        guard = row.guard
        if guard is None:
            safe = len(row.text) - held
        else:
            safe = _guarded_safe(row, guard, held)
    chunk = row.text[row.sent : safe]
    row.sent = max(row.sent, safe)
    return chunk


def _guarded_safe(row: Row, guard: _Guard, stop_held: int) -> int:
    """How much of a guarded row's text is final. A later character may undo text from
    n - held on (n: the characters so far; held: what may still begin a stop string, a banned
    phrase or a loop's last copy); the rewind that follows goes back to a token boundary at or
    after the one before that character, and what is written from there may undo as far as was
    possible when the row was there (`floors`). The smallest of these is the row's `floor`; the
    text before the token boundary at or before it is final."""
    n, n_tokens = len(row.text), len(row.tokens)
    reach = n - max(stop_held, guard.watch.held())
    back = guard.boundary(reach, n_tokens, n)
    guard.floor = min(reach, min(guard.floors[back:], default=reach))
    return guard.start_of(guard.boundary(guard.floor, n_tokens, n), n)


def _scan(row: Row) -> None:
    """Read the characters not yet read (up to the row's length) with the stop strings' matcher and the
    guards: end the row on the first stop string completed, or mark what a guard wants undone."""
    end = min(len(row.text), row.max_chars)
    stops = phrase_matcher(row.stop) if row.stop else None
    watch = row.guard.watch if row.guard is not None else None
    if stops is None and watch is None:
        row.scanned = max(row.scanned, end)
        return
    node = row.stop_node
    for position in range(row.scanned, end):
        char = row.text[position]
        if stops is not None:
            node = stops.next(node, char)
            if stops.found[node]:
                cut = position + 1 - stops.found[node]
                row.text, row.done, row.finish_reason = row.text[:cut], True, "stop"
                row.stop_node, row.scanned = node, cut
                return
        if watch is not None:
            undo = watch.push(char)
            if undo:
                row.undo = (position + 1 - undo, watch.undo_kind)
                row.stop_node, row.scanned = node, position + 1
                return
    row.stop_node, row.scanned = node, max(row.scanned, end)


def _unfinished(tail: bytes) -> bool:
    """Whether UTF-8 bytes ending with `tail` (their last 3 or more) end inside a character."""
    for back in range(1, min(3, len(tail)) + 1):
        byte = tail[-back]
        if byte & 0xC0 != 0x80:  # where the last character began
            need = 2 if 0xC0 <= byte < 0xE0 else 3 if 0xE0 <= byte < 0xF0 else 4 if 0xF0 <= byte < 0xF8 else 1
            return need > back
    return False


@functools.lru_cache(maxsize=32)
def _stop_starts(tokenizer: Any, stops: tuple[str, ...]) -> frozenset[int]:
    """The ids whose text begins with one of `stops` (never a row's first token), found once."""
    banned = set(tokenizer.banned_ids)
    token_bytes = getattr(tokenizer, "token_bytes", None)
    if token_bytes is not None:  # byte-level: compare bytes, since a token may hold part of a character
        prefixes = tuple(s.encode("utf-8", "surrogatepass") for s in stops)
        return frozenset(i for i in range(tokenizer.vocab_size)
                         if i not in banned and token_bytes(i).startswith(prefixes))
    return frozenset(i for i in range(tokenizer.vocab_size)
                     if i not in banned and tokenizer.decode([i]).startswith(stops))


def _nbytes(value: Any, depth: int = 0) -> int:
    """The bytes of the arrays (numpy or torch) a backend state holds."""
    if value is None or depth > 4:
        return 0
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v, depth + 1) for v in value)
    if dataclasses.is_dataclass(value):
        return sum(_nbytes(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    if hasattr(value, "__dict__"):
        return sum(_nbytes(v, depth + 1) for v in vars(value).values())
    return 0
