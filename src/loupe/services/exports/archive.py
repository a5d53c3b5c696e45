"""Dataset ZIP export: ``labels.csv``, ``classes.json`` or ``metrics.json``,
``manifest.json`` and, optionally, the images in an ``images/<class>/`` tree.

The archive is written entry by entry with ZIP64 and never held in memory: to a
file in ``settings.exports_dir`` by the ``export`` job (:func:`run_export_job`),
or straight into an HTTP response (:func:`stream_dataset_zip`, for an
unseekable output zipfile writes data descriptors).

``labels.csv`` is the CSV export (:mod:`loupe.services.exports.core`) plus two
columns: ``split`` (train | val | test) and ``image`` (the path inside the
archive, when images are included). The split is deterministic: each *unit*
(the item's case, so one patient never straddles two splits; the item itself
when it has no case) goes to the bucket where ``sha256("<seed>:<unit>")``,
read as a number in [0, 1), falls (:mod:`loupe.services.exports.split`). It
depends only on the seed and the case names / file hashes, so re-exports and
re-imported projects split alike. ``manifest.json`` is built by
:mod:`loupe.services.exports.manifest`.

The ``images/`` tree follows the layout of torchvision's ``ImageFolder`` and
FiftyOne's ``ImageClassificationDirectoryTree``: ``images/<class>/<file>``, with
items that have no class (unlabelled, unsure, skip) in ``images/_unlabeled/``;
score, segment and volume projects put every image in ``images/``.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import os
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from loupe.db.models import Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.jobs.registry import register_job_kind
from loupe.services.exports import core as exports
from loupe.services.exports import rows as export_rows
from loupe.services.exports.core import csv_text_chunks
from loupe.services.exports.manifest import FORMAT as FORMAT
from loupe.services.exports.manifest import FORMAT_VERSION as FORMAT_VERSION
from loupe.services.exports.manifest import Tally, build_manifest, schema_entry
from loupe.services.exports.manifest import backbone_hashes as backbone_hashes
from loupe.services.exports.registry import (
    Exporter,
    ExportRequest,
    get_exporter,
    output_path,
    register_exporter,
)
from loupe.services.exports.rows import ExportFilter, ExportLayout
from loupe.services.exports.split import SPLITS as SPLITS
from loupe.services.exports.split import UNLABELED as UNLABELED
from loupe.services.exports.split import (
    DatasetOptions,
    ImageNamer,
    assign_split,
    row_files,
    safe_part,
    split3,
    split_unit,
)
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.base import TaskKind

log = logging.getLogger(__name__)

EXPORT_KIND = "export"
COPY_CHUNK = 1 << 20
_ZIP64_LIMIT = (1 << 31) - 1
Progress = Callable[[int, int], None]


# --- the archive -----------------------------------------------------------------------


def _label_key(row: Row[Any], kind: TaskKind) -> str | None:
    label_kind = row.kind if row.kind and row.kind != export_rows.NONE_KIND else None
    if label_kind is None:
        return None
    return kind.count_key(str(label_kind), row.label)


def _write_entries(
    settings: Settings,
    project_id: int,
    zf: zipfile.ZipFile,
    options: DatasetOptions,
    progress: Progress | None,
    tally: Tally,
) -> Iterator[None]:
    """Write the archive's entries, yielding after every chunk (for streaming)."""
    f = options.filter
    exported_at = dt.datetime.now(dt.UTC)
    with session_scope(settings.db_url, write=False) as db:
        project = export_rows.get_project(db, project_id)
        export_rows.check_case(db, project, f.case_id)
        layout = export_rows.layout_for(db, project, f)
        total = export_rows.count_rows(db, project, f)
        steps = total * (2 if options.include_images else 1)
        namer = ImageNamer(kind_of(project.task))
        columns = [*layout.columns, "split", "image"]

        def rows() -> Iterator[list[Any]]:
            for row in export_rows.iter_rows(
                db, project, layout, f, with_files=options.include_images
            ):
                tally.rows += 1
                key = _label_key(row, kind_of(project.task))
                if key is not None:
                    tally.by_label[key] = tally.by_label.get(key, 0) + 1
                    if row.kind != export_rows.SKIP_KIND:  # a skip is not a label
                        tally.labelled += 1
                        origin = str(row.origin or "human")
                        tally.by_origin[origin] = tally.by_origin.get(origin, 0) + 1
                split = assign_split(
                    split_unit(row.case_name, row.sha256), options.split_seed, options.split
                )
                tally.by_split[split] += 1
                image = ""
                if options.include_images:
                    if all(p.is_file() for p in row_files(row)):
                        image = namer.name(row)
                    else:
                        tally.missing_count += 1
                        if len(tally.missing) < 100:
                            tally.missing.append(row.filename)
                yield [*layout.cells(row), split, image]
                if progress is not None and tally.rows % 2000 == 0:
                    progress(tally.rows, steps)

        info = _entry("labels.csv", exported_at, zipfile.ZIP_DEFLATED)
        with zf.open(info, "w", force_zip64=True) as dst:
            for text in csv_text_chunks(columns, rows(), bom=True, raw=options.raw):
                dst.write(text.encode("utf-8"))
                yield
        if options.include_images:
            yield from _write_images(db, project, layout, zf, f, tally, steps, progress)
        schema_name, schema_body = schema_entry(project)
        zf.writestr(_entry(schema_name, exported_at), _json(schema_body))
        manifest = build_manifest(db, project, layout, options, tally, exported_at, columns)
        zf.writestr(_entry("manifest.json", exported_at), _json(manifest))
        yield
        if progress is not None:
            progress(steps, steps)


