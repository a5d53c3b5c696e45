"""Temporary files a crash can leave behind, removed when the server starts.

Uploads, ZIP imports, exports and thumbnails are written to a temporary name
and renamed when complete; an interrupted request removes its own, but a
killed process cannot. Only files older than ``older_than_s`` go: another
process (a second server, a worker) may be writing a young one right now.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from loupe.settings import Settings

log = logging.getLogger(__name__)
STALE_AFTER_S = 3600.0


def _candidates(settings: Settings) -> Iterator[Path]:
    if settings.media_dir.is_dir():
        yield from settings.media_dir.glob(".upload-*")
        yield from settings.media_dir.glob(".zip-import-*")
        yield from settings.media_dir.rglob(".tmp-*")
    if settings.thumbs_dir.is_dir():
        yield from settings.thumbs_dir.rglob(".tmp-*")
    if settings.exports_dir.is_dir():
        yield from settings.exports_dir.rglob(".*.part")


def remove_stale_temp_files(settings: Settings, *, older_than_s: float = STALE_AFTER_S) -> int:
    """Delete temporary files and folders older than ``older_than_s``; return how many."""
    cutoff = time.time() - older_than_s
    removed = 0
    for path in list(_candidates(settings)):
        try:
            if path.lstat().st_mtime >= cutoff:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except OSError as exc:  # gone meanwhile, or not ours to delete
            log.debug("temp file %s not removed: %s", path.name, exc)
    if removed:
        log.info("removed %d stale temporary file(s)", removed)
    return removed
