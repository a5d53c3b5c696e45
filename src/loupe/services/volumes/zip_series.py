"""A ZIP of a DICOM series (or of NIfTI files) imported as items.

Import referenced files in place, so the members of a ZIP are extracted once,
content-addressed by the ZIP's hash, under ``LOUPE_HOME/volumes/zips/<sha256>/``
and the folder is imported instead of the ZIP. The archive is checked before a
byte is inflated (zip bombs, lying headers: :mod:`loupe.services.labels.safe_zip`);
member names never leave the folder (no absolute paths, no ``..``).

A ZIP uploaded from the browser is one volume: :func:`upload_zip_sources` refuses
one that holds several DICOM series (or no image at all) with a message saying so,
and names the series' files after the ZIP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from loupe.errors import ErrorCode, LoupeError
from loupe.media import group_dicom_series, iter_media_files, sha256_file
from loupe.services.items.ingest_files import Source
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


def upload_zip_sources(
    settings: Settings, path: Path, filename: str, *, folder_case: str | None = None
) -> list[Source]:
    """The files of an uploaded ZIP (``filename``: its original name) as import sources.

    The members of its one DICOM series are named ``filename`` (the item's name);
    other members keep their own names. Raises ``LoupeError(INVALID)`` when the ZIP
    cannot be read, holds no file, or holds more than one DICOM series (then its
    extracted folder is removed again, unless an earlier upload made it).
    """
    name = PurePosixPath(filename.replace("\\", "/")).name or path.name
    existed = (settings.home / "volumes" / "zips" / sha256_file(path)).is_dir()
    folder = expand_zip(settings, path)
    try:
        files = list(iter_media_files(folder))
        if not files:
            raise LoupeError(ErrorCode.INVALID, f"{name} holds no files")
        series = group_dicom_series(files)
        if len(series) > 1:
            parts = "; ".join(
                f"series ...{uid[-12:]}: {len(members)} files in {_folder_of(folder, members)}"
                for uid, members in sorted(series.items(), key=lambda kv: kv[1][0])
            )
            raise LoupeError(
                ErrorCode.INVALID,
                f"{name} holds {len(series)} DICOM series, not one ({parts}); "
                "put each series in a ZIP of its own",
                series=len(series),
            )
    except LoupeError:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    in_series = {p for members in series.values() for p in members}
    return [
        Source(
            file,
            name if file in in_series else file.name,
            f"{filename}/{file.relative_to(folder).as_posix()}",
            folder_case,
        )
        for file in files
    ]


def _folder_of(root: Path, members: list[Path]) -> str:
    """The folder in the ZIP that holds all of ``members`` ('/' for its top)."""
    common = Path(os.path.commonpath([str(p.parent) for p in members]))
    relative = common.relative_to(root).as_posix()
    return "/" if relative == "." else f"{relative}/"
