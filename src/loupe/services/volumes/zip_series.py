"""A ZIP of a DICOM series (or of NIfTI files) imported as items.

Import referenced files in place, so the members of a ZIP are extracted once,
content-addressed by the ZIP's hash, under ``LOUPE_HOME/volumes/zips/<sha256>/``
and the folder is imported instead of the ZIP. The archive is checked before a
byte is inflated (zip bombs, lying headers: :mod:`loupe.services.labels.safe_zip`);
member names never leave the folder (no absolute paths, no ``..``).

A ZIP uploaded from the browser is one volume per DICOM series it holds
(:func:`upload_zip_sources`): a ZIP of one series is named after the ZIP, each
series of a study ZIP after the ZIP, its folder in the ZIP and its series number
and description (``study.zip: CT/ series 2 AXIAL``); a ZIP without any file is
refused with a message saying so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections import Counter
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

    The members of a DICOM series are named after the ZIP (its item's name): the
    ZIP's name when it holds one series, with the series' folder, number and
    description added when it holds several (a study). Other members keep their own
    names. Raises ``LoupeError(INVALID)`` when the ZIP cannot be read or holds no
    file (then its extracted folder is removed again, unless an earlier upload made
    it).
    """
    name = PurePosixPath(filename.replace("\\", "/")).name or path.name
    existed = (settings.home / "volumes" / "zips" / sha256_file(path)).is_dir()
    folder = expand_zip(settings, path)
    try:
        files = list(iter_media_files(folder))
        if not files:
            raise LoupeError(ErrorCode.INVALID, f"{name} holds no files")
        series = group_dicom_series(files)
    except LoupeError:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if len(series) == 1:
        names = {p: name for members in series.values() for p in members}
    else:
        labels = _series_labels(folder, series)
        names = {p: f"{name}: {labels[uid]}" for uid, members in series.items() for p in members}
    return [
        Source(
            file,
            names.get(file, file.name),
            f"{filename}/{file.relative_to(folder).as_posix()}",
            folder_case,
        )
        for file in files
    ]


def _series_labels(root: Path, series: dict[str, list[Path]]) -> dict[str, str]:
    """A short distinct label per series of a study: its folder in the ZIP, series
    number and description (from the first file's header), ``#k`` where they tie."""
    import pydicom

    labels: dict[str, str] = {}
    for uid, members in sorted(series.items(), key=lambda kv: sorted(kv[1])[0]):
        parts = []
        where = _folder_of(root, members)
        if where != "/":
            parts.append(where)
        try:
            header = pydicom.dcmread(sorted(members)[0], stop_before_pixels=True)
            number = header.get("SeriesNumber")
            description = str(header.get("SeriesDescription") or "").strip()
        except Exception:  # the series was grouped from these headers: rare
            number, description = None, ""
        if number not in (None, ""):
            parts.append(f"series {number}")
        if description:
            parts.append(description[:64])
        labels[uid] = " ".join(parts) or f"series ...{uid[-8:]}"
    seen = Counter(labels.values())
    counts: dict[str, int] = {}
    for uid, label in list(labels.items()):
        if seen[label] > 1:
            counts[label] = counts.get(label, 0) + 1
            labels[uid] = f"{label} #{counts[label]}"
    return labels


def _folder_of(root: Path, members: list[Path]) -> str:
    """The folder in the ZIP that holds all of ``members`` ('/' for its top)."""
    common = Path(os.path.commonpath([str(p.parent) for p in members]))
    relative = common.relative_to(root).as_posix()
    return "/" if relative == "." else f"{relative}/"