def _write_images(
    db: Session,
    project: Project,
    layout: ExportLayout,
    zf: zipfile.ZipFile,
    f: ExportFilter,
    tally: Tally,
    steps: int,
    progress: Progress | None,
) -> Iterator[None]:
    namer = ImageNamer(
        kind_of(project.task)
    )  # the same names as in labels.csv: same rows, same order
    done = tally.rows
    for row in export_rows.iter_rows(db, project, layout, f, with_files=True):
        done += 1
        files = row_files(row)
        if not all(p.is_file() for p in files):
            continue
        arcname = namer.name(row)
        targets = [(files[0], arcname)]
        if len(files) > 1:  # a DICOM series: a folder of its slices
            targets = [(p, f"{arcname}/{safe_part(p.name, 'slice')}") for p in files]
        for path, name in targets:
            yield from _copy_file(zf, path, name)
        tally.images += 1
        if progress is not None and done % 200 == 0:
            progress(done, steps)


def _copy_file(zf: zipfile.ZipFile, path: Path, arcname: str) -> Iterator[None]:
    info = zipfile.ZipInfo.from_file(path, arcname)
    info.compress_type = zipfile.ZIP_STORED  # images are compressed already
    size = path.stat().st_size
    with path.open("rb") as src, zf.open(info, "w", force_zip64=size > _ZIP64_LIMIT) as dst:
        while chunk := src.read(COPY_CHUNK):
            dst.write(chunk)
            yield


def _entry(name: str, when: dt.datetime, compress: int = zipfile.ZIP_DEFLATED) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = compress
    info.external_attr = 0o644 << 16
    return info


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"


class _Sink(io.RawIOBase):
    """An unseekable output that collects bytes until they are taken."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def stream_dataset_zip(
    settings: Settings, project_id: int, options: DatasetOptions = DatasetOptions()
) -> Iterator[bytes]:
    """The dataset ZIP as byte chunks, built while it is sent."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for _ in _write_entries(settings, project_id, zf, options, None, Tally()):
            data = sink.take()
            if len(data):
                yield data
    tail = sink.take()
    if tail:
        yield tail


