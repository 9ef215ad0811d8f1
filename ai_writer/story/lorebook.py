"""A lorebook: entries of keys -> text, active when a key appears in the recent story.

An entry is active when one of its `keys` occurs in the last `scan` characters of the story
(case-insensitive) and, if it has `secondary` keys, one of those occurs too; a `constant` entry
is always active. Active entries join the steering block (story/steering.py) in lorebook order.

Files it reads (`read_lorebook`), told apart by their content:

- ai-writer's own plain text, easy to write by hand, one entry a line (`#` starts a comment line)::

      青锋, 剑: 青锋是林远的剑，三尺长，剑身有一道裂纹。
      *: 故事发生在北宋末年。            <- "*" = always active

  keys before the first ":" (or "："), separated by "," "，" "、" or "|"; the text after it.
- JSON: ai-writer's own `{"entries": [{"keys": [...], "text": "...", "secondary": [...], "constant": false}]}`,
  KoboldAI's world info (`"worldinfo": [{"key": "a, b", "keysecondary": "", "content": "...",
  "constant": false}]`), SillyTavern's world-info export (`"entries": {"0": {"key": [...],
  "keysecondary": [...], "content": "...", "constant": false, "selective": true, "disable": false}}`)
  and the character-card book (`"character_book": {"entries": [{"keys": [...], "secondary_keys": [...],
  "content": "...", "enabled": true}]}`). Disabled entries are skipped; SillyTavern's secondary keys
  count only where `selective` is true.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ai_writer.errors import InputTextError
from ai_writer.files import read_text_file

DEFAULT_SCAN = 3000  # characters of the recent story searched for keys
MAX_ENTRIES = 500
MAX_KEYS = 50  # per entry
MAX_KEY_CHARS = 100
MAX_ENTRY_CHARS = 10_000
ALWAYS = "*"
_KEY_SEPARATORS = re.compile(r"[,，、|]")


@dataclass(frozen=True)
class LoreEntry:
    keys: tuple[str, ...]
    text: str
    secondary: tuple[str, ...] = ()
    constant: bool = False

    def is_active(self, recent_folded: str) -> bool:
        """Whether the entry applies to a story whose recent text, casefolded, is `recent_folded`."""
        if self.constant:
            return True
        if not any(key.casefold() in recent_folded for key in self.keys):
            return False
        return not self.secondary or any(key.casefold() in recent_folded for key in self.secondary)

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"keys": list(self.keys), "text": self.text}
        if self.secondary:
            record["secondary"] = list(self.secondary)
        if self.constant:
            record["constant"] = True
        return record

    def label(self) -> str:
        """How the entry is named to the writer: its keys."""
        return ALWAYS if self.constant else ", ".join(self.keys)


@dataclass(frozen=True)
class Lorebook:
    entries: tuple[LoreEntry, ...] = ()

    def __len__(self) -> int:
        return len(self.entries)

    def active(self, recent: str) -> list[LoreEntry]:
        """The entries that apply to a story ending in `recent`, in lorebook order."""
        folded = recent.casefold()
        return [entry for entry in self.entries if entry.is_active(folded)]

    def add(self, entry: LoreEntry) -> "Lorebook":
        if len(self.entries) >= MAX_ENTRIES:
            raise InputTextError(f"a lorebook holds at most {MAX_ENTRIES} entries")
        return Lorebook(self.entries + (entry,))

    def remove(self, number: int) -> "Lorebook":
        """Without entry `number` (1-based, as listed)."""
        if not 1 <= number <= len(self.entries):
            raise InputTextError(f"there is no lore entry {number}; the lorebook has {len(self.entries)}")
        return Lorebook(self.entries[: number - 1] + self.entries[number:])

    def to_json(self) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in self.entries]

    @classmethod
    def from_json(cls, records: Any, source: str) -> "Lorebook":
        """Entries in any of the JSON shapes the module docstring lists (a list, or an object of entries)."""
        return cls(tuple(_entries(records, source)))


def entry(keys: Iterable[str] | str, text: str, *, secondary: Iterable[str] | str = (), constant: bool = False,
          where: str = "the lore entry") -> LoreEntry:
    """A checked entry: keys and text within their limits, at least one key unless constant."""
    keys, secondary = _keys(keys, where), _keys(secondary, where)
    if ALWAYS in keys:
        keys, constant = tuple(k for k in keys if k != ALWAYS), True
    if not isinstance(text, str) or not text.strip():
        raise InputTextError(f"{where} has no text")
    text = text.strip()
    if len(text) > MAX_ENTRY_CHARS:
        raise InputTextError(f"{where}: its text is {len(text)} characters; at most {MAX_ENTRY_CHARS}")
    if not keys and not constant:
        raise InputTextError(f"{where} has no keys (use * for an entry that is always active)")
    return LoreEntry(keys, text, secondary, bool(constant))


def parse_line(line: str, where: str = "the lore entry") -> LoreEntry:
    """One entry of the plain format: `key, key: text`."""
    match = re.match(r"\s*([^:：]*)[:：](.*)", line)
    if match is None:
        raise InputTextError(f"{where}: write it as 'key, key: text' (no ':' found)")
    return entry(match.group(1), match.group(2), where=where)


def read_lorebook(path: str | Path) -> Lorebook:
    """A lorebook file in the plain format or one of the JSON shapes; a bad file is one InputTextError line."""
    _, text = read_text_file(path, "lorebook file")
    return parse_lorebook(text, str(path))


def parse_lorebook(text: str, source: str) -> Lorebook:
    if text.lstrip().startswith(("{", "[")):
        try:
            records = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InputTextError(f"{source}: not valid JSON ({str(exc)[:80]})") from None
        return Lorebook.from_json(records, source)
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            entries.append(parse_line(line, f"{source}: line {number}"))
    return Lorebook(tuple(_limited(entries, source)))


def _entries(records: Any, source: str) -> list[LoreEntry]:
    if isinstance(records, dict):  # a whole file: find the entries inside it
        for path in (("entries",), ("worldinfo",), ("character_book", "entries"),
                     ("data", "character_book", "entries"), ("lore",)):
            found: Any = records
            for name in path:
                found = found.get(name) if isinstance(found, dict) else None
            if found is not None:
                records = found
                break
        else:
            raise InputTextError(f"{source}: no lorebook entries found (expected 'entries', 'worldinfo' or "
                                 "'character_book')")
    if isinstance(records, dict):  # SillyTavern: {"0": {...}, "1": {...}}
        records = list(records.values())
    if not isinstance(records, list):
        raise InputTextError(f"{source}: the lorebook entries are not a list")
    entries = []
    for number, record in enumerate(records, 1):
        where = f"{source}: entry {number}"
        if not isinstance(record, dict):
            raise InputTextError(f"{where} is not a JSON object")
        if record.get("disable") is True or record.get("enabled") is False or record.get("widisabled") is True:
            continue
        keys = _first(record, "keys", "key")
        secondary = _first(record, "secondary", "secondary_keys", "keysecondary", "secondary keys")
        if record.get("selective") is False:
            secondary = ()
        text = _first(record, "text", "content", "entry")
        entries.append(entry(keys or (), text if text is not None else "", secondary=secondary or (),
                             constant=record.get("constant") is True, where=where))
    return _limited(entries, source)


def _first(record: dict, *names: str) -> Any:
    return next((record[name] for name in names if record.get(name) is not None), None)


def _keys(keys: Any, where: str) -> tuple[str, ...]:
    if isinstance(keys, str):
        keys = _KEY_SEPARATORS.split(keys)
    if not isinstance(keys, (list, tuple)) or not all(isinstance(k, str) for k in keys):
        raise InputTextError(f"{where}: keys must be text")
    keys = tuple(dict.fromkeys(k.strip() for k in keys if k.strip()))
    if len(keys) > MAX_KEYS or any(len(k) > MAX_KEY_CHARS for k in keys):
        raise InputTextError(f"{where}: at most {MAX_KEYS} keys of at most {MAX_KEY_CHARS} characters each")
    return keys


def _limited(entries: list[LoreEntry], source: str) -> list[LoreEntry]:
    if len(entries) > MAX_ENTRIES:
        raise InputTextError(f"{source}: {len(entries)} entries; a lorebook holds at most {MAX_ENTRIES}")
    return entries
