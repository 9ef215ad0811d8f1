"""The REPL's files besides the session: the story's plain text, and which text files are the story's own.

A story has a plain-text file that /save writes beside the session: the FILE the REPL was opened
on when that is a text file, else the session's name with .txt (`story_text_path`:
story.txt.session.json -> story.txt, notes.json -> notes.txt). A file is overwritten without a
question only when this session read or wrote it and nobody changed it since (`TextFiles`); a
new file is created; any other is overwritten only when the writer says so, as the REPL asks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ai_writer.errors import InputTextError
from ai_writer.files import read_text_file
from ai_writer.story.chapters import clean_manuscript

SESSION_SUFFIX = ".session.json"


def story_text_path(session_path: Path) -> Path:
    """The plain-text file of the story saved in `session_path`."""
    name = session_path.name
    if name.endswith(SESSION_SUFFIX) and len(name) > len(SESSION_SUFFIX):
        base = name[: -len(SESSION_SUFFIX)]
        return session_path.with_name(base if base.lower().endswith(".txt") else base + ".txt")
    if session_path.suffix and session_path.suffix.lower() != ".txt":
        return session_path.with_suffix(".txt")
    return session_path.with_name(name + ".txt")


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def file_digest(path: Path) -> str | None:
    """The digest of a file's bytes; None when there is no file; "" when it cannot be read."""
    try:
        return digest(path.read_bytes())
    except FileNotFoundError:
        return None
    except OSError:
        return ""


class TextFiles:
    """The text files this session read or wrote, with the digest of their bytes then."""

    def __init__(self) -> None:
        self._known: dict[Path, str] = {}

    @staticmethod
    def _key(path: Path) -> Path:
        return path.expanduser().resolve()

    def remember(self, path: Path, data: bytes) -> None:
        self._known[self._key(path)] = digest(data)

    def is_own(self, path: Path) -> bool:
        """Whether `path` may be written without asking: there is no file, or it is as this session left it."""
        current = file_digest(path)
        return current is None or (bool(current) and self._known.get(self._key(path)) == current)

    def is_current(self, path: Path, text: str) -> bool:
        """Whether the file holds `text` as this session wrote it (nothing to save there)."""
        return self._known.get(self._key(path)) == digest(text.encode("utf-8")) == file_digest(path)


def read_story_file(path: Path) -> tuple[bytes, str]:
    """(the file's bytes, the story they hold: tidied as a manuscript, story/chapters.clean_manuscript); the story
    is "" for a file of blanks. A file that cannot be read as UTF-8 text is one InputTextError line."""
    data, text = read_text_file(path)
    return data, (clean_manuscript(text) if text.strip() else "")
