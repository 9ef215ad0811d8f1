"""The steering block: memory, author's note and lorebook, and where the model reads them.

The block is, in this order, each part a paragraph of its own (a line ending in "\\n"):

1. the memory (pinned text: premise, characters, setting), as the writer wrote it;
2. the text of every active lore entry (story/lorebook.py), in lorebook order;
3. the author's note (a short direction), closest to where the model writes.

With a local model it is read after the story up to the start of the paragraph being continued
(the state there is a snapshot the document keeps), then that paragraph is read again, then the
model writes (`SteeredReader`): the cost of a write is the block plus the paragraph, whatever the
length of the story, and an unchanged block from the same snapshot is not read again
(generation/steering.BlockCache). The block never enters the story's text or its states.

Over a remote engine, which keeps no state, the same parts become one prompt (`remote_prompt`):
memory, active lore, the last `tail` characters of the story before its last paragraph, the note,
then the last paragraph — as transformer story tools assemble theirs. An ai-writer server is sent
the parts as its own fields instead, and reads them into a state as a local model does
(`remote_request`, for `continue --remote` and the REPL's RemoteWriter).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ai_writer.errors import InputTextError
from ai_writer.generation.decode import Prefilled
from ai_writer.generation.reading import Reader
from ai_writer.generation.steering import BlockCache, read_steered
from ai_writer.story.lorebook import DEFAULT_SCAN, Lorebook, LoreEntry
from ai_writer.text.templates import SHIPPED, Template

if TYPE_CHECKING:
    from ai_writer.generation.remote import RemoteEngine

MAX_MEMORY_CHARS = 20_000
MAX_NOTE_CHARS = 2_000
MAX_SCAN = 1_000_000
DEFAULT_TAIL = 4_000  # characters of the story in a remote prompt


@dataclass(frozen=True)
class Steering:
    memory: str = ""
    note: str = ""
    lorebook: Lorebook = field(default_factory=Lorebook)
    scan: int = DEFAULT_SCAN  # characters of the recent story searched for lore keys

    def __post_init__(self) -> None:
        for name, limit in (("memory", MAX_MEMORY_CHARS), ("note", MAX_NOTE_CHARS)):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InputTextError(f"the {name} must be text")
            if len(value) > limit:
                raise InputTextError(f"the {name} is {len(value)} characters; at most {limit}")
        if not (isinstance(self.scan, int) and not isinstance(self.scan, bool) and 1 <= self.scan <= MAX_SCAN):
            raise InputTextError(f"the lore scan length must be a whole number from 1 to {MAX_SCAN}, "
                                 f"got {self.scan!r}")

    @property
    def is_empty(self) -> bool:
        return not (self.memory.strip() or self.note.strip() or len(self.lorebook))

    def active(self, story: str) -> list[LoreEntry]:
        """The lore entries the end of `story` triggers."""
        return self.lorebook.active(story[-self.scan:])

    def block(self, story: str) -> str:
        """The block for a story ending in `story` (empty when there is nothing to say)."""
        parts = [self.memory, *(e.text for e in self.active(story)), self.note]
        return "".join(part.strip() + "\n" for part in parts if part.strip())

    def remote_prompt(self, story: str, tail: int = DEFAULT_TAIL) -> str:
        """The prompt for an engine without states: memory, lore, the story's tail, the note, its last paragraph."""
        cut = paragraph_start(story)
        before, paragraph = story[:cut], story[cut:]
        head = [self.memory, *(e.text for e in self.active(story))]
        prompt = "".join(part.strip() + "\n" for part in head if part.strip())
        prompt += before[-tail:] if tail else ""
        if self.note.strip():
            prompt += ("" if not prompt or prompt.endswith("\n") else "\n") + self.note.strip() + "\n"
        return prompt + paragraph

    def with_(self, **changes: Any) -> "Steering":
        return replace(self, **changes)

    # ----- the session's own part -----
    def to_json(self) -> dict[str, Any]:
        return {"memory": self.memory, "note": self.note, "lore": self.lorebook.to_json(), "scan": self.scan}

    @classmethod
    def from_json(cls, record: Any, source: str) -> "Steering":
        if record is None:
            return cls()
        if not isinstance(record, dict):
            raise InputTextError(f"{source}: the steering part is not a JSON object")
        return cls(memory=record.get("memory", ""), note=record.get("note", ""),
                   lorebook=Lorebook.from_json(record.get("lore") or [], source),
                   scan=record.get("scan", DEFAULT_SCAN))


def remote_request(engine: "RemoteEngine", story: str, steering: Steering | None = None,
                   template: Template = SHIPPED["plain"], tail: int = DEFAULT_TAIL) -> tuple[str, dict[str, Any]]:
    """(prompt, fields only an ai-writer server gets) for writing on after `story` with `steering` through
    `engine` (generation/remote.RemoteEngine; asking whether it is an ai-writer server may ask the server)."""
    if steering is not None and not steering.is_empty:
        if engine.is_ai_writer and template.is_plain:  # read into a state there, as a local model reads it
            return story, {"memory": steering.memory, "note": steering.note, "lore": steering.lorebook.to_json(),
                           "lore_scan": steering.scan}
        story = steering.remote_prompt(story, tail)
    return template.wrap(story), {}


def paragraph_start(story: str) -> int:
    """Where the paragraph being continued begins: after the story's last line break."""
    return story.rfind("\n") + 1


class SteeredReader:
    """Where the model writes after a document's text, with a steering block read in between."""

    def __init__(self, reader: Reader, cache: BlockCache | None = None):
        self.reader, self.cache = reader, cache or BlockCache()

    def start(self, document: Any, steering: Steering, end: int | None = None) -> Prefilled | None:
        """The state to write from after `document.text[:end]` (all of it by default); None if that is empty.

        Without a block, the story's own state (read as the document reads it); with one, the block read into
        the snapshot at the paragraph's start, then the paragraph, then the template's `after`."""
        text = document.text if end is None else document.text[:end]
        if not text:
            return None
        block = steering.block(text)
        if not block:
            story_end = document.state_at(len(text), self.reader)
            return self.reader.writing_start(story_end)
        cut = paragraph_start(text)
        before = document.state_at(cut, self.reader) if cut else None
        state = read_steered(self.reader, self.cache, before, block, text[cut:])
        return self.reader.writing_start(state)