def write_dataset_zip(
    settings: Settings,
    project_id: int,
    out: Path,
    options: DatasetOptions = DatasetOptions(),
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the dataset ZIP to ``out`` (a temporary file renamed when complete).

    Returns ``{path, size_bytes, rows, labelled, images, missing_images}``.
    """
    exports.check_export(settings, project_id, options.filter)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    tally = Tally()
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for _ in _write_entries(settings, project_id, zf, options, progress, tally):
                pass
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "path": str(out),
        "size_bytes": out.stat().st_size,
        "rows": tally.rows,
        "labelled": tally.labelled,
        "images": tally.images,
        "missing_images": tally.missing_count,
    }


# --- the job -------------------------------------------------------------------------


def export_file_for(settings: Settings, result: dict[str, Any] | None) -> Path:
    """The file an export job wrote (only inside ``exports_dir``)."""
    name = str((result or {}).get("file") or "")
    root = settings.exports_dir.resolve()
    path = (root / name).resolve()
    if not name or root not in path.parents:
        raise LoupeError(ErrorCode.NOT_FOUND, "this export has no file")
    if not path.is_file():
        raise LoupeError(ErrorCode.NOT_FOUND, f"the export file {name} is gone; export again")
    return path


@register_job_kind(EXPORT_KIND)
def run_export_job(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """The ``export`` job: the exporter named by ``params["format"]`` writes one file
    into ``exports_dir`` (:mod:`loupe.services.exports.registry`).

    params: ``project_id``, ``format`` (an exporter: zip, csv, nifti_masks ...) and
    the exporter's own options. Returns at least ``{file, filename, format, size_bytes}``.
    """
    project_id = int(params["project_id"])
    with session_scope(settings.db_url, write=False) as db:
        task = export_rows.get_project(db, project_id).task
    exporter = get_exporter(str(params.get("format", "zip")), task)

    def progress(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(done / total if total else 1.0, f"{done}/{total} rows")

    request = ExportRequest(
        project_id=project_id, job_id=ctx.job_id, params=params, progress=progress
    )
    return exporter.run(settings, request)


def _filter(params: dict[str, Any]) -> ExportFilter:
    return ExportFilter(
        case_id=params.get("case_id"),
        since=export_rows.parse_when(params.get("since")),
        until=export_rows.parse_when(params.get("until")),
        labelled_only=bool(params.get("labelled_only", False)),
    )


def _target(settings: Settings, request: ExportRequest, suffix: str) -> tuple[Path, str]:
    with session_scope(settings.db_url, write=False) as db:
        name = export_rows.get_project(db, request.project_id).name
    filename = exports.export_basename(name, suffix)
    return output_path(settings, request, filename), filename


def _export_csv(settings: Settings, request: ExportRequest) -> dict[str, Any]:
    """``labels.csv`` on its own (options: the filter, ``raw``)."""
    out, filename = _target(settings, request, ".csv")
    f = _filter(request.params)
    raw = bool(request.params.get("raw", False))
    exports.write_csv(settings, request.project_id, out, f, raw=raw, progress=request.progress)
    with session_scope(settings.db_url, write=False) as db:
        rows = export_rows.count_rows(db, export_rows.get_project(db, request.project_id), f)
    return _result(settings, out, filename, "csv", rows=rows)


def _export_zip(settings: Settings, request: ExportRequest) -> dict[str, Any]:
    """The dataset ZIP (options: the filter, ``include_images``, ``split_seed``,
    ``split``, ``raw``)."""
    params = request.params
    out, filename = _target(settings, request, ".zip")
    options = DatasetOptions(
        include_images=bool(params.get("include_images", False)),
        split_seed=int(params.get("split_seed", 0)),
        split=split3(params.get("split")),
        filter=_filter(params),
        raw=bool(params.get("raw", False)),
    )
    done = write_dataset_zip(settings, request.project_id, out, options, progress=request.progress)
    extra = {k: done[k] for k in ("rows", "labelled", "images", "missing_images")}
    return _result(settings, out, filename, "zip", **extra)


def _result(settings: Settings, out: Path, filename: str, fmt: str, **extra: Any) -> dict[str, Any]:
    return {
        "file": str(out.relative_to(settings.exports_dir)),
        "filename": filename,
        "format": fmt,
        "size_bytes": out.stat().st_size,
        **extra,
    }


register_exporter(
    Exporter("zip", "Dataset ZIP (labels.csv, manifest, optional images)", _export_zip)
)
register_exporter(
    Exporter("csv", "Labels as CSV", _export_csv, media_type="text/csv; charset=utf-8")
)
