"""Which `.onnx` runs a model on the ONNX Runtime backends, exporting it once when there is none.

For a model file M (.safetensors or .pth) and a precision P, in this order:
1. M itself when it is an `.onnx` file;
2. the export beside it: `M.onnx` for fp32, `M.P.onnx` otherwise (what `ai-writer export onnx`
   writes); it must have been exported from this very model, or loading stops with an error;
3. the cache folder: `<fingerprint>-P-v<EXPORT_VERSION>.onnx`, exported there atomically on
   first use (a new version of the exporter makes new files, never reuses old ones).

A model's fingerprint reads its header and a few spread-out blocks of its bytes: cheap for a
file of gigabytes, stable when the file is copied, different when it is retrained.

The cache is trusted only as far as it is the user's own: without a folder given, it is the
user's cache folder (platformdirs: `~/.cache/ai-writer/onnx` on Linux), never a shared temporary
one; a cache folder or cached file that another user owns, or that others may write, is refused
(on Windows, where files have no owner uid, only the second); and each export's digest is
recorded beside it when it is made (`NAME.onnx.digest`: the SHA-256 of the `.onnx` file, and of
its `.onnx.data` a sampled fingerprint like the model's, its size, head and spread-out blocks,
so that checking costs milliseconds for gigabytes), which loading checks: an export that does
not match it is made again.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ai_writer.errors import ModelFileError
from ai_writer.files import write_atomic
from ai_writer.models.formats import recognise

EXPORT_VERSION = 8  # part of the cache file names: bump it when the exported graph changes
SAMPLED_BLOCKS = 16
BLOCK_BYTES = 65536


def fingerprint(path: str | os.PathLike) -> str:
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))  # the header of a safetensors file or a .pth zip
        for i in range(SAMPLED_BLOCKS):
            f.seek(size * i // SAMPLED_BLOCKS)
            digest.update(f.read(BLOCK_BYTES))
        f.seek(max(0, size - BLOCK_BYTES))
        digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()[:24]


def export_name(model_path: Path, precision: str) -> Path:
    """Where `ai-writer export onnx` puts the export by default: beside the model."""
    suffix = ".onnx" if precision == "fp32" else f".{precision}.onnx"
    return model_path.with_name(model_path.stem + suffix)


def onnx_for(
    model_path: str | os.PathLike,
    kind: str,
    precision: str,
    cache_dir: str | os.PathLike | None,
    *,
    notify: Callable[[str], None] = lambda message: None,
) -> tuple[Path, str | None]:
    """The .onnx to run a model file of `kind` (models/formats.py), and the fingerprint its metadata must
    carry (None: not checked)."""
    model_path = Path(model_path)
    if kind == "onnx":
        return model_path, None
    source = fingerprint(model_path)
    found, cached = _made_export(model_path, source, precision, cache_dir, notify)
    if found is not None:
        return found, source
    folder = cached.parent
    export_model(model_path, cached, precision, source, kind=kind,
                 on_start=lambda: notify(f"exporting {model_path.name} to ONNX ({precision}) once; kept in {folder}"))
    try:
        write_atomic(_digest_file(cached), export_digest(cached) + "\n")
        for path in (cached, _data(cached), _digest_file(cached)):
            if path.exists():  # a umask of 002 leaves them writable by the group, which the check refuses
                path.chmod(path.stat().st_mode & ~0o022)
    except OSError as exc:
        raise ModelFileError(f"{folder}: cannot write to the ONNX cache folder ({exc.strerror or exc})") from None
    return cached, source


def made_export(model_path: str | os.PathLike, precision: str, cache_dir: str | os.PathLike | None) -> Path | None:
    """The export of a .safetensors or .pth model that `onnx_for` would run without exporting, or None when
    it would have to export it first (`ai-writer info` says so instead of exporting)."""
    model_path = Path(model_path)
    return _made_export(model_path, fingerprint(model_path), precision, cache_dir, lambda message: None)[0]


def _made_export(model_path: Path, source: str, precision: str, cache_dir, notify) -> tuple[Path | None, Path]:
    """(The export beside the model, or the cached one whose digest matches, else None; the cache file's path.)
    Creates the cache folder, and refuses one that is not the user's own."""
    beside = export_name(model_path, precision)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = folder / f"{source}-{precision}-v{EXPORT_VERSION}.onnx"
    if beside.is_file():
        return beside, cached
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelFileError(f"{folder}: cannot create the ONNX cache folder ({exc.strerror})") from None
    check_owned(folder, "the ONNX cache folder")
    if cached.is_file() or cached.is_symlink():
        for path in (cached, _data(cached), _digest_file(cached)):
            if path.exists() or path.is_symlink():
                check_owned(path, "a cached ONNX export")
        recorded = _recorded_digest(cached)
        if recorded is not None and recorded == export_digest(cached):
            return cached, cached
        if recorded is not None:
            notify(f"the cached export {cached.name} does not match the digest recorded when it was made")
    return None, cached


def default_cache_dir() -> Path:
    """The cache folder when none is given: the user's own cache folder (never a shared temporary one)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("ai-writer", appauthor=False)) / "onnx"


def check_owned(path: Path, what: str) -> None:
    """`path` must belong to the current user and be writable by nobody else; else a one-line ModelFileError.
    A symbolic link is judged by itself, not by what it points to, and refused."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot check {what} ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        raise ModelFileError(f"{path}: {what} is a symbolic link; remove it and ai-writer exports again")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise ModelFileError(f"{path}: {what} belongs to another user (uid {info.st_uid}); ai-writer runs only "
                             "exports of its own user: remove it, or give a cache folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ModelFileError(f"{path}: {what} can be written by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                             f"run chmod go-w {path}")


