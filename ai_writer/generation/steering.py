"""Reading a steering block into a copy of a kept state, once per (state, block).

The steering block (story/steering.py assembles it: memory, active lore, author's note) is read
between the story before the paragraph being continued and that paragraph. States are values, so
reading the block never changes the snapshot it starts from, and the story's own states never
hold it. `BlockCache` keeps the state after the last few blocks read, keyed by the snapshot (its
identity) and the block's text: a rewrite, alternatives, or another write in the same paragraph
with the block unchanged read only the paragraph again.
"""

from __future__ import annotations

from collections import OrderedDict

from ai_writer.generation.decode import Prefilled
from ai_writer.generation.reading import Reader


class BlockCache:
    def __init__(self, entries: int = 4):
        self.entries = entries
        self._kept: OrderedDict[tuple[int, str], tuple[Prefilled | None, Prefilled | None]] = OrderedDict()
        self.hits = self.misses = 0

    def read(self, reader: Reader, snapshot: Prefilled | None, block: str) -> Prefilled | None:
        """The state after reading `block` from `snapshot` (None: the beginning of the story)."""
        key = (id(snapshot), block)
        kept = self._kept.get(key)
        if kept is not None and kept[0] is snapshot:  # the same object, not a new one at a reused address
            self._kept.move_to_end(key)
            self.hits += 1
            return kept[1]
        self.misses += 1
        after = reader.feed(snapshot, block)
        self._kept[key] = (snapshot, after)
        while len(self._kept) > self.entries:
            self._kept.popitem(last=False)
        return after


def read_steered(reader: Reader, cache: BlockCache, before: Prefilled | None, block: str,
                 paragraph: str) -> Prefilled | None:
    """The state after the story before the paragraph (`before`), the block, and the paragraph read again."""
    state = cache.read(reader, before, block) if block else before
    return reader.feed(state, paragraph) if paragraph else state
