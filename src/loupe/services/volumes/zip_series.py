"""A ZIP of a DICOM series (or of NIfTI files) imported as items.

Import referenced files in place, so the members of a ZIP are extracted once,
content-addressed by the ZIP's hash, under ``LOUPE_HOME/volumes/zips/<sha256>/``
and the folder is imported instead of the ZIP. The archive is checked before a
byte is inflated (zip bombs, lying headers: :mod:`loupe.services.labels.safe_zip`);
member names never leave the folder (no absolute paths, no ``..``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from loupe.errors import ErrorCode, LoupeError
from loupe.media import sha256_file
from loupe.services.labels.safe_zip import check_archive, copy_member
from loupe.settings import Settings


def is_zip(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".zip" and zipfile.is_zipfile(path)


def expand_zip(settings: Settings, path: Path) -> Path:
    """The folder holding the ZIP's members (extracted on first use)."""
    target = settings.home / "volumes" / "zips" / sha256_file(path)
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=target.parent, prefix=".zip-"))
    try:
        with zipfile.ZipFile(path) as zf:
            check_archive(zf, path.stat().st_size, max_total=settings.max_unzipped_bytes)
            for info in zf.infolist():
                if info.is_dir():
                    continue
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                if not parts or parts[0] in ("/", "") or ".." in parts or ":" in parts[0]:
                    raise LoupeError(
                        ErrorCode.INVALID, f"{info.filename!r} in the ZIP leaves its folder"
                    )
                if any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    continue
                out = partial.joinpath(*parts)
                out.parent.mkdir(parents=True, exist_ok=True)
                with open(out, "wb") as dst:
                    copy_member(zf, info, dst, max_bytes=settings.max_unzipped_bytes)
        os.replace(partial, target)
    except zipfile.BadZipFile as exc:
        raise LoupeError(ErrorCode.INVALID, f"{path.name} is not a readable ZIP") from exc
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return target


def expand_zips(settings: Settings, paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """``paths`` with every ZIP file replaced by its extracted folder."""
    out: list[str] = []
    for raw in paths:
        path = Path(raw)
        out.append(str(expand_zip(settings, path)) if is_zip(path) else str(raw))
    return out
