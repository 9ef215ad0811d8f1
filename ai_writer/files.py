"""Writing files atomically, and reading the writer's own text files with one-line errors.

A reader of an atomically written file sees the old file or the whole new one, never a part.

Everything is first written into a new temporary folder beside the destination (so on the same
disk), flushed to the disk (fsync), then renamed into place. Whatever goes wrong, Ctrl-C
included, the temporary folder is removed and the destination is left as it was.

    write_atomic(path, text)                       # text (UTF-8) or bytes
    with atomic_path(path) as temporary:           # for writers that want a path
        save_file(tensors, temporary)
    with atomic_files(data, model) as staging:     # a group of files written under their own names
        onnx.save_model(model, staging / model.name, location=data.name, ...)
    data, text = read_text_file(path, "lorebook")  # UTF-8 (a BOM is dropped); errors: InputTextError
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ai_writer.errors import InputTextError


@contextmanager
def atomic_files(*paths: str | os.PathLike) -> Iterator[Path]:
    """A new temporary folder beside `paths` (all in one folder), in which the block writes the
    files (or folders) under their final names: `staging / path.name`.

    When the block ends without an error, what it wrote is flushed to the disk and renamed into
    place in the order given (put a file that refers to another after it), then a path it did
    not write is removed at the destination, so that no stale companion of an earlier write is
    left. A folder replaces only a missing one. An error in the block changes nothing there."""
    paths = tuple(Path(p) for p in paths)
    folder = paths[0].parent
    if any(p.parent != folder for p in paths):
        raise ValueError("atomic_files: every path must be in the same folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{paths[-1].name}.", suffix=".tmp", dir=folder))
    try:
        yield staging
        written = [path for path in paths if (staging / path.name).exists()]
        for path in written:
            _fsync_tree(staging / path.name)
        for path in written:
            os.replace(staging / path.name, path)
        for path in paths:
            if path not in written and path.is_file():
                path.unlink()
    finally:  # Ctrl-C included: the temporary folder never stays behind
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path to write the new `path` to (`.NAME.*.tmp/NAME` in the same folder, an
    empty file already there); it replaces `path` when the block ends without an error."""
    path = Path(path)
    with atomic_files(path) as staging:
        temporary = staging / path.name
        temporary.touch()
        yield temporary


def write_atomic(path: str | os.PathLike, data: str | bytes, encoding: str = "utf-8") -> None:
    """Replace `path` by `data`: text (written in text mode, in `encoding`) or bytes."""
    with atomic_path(path) as temporary:
        if isinstance(data, bytes):
            temporary.write_bytes(data)
        else:
            temporary.write_text(data, encoding=encoding)


def _fsync_tree(path: Path) -> None:
    """Flush a file, or every file inside a folder, to the disk."""
    files = [path] if not path.is_dir() else [Path(root) / name for root, _, names in os.walk(path) for name in names]
    for file in files:
        fd = os.open(file, os.O_RDWR | getattr(os, "O_BINARY", 0))  # Windows flushes only what is open for writing
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_text_file(path: str | os.PathLike, what: str = "file") -> tuple[bytes, str]:
    """(the bytes of a text file the writer gave, its text as UTF-8 without a BOM). A missing or unreadable file,
    or bytes that are not UTF-8, are one InputTextError line naming the file (`what`: "ban file", "lorebook")."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputTextError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise InputTextError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        return data, data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputTextError(f"{path}: the {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                             f"{exc.start})") from None