def export_digest(onnx_path: Path) -> str:
    """The digest of an export: SHA-256 of the .onnx file (small: the graph and metadata), and a sampled
    fingerprint (fingerprint()) of its .onnx.data, which holds the weights and can be gigabytes."""
    try:
        digest = hashlib.sha256(onnx_path.read_bytes())
        data = _data(onnx_path)
        digest.update(fingerprint(data).encode() if data.exists() else b"no data file")
    except OSError:
        return "unreadable"
    return digest.hexdigest()


def _recorded_digest(onnx_path: Path) -> str | None:
    try:
        return _digest_file(onnx_path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _data(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".data")


def _digest_file(onnx_path: Path) -> Path:
    return onnx_path.with_name(onnx_path.name + ".digest")


def export_model(model_path: Path, out: Path, precision: str, source: str | None = None,
                 on_start: Callable[[], None] | None = None, kind: str | None = None) -> Path:
    """Export a model file to ONNX, streaming its tensors (export/onnx.py) from a memory map, without torch.
    `on_start` is called once the file's tensors have
    been checked, before the export proper."""
    from ai_writer.export import onnx as onnx_export

    return onnx_export.export_file(model_path, out, precision, kind=kind or recognise(model_path),
                                   source=source or fingerprint(model_path), on_start=on_start)


CACHED_NAME = re.compile(r"([0-9a-f]{24})-(fp32|fp16|int8|int4)-v(\d+)\.onnx")


@dataclass(frozen=True)
class CachedExport:
    """One export in the cache: its files (the .onnx, its .data and .digest) and what they hold."""

    source: str  # the fingerprint of the model file it was exported from
    precision: str
    version: int  # the exporter's version: one not EXPORT_VERSION is never used again
    files: tuple[Path, ...]

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.files if f.is_file())

    @property
    def current(self) -> bool:
        return self.version == EXPORT_VERSION


def cached_exports(folder: Path) -> list[CachedExport]:
    """The exports in a cache folder (files of other names are not ai-writer's: never listed)."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.onnx")):
        match = CACHED_NAME.fullmatch(path.name)
        if match:
            files = tuple(p for p in (path, _data(path), _digest_file(path)) if p.is_file())
            found.append(CachedExport(match.group(1), match.group(2), int(match.group(3)), files))
    return found


def remove_exports(folder: Path, model: Path | None = None) -> tuple[int, int]:
    """Remove the cached exports of `model` (all of them when None): (exports removed, bytes freed)."""
    source = fingerprint(model) if model is not None else None
    removed = freed = 0
    for export in cached_exports(folder):
        if source is None or export.source == source:
            freed += export.nbytes
            for file in export.files:
                file.unlink(missing_ok=True)
            removed += 1
    return removed, freed
