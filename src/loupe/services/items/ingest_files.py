"""Per-file work of an import: detect, probe, hash, thumbnail, copy (no database).

Each function here runs in a worker thread; they raise ``loupe.media.MediaError``
for a file that cannot be read, which the caller reports as that file's failure.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from loupe.media import (
    MediaInfo,
    detect_format,
    group_dicom_series,
    make_thumbnail,
    probe,
    probe_dicom_series,
    sha256_file,
    thumbnail_dicom_series,
)
from loupe.services.items.files import store_thumbnail, thumbnail_file
from loupe.settings import Settings

NOT_MEDIA = "not an image (unrecognised format)"


@dataclass(frozen=True)
class Source:
    """One file to import: where it is, how it is named and shown, its folder case."""

    path: Path  # absolute
    name: str  # file name matched by the case pattern and stored in item.filename
    label: str  # how the report names it (the path, or an upload's original name)
    folder_case: str | None = None


@dataclass(frozen=True)
class Probed:
    """A readable file (or DICOM series) with everything its item row needs."""

    source: Source
    sha256: str
    info: MediaInfo
    size_bytes: int
    uri: Path
    files: list[str] | None = None


@dataclass(frozen=True)
class DicomFile:
    """Marker: a DICOM file, imported later as part of its series."""


def prepare_file(
    settings: Settings, source: Source, *, copy: bool, defer_dicom: bool = True
) -> Probed | DicomFile:
    """Probe (headers only), hash and thumbnail one file.

    With ``defer_dicom`` a DICOM file is only marked, to be imported with its series.
    """
    path = source.path
    if defer_dicom and detect_format(path) == "dicom":
        return DicomFile()
    # Empty, unrecognised (NOT_MEDIA), corrupt, truncated, bomb: MediaError with a reason.
    info = probe(path, max_pixels=settings.max_pixels)
    sha = sha256_file(path)
    # The thumbnail decodes pixels, so it also catches files whose header is fine
    # but whose data is corrupt.
    if not thumbnail_file(settings, sha).is_file():
        jpeg = make_thumbnail(path, size=settings.thumbnail_size, max_pixels=settings.max_pixels)
        store_thumbnail(settings, sha, jpeg)
    uri = copy_into_media(settings, path, sha) if copy else path
    return Probed(source, sha, info, path.stat().st_size, uri)


def prepare_series(settings: Settings, group: list[Source], *, copy: bool) -> Probed:
    """Probe, hash and thumbnail (middle slice) one DICOM series."""
    paths = [s.path for s in group]
    hashes = [sha256_file(p) for p in paths]
    sha = series_sha256(hashes)
    info = probe_dicom_series(paths, max_pixels=settings.max_pixels)
    if not thumbnail_file(settings, sha).is_file():
        jpeg = thumbnail_dicom_series(paths, size=settings.thumbnail_size)
        store_thumbnail(settings, sha, jpeg)
    if copy:
        paths = [copy_into_media(settings, p, h) for p, h in zip(paths, hashes, strict=True)]
    files = sorted(str(p) for p in paths)
    size = sum(s.path.stat().st_size for s in group)
    return Probed(group[0], sha, info, size, Path(files[0]), files)


def series_sha256(file_hashes: list[str]) -> str:
    """The identity of a series: sha256 of its files' sorted hex digests, one per line."""
    return hashlib.sha256("\n".join(sorted(file_hashes)).encode()).hexdigest()


def group_dicom(dicom: list[Source]) -> tuple[list[list[Source]], list[Source]]:
    """Split DICOM sources into series (each sorted by its label, the path or an
    upload's original name: the first names the item) and files in no series.

    A file in no series is unreadable or lacks a SeriesInstanceUID; the caller
    imports it on its own, which reports the reason if it cannot be read.
    """
    by_path = {s.path: s for s in dicom}
    groups = group_dicom_series(list(by_path))
    grouped: set[Path] = set()
    series: list[list[Source]] = []
    for files in groups.values():
        members = sorted((by_path[Path(f)] for f in files), key=lambda s: (s.label, s.path))
        grouped.update(s.path for s in members)
        series.append(members)
    series.sort(key=lambda g: g[0].path)
    return series, [s for s in dicom if s.path not in grouped]


def copy_into_media(settings: Settings, path: Path, sha: str) -> Path:
    """Copy a file to its content-addressed place in the media folder (once)."""
    dest = media_path(settings, sha, path.name)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def media_path(settings: Settings, sha: str, filename: str) -> Path:
    """Content-addressed location of an uploaded or copied file: ``media/ab/abc...<suffix>``."""
    return settings.media_dir / sha[:2] / f"{sha}{safe_suffix(filename)}"


def safe_suffix(filename: str) -> str:
    """The file's suffix, lower-case and reduced to ``[a-z0-9.]`` (``.nii.gz`` kept whole).

    Readers sniff content, not names, but a kept suffix helps people browsing the folder.
    """
    name = PurePosixPath(filename.replace("\\", "/")).name.lower()
    suffix = ".nii.gz" if name.endswith(".nii.gz") else PurePosixPath(name).suffix
    suffix = re.sub(r"[^a-z0-9.]", "", suffix)[:12]
    return suffix if len(suffix) > 1 else ""
