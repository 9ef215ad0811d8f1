"""Prompt templates: what the model reads around the story, for instruction-tuned world models.

A template wraps the story the model reads, never the text the writer sees or saves:
`before` is read ahead of the story, `after` between the story and what the model writes.
The RWKV-5 12B "one-state" card asks writers to continue a text through

    User: make this content longer:
    <the story>

    Assistant: ok, longer content is

which ships as `longer`; `plain` (the default) is the story as it is. A template file is UTF-8
text holding the marker `{story}` once, where the story goes; everything before and after it
is read around the story (a trailing newline at the end of the file is not part of it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ai_writer.errors import SettingsError

MARKER = "{story}"


@dataclass(frozen=True)
class Template:
    name: str
    before: str = ""
    after: str = ""

    def wrap(self, story: str) -> str:
        return self.before + story + self.after

    @property
    def is_plain(self) -> bool:
        return not self.before and not self.after


SHIPPED = {
    "plain": Template("plain"),
    "longer": Template("longer", "User: make this content longer:\n", "\n\nAssistant: ok, longer content is"),
}


def template_named(name_or_path: str | os.PathLike | None) -> Template:
    """A shipped template by name, or one defined by a file; a one-line SettingsError for anything else."""
    if name_or_path is None:
        return SHIPPED["plain"]
    if str(name_or_path) in SHIPPED:
        return SHIPPED[str(name_or_path)]
    path = Path(name_or_path)
    if not path.is_file():
        raise SettingsError(f"unknown template {str(name_or_path)!r}: use {', '.join(SHIPPED)} or a template file "
                            f"holding {MARKER} where the story goes")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: cannot read the template as UTF-8 text ({exc})") from None
    text = text[:-1] if text.endswith("\n") else text
    if text.count(MARKER) != 1:
        raise SettingsError(f"{path}: a template holds {MARKER} exactly once (where the story goes), "
                            f"this one {text.count(MARKER)} times")
    before, after = text.split(MARKER)
    return Template(path.name, before, after)
