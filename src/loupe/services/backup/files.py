"""Copying LOUPE_HOME's files into a backup and back, with a SHA-256 per file.

Media are content-addressed and every other file (thumbnails, feature
matrices, model artifacts, reports) is written to a temporary name and
renamed, so a file copied after the database snapshot is either complete or
absent; temporary names are skipped. Each file is hashed while it is copied
(one read), and written to a temporary name in the target first.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from loupe.errors import ErrorCode, LoupeError
from loupe.services.backup.manifest import FileEntry

# Folders of LOUPE_HOME a backup holds. Not copied: the database and the queue
# (dumped / transient), exports (downloads, made again on demand) and caches.
HOME_FOLDERS = ("media", "thumbs", "features", "models", "reports", "maps")
HOME_FILES = (".secret_key",)
_TEMP_PREFIXES = (".upload-", ".zip-import-", ".tmp-", ".restore-")
_CHUNK = 1024 * 1024


def _is_temporary(name: str) -> bool:
    return name.startswith(_TEMP_PREFIXES) or name.endswith(".part")


def home_files(home: Path) -> Iterator[Path]:
    """Every file of ``home`` a backup copies, relative to ``home``."""
    for name in HOME_FILES:
        if (home / name).is_file():
            yield Path(name)
    for folder in HOME_FOLDERS:
        root = home / folder
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not _is_temporary(d))
            for name in sorted(filenames):
                if not _is_temporary(name):
                    yield (Path(dirpath) / name).relative_to(home)


def copy_file(source: Path, target: Path, *, mode: int | None = None) -> FileEntry:
    """Copy ``source`` to ``target`` (temp name, rename); return size and hash."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".restore-{target.name}")
    digest = hashlib.sha256()
    size = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if mode is None else mode)
    try:
        with source.open("rb") as src, os.fdopen(fd, "wb") as dst:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            # No fsync per file: the caller syncs once (os.sync) before the
            # manifest / the database is written, which is far cheaper for 100k files.
        if mode is None:
            os.chmod(tmp, source.stat().st_mode & 0o777)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return FileEntry(size=size, sha256=digest.hexdigest())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_entry(rel: str, got: FileEntry, want: FileEntry) -> None:
    if got != want:
        raise LoupeError(
            ErrorCode.INVALID,
            f"backup file {rel} is damaged: size {got.size} sha256 {got.sha256[:12]}..., "
            f"the manifest says size {want.size} sha256 {want.sha256[:12]}...",
        )


def under(path: str, root: Path) -> str | None:
    """``path`` relative to ``root`` (as posix), or None when it lies outside."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return None


def home_is_empty(home: Path) -> bool:
    """True when ``home`` holds no file but a generated secret key (empty folders are fine)."""
    if not home.exists():
        return True
    for dirpath, _dirs, filenames in os.walk(home):
        for name in filenames:
            if Path(dirpath) == home and name == ".secret_key":
                continue
            return False
    return True
