"""Banned phrases and the loop guard: what a continuation must never write, detected as it is written.

The rules (DESIGN.md §11: undone by rewinding the RNN state, so "never written" is a guarantee):

- A **banned phrase** is never written. When the text a row writes completes one (the phrase may
  begin in the text read before the row, its `context`), the row is rewound to the token that
  began the phrase and that token is forbidden there.
- The **loop guard** (on by default) undoes runaway repetition: the text ends with a span of L
  characters (1 <= L <= 64) repeated at least 3 times in a row, the copies covering at least 12
  characters (e.g. "ab" 6 times, "我们是不知道的。" 3 times; not "哈哈哈"). It is undone by
  rewinding to the start of the copy that completed the loop (the last L characters; the
  shortest L when several complete at once) and forbidding the token that began that copy. Only
  the row's own text counts: a repetition in the text read before it does not.
- When one character completes both, the longer span is undone.

This module is the pure part: the validated settings (`Guards`, `read_ban_file`), a multi-phrase
matcher (`PhraseMatcher`, Aho-Corasick, also used for stop strings), and `Watch`, a row's
incremental detector. Each new character costs O(1) amortised for the phrases and O(64) for the
loop rule, whose state is kept as run lengths: run[L] = how many characters at the end of the
text each equal the character L before them. A span of L repeated k times ends the text exactly
when run[L] >= (k - 1) * L. `decode.py` does the rewinding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ai_writer.files import read_text_file
from ai_writer.errors import InputTextError, SettingsError

MAX_PHRASES = 200  # banned phrases at most
MAX_PHRASE_CHARS = 100  # characters in one banned phrase at most
LOOP_MAX_PERIOD = 64  # the longest repeated span the loop guard looks for, in characters
LOOP_MIN_COPIES = 3  # a loop is at least this many copies in a row ...
LOOP_MIN_CHARS = 12  # ... covering at least this many characters

# run[L] at which a loop of period L completes: (copies - 1) * L, with the fewest whole copies allowed
LOOP_RUNS = tuple((max(LOOP_MIN_COPIES, -(-LOOP_MIN_CHARS // period)) - 1) * period if period else 0
                  for period in range(LOOP_MAX_PERIOD + 1))
LOOP_WINDOW = max(LOOP_RUNS) + LOOP_MAX_PERIOD  # characters that determine the loop rule's state


@dataclass(frozen=True)
class Guards:
    """What a row must never write."""

    bans: tuple[str, ...] = ()  # banned phrases, as they are matched (no empty one, no duplicate)
    loop_guard: bool = True  # undo runaway repetition (see the module docstring)

    def __post_init__(self) -> None:
        if isinstance(self.bans, str) or not all(isinstance(b, str) for b in self.bans):
            raise SettingsError("banned phrases must be a list of texts")
        object.__setattr__(self, "bans", tuple(self.bans))
        if len(self.bans) > MAX_PHRASES:
            raise SettingsError(f"too many banned phrases: {len(self.bans)}; at most {MAX_PHRASES}")
        for phrase in self.bans:
            if not phrase:
                raise SettingsError("a banned phrase is empty")
            if len(phrase) > MAX_PHRASE_CHARS:
                raise SettingsError(f"the banned phrase {_cut(phrase)!r} is {len(phrase)} characters long; "
                                    f"at most {MAX_PHRASE_CHARS}")
        if len(set(self.bans)) != len(self.bans):
            raise SettingsError("a banned phrase is given twice")

    @classmethod
    def from_phrases(cls, phrases: Iterable[str], *, loop_guard: bool = True) -> "Guards":
        """Guards from phrases as a person types them: each stripped of surrounding whitespace, empty
        ones dropped, duplicates dropped (the first kept); then validated."""
        seen: dict[str, None] = {}
        for phrase in phrases:
            phrase = phrase.strip()
            if phrase:
                seen.setdefault(phrase)
        return cls(tuple(seen), loop_guard)

    @property
    def active(self) -> bool:
        """Whether rows with these guards need watching (and a history to rewind)."""
        return bool(self.bans) or self.loop_guard

    @property
    def span(self) -> int:
        """The most characters, counted back from the last one written, that one rewind may undo."""
        return max([len(b) for b in self.bans] + [LOOP_MAX_PERIOD if self.loop_guard else 0])


def read_ban_file(path: str | Path) -> list[str]:
    """The phrases of a ban file: UTF-8 text, one phrase per line; blank lines and lines whose first
    non-blank character is `#` are skipped; each phrase is stripped. Errors: InputTextError, one line
    naming the file (and the line)."""
    path = Path(path)
    _, text = read_text_file(path, "ban file")
    phrases = []
    for number, line in enumerate(text.splitlines(), 1):
        phrase = line.strip()
        if not phrase or phrase.startswith("#"):
            continue
        if len(phrase) > MAX_PHRASE_CHARS:
            raise InputTextError(f"{path}: line {number}: the phrase is {len(phrase)} characters long; "
                                 f"at most {MAX_PHRASE_CHARS}")
        phrases.append(phrase)
    return phrases


def _cut(text: str, limit: int = 20) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---- matching many phrases at once ------------------------------------------------------------------


class PhraseMatcher:
    """An Aho-Corasick automaton over some phrases, read one character at a time.

    A node stands for the longest end of the text read that begins a phrase: `depth[node]` is its
    length (how much of the text may still turn into a phrase), `found[node]` the length of the
    longest phrase the text ends with (0: none). Node 0 is the empty text.
    """

    def __init__(self, phrases: tuple[str, ...]) -> None:
        self.phrases = phrases
        self.longest = max((len(p) for p in phrases), default=0)
        self.goto: list[dict[str, int]] = [{}]
        self.depth, self.found, self.fail = [0], [0], [0]
        for phrase in phrases:
            node = 0
            for char in phrase:
                if char not in self.goto[node]:
                    self.goto.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.found.append(0)
                    self.fail.append(0)
                    self.goto[node][char] = len(self.goto) - 1
                node = self.goto[node][char]
            self.found[node] = len(phrase)
        order = list(self.goto[0].values())  # breadth first: a node's fail link is shallower
        for node in order:
            for char, child in self.goto[node].items():
                order.append(child)
                if node:
                    self.fail[child] = self.next(self.fail[node], char)
                if not self.found[child]:
                    self.found[child] = self.found[self.fail[child]]

    def next(self, node: int, char: str) -> int:
        """The node after reading `char` (amortised O(1) over a text)."""
        goto, fail = self.goto, self.fail
        while node and char not in goto[node]:
            node = fail[node]
        return goto[node].get(char, 0)

    def read(self, text: str, node: int = 0) -> int:
        """The node after reading `text` from `node`, whatever it completes on the way."""
        for char in text:
            node = self.next(node, char)
        return node

    def node_after(self, text: str) -> int:
        """The node after a whole text: only its last `longest` characters matter."""
        return self.read(text[max(0, len(text) - self.longest) :] if self.longest else "")


@functools.lru_cache(maxsize=64)
def phrase_matcher(phrases: tuple[str, ...]) -> PhraseMatcher:
    """The matcher of these phrases, built once."""
    return PhraseMatcher(phrases)


# ---- a row's detector -------------------------------------------------------------------------------


class Watch:
    """The guards' view of one row's text, read one character at a time.

    `push(char)` returns how many characters, counted back from `char` (inclusive), must be
    undone — the banned phrase or the loop's last copy that `char` completes — or 0. `held()`
    says how many characters at the end a later character might still undo.
    """

    def __init__(self, guards: Guards, context: str = "") -> None:
        self.guards = guards
        self.matcher = phrase_matcher(guards.bans) if guards.bans else None
        self.node = self.matcher.node_after(context) if self.matcher else 0
        self.runs = [0] * (LOOP_MAX_PERIOD + 1)  # runs[L], L = 1..64 (runs[0] unused)
        self.recent = ""  # the row's last LOOP_MAX_PERIOD characters
        self.undo_kind = ""  # "ban" or "loop": what the last nonzero push undoes

    @classmethod
    def after(cls, guards: Guards, context: str, text: str) -> "Watch":
        """The watch of a row whose text is `text` (after a rewind), rebuilt from the end of it."""
        watch = cls(guards, (context + text) if guards.bans else "")
        if guards.loop_guard:
            for char in text[max(0, len(text) - LOOP_WINDOW) :]:
                watch._push_loop(char)
        return watch

    def push(self, char: str) -> int:
        banned = 0
        if self.matcher is not None:
            self.node = self.matcher.next(self.node, char)
            banned = self.matcher.found[self.node]
        period = self._push_loop(char) if self.guards.loop_guard else 0
        if banned >= period:
            self.undo_kind = "ban" if banned else ""
            return banned
        self.undo_kind = "loop"
        return period

    def _push_loop(self, char: str) -> int:
        """Update the run lengths; the shortest period whose loop `char` completes, or 0."""
        runs, recent, completed = self.runs, self.recent, 0
        n = len(recent)
        for period in range(1, LOOP_MAX_PERIOD + 1):
            if period <= n and recent[n - period] == char:
                runs[period] += 1
                if not completed and runs[period] >= LOOP_RUNS[period]:
                    completed = period
            else:
                runs[period] = 0
        self.recent = (recent + char)[-LOOP_MAX_PERIOD:]
        return completed

    def held(self) -> int:
        """Characters at the end of the text that a later character may still undo: the longest end that
        begins a banned phrase, and for each period L the part of a loop's last copy already written
        (run[L] - (its loop's run - L), when positive)."""
        held = self.matcher.depth[self.node] if self.matcher is not None else 0
        if self.guards.loop_guard:
            runs = self.runs
            for period in range(1, LOOP_MAX_PERIOD + 1):
                if runs[period]:
                    held = max(held, runs[period] - LOOP_RUNS[period] + period)
        return held

