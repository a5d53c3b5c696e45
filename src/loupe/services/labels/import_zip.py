"""Re-import a Loupe dataset ZIP: items (from its images), classes and labels.

:func:`import_dataset_zip` reads ``manifest.json``, ``classes.json`` /
``metrics.json`` and ``labels.csv``; it creates a project with those classes
or metrics (or uses an existing one), imports the images with the ordinary
ingest pipeline (copied into the media folder, content-addressed), puts each
item back into its case with its file-name metadata, and restores the labels
through :func:`loupe.services.labels.import_csv.import_labels` (matched by sha256,
audit source ``import``).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import select

from loupe.db.models import Item, Project
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.services.exports.archive import FORMAT
from loupe.services.exports.cells import unescape_cell
from loupe.services.labels.import_csv import import_labels
from loupe.services.labels.safe_zip import check_archive, copy_member, read_member
from loupe.services.projects import core as projects
from loupe.settings import Settings
from loupe.tasks import kind_of

MAX_JSON_BYTES = 16 << 20  # manifest.json, classes.json, metrics.json


def _read_json(zf: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(read_member(zf, name, max_bytes=MAX_JSON_BYTES).decode("utf-8"))
    except KeyError:
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoupeError(ErrorCode.INVALID, f"{name} in the ZIP is not valid JSON: {exc}") from exc


def _unique_name(settings: Settings, wanted: str) -> str:
    with session_scope(settings.db_url, write=False) as db:
        taken = set(db.scalars(select(Project.name).where(Project.name.startswith(wanted))))
    if wanted not in taken:
        return wanted
    n = 2
    while f"{wanted} ({n})" in taken:
        n += 1
    return f"{wanted} ({n})"


def _schema(task: str, zf: zipfile.ZipFile) -> dict[str, Any]:
    kind = kind_of(task)
    return kind.schema_from_entry(_read_json(zf, kind.schema_file))


def _extract_images(
    zf: zipfile.ZipFile, names: dict[str, str], folder: Path, max_bytes: int
) -> list[Path]:
    """Extract ``images/...`` members under ``folder`` (one sub-folder each, so names
    never collide and never leave ``folder``); each file gets back its original name."""
    members = [m for m in zf.infolist() if m.filename.startswith("images/") and not m.is_dir()]
    total = sum(m.file_size for m in members)
    if total > max_bytes:
        raise LoupeError(
            ErrorCode.TOO_LARGE, f"the ZIP's images hold {total} bytes, over the limit {max_bytes}"
        )
    out: list[Path] = []
    series: dict[str, Path] = {}
    for k, member in enumerate(members):
        arc = member.filename
        parent = str(PurePosixPath(arc).parent)
        if arc in names:
            target = folder / str(k) / _safe(names[arc], f"item-{k}")
        elif parent in names:  # a slice of a DICOM series exported as a folder
            base = series.setdefault(parent, folder / f"series-{len(series)}")
            target = base / _safe(PurePosixPath(arc).name, f"slice-{k}")
        else:
            target = folder / str(k) / _safe(PurePosixPath(arc).name, f"file-{k}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as dst:
            copy_member(zf, member, dst, max_bytes=max_bytes)
        out.append(target)
    return out


def _drop_project(settings: Settings, project_id: int) -> None:
    with session_scope(settings.db_url) as db:
        found = db.get(Project, project_id)
        if found is not None:
            db.delete(found)


def _safe(name: str, fallback: str) -> str:
    cleaned = name.replace("/", "_").replace("\\", "_").replace("\x00", "")
    return fallback if cleaned in ("", ".", "..") else cleaned


def _restore_cases(
    settings: Settings, project_id: int, rows: list[dict[str, str]], *, replace: bool
) -> int:
    """Put items back into their cases and restore their file-name metadata.

    ``replace``: labels.csv decides the case even for an item that has one
    (a new project); otherwise only items without a case get one.
    """
    wanted = {(r.get("sha256") or "").lower(): r for r in rows if r.get("sha256") and r.get("case")}
    meta_rows = {(r.get("sha256") or "").lower(): r for r in rows if r.get("sha256")}
    restored = 0
    with session_scope(settings.db_url) as db:
        items = db.scalars(select(Item).where(Item.project_id == project_id)).all()
        for item in items:
            row = meta_rows.get(item.sha256.lower())
            if row is None:
                continue
            fields = {
                k.removeprefix("meta_"): v for k, v in row.items() if k.startswith("meta_") and v
            }
            if fields:
                item.meta = {**fields, **(item.meta or {})}
            case_row = wanted.get(item.sha256.lower())
            if case_row is not None and (replace or item.case_id is None):
                item.case_id = projects.get_or_create_case(db, project_id, case_row["case"]).id
                restored += 1
    return restored


def import_dataset_zip(
    settings: Settings,
    path: Path,
    *,
    owner_id: int,
    name: str | None = None,
    project_id: int | None = None,
) -> dict[str, Any]:
    """Create a project from a Loupe dataset ZIP (or add it to ``project_id``).

    Returns ``{project_id, name, created, items: <ingest report>, cases, labels:
    <label import report, rows left out>}``.
    """
    from loupe.services.items.ingest import ingest_paths

    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise LoupeError(ErrorCode.INVALID, f"the file is not a readable ZIP: {exc}") from exc
    with zf:
        # Sizes first, from the directory alone: a zip bomb is refused unread.
        check_archive(zf, path.stat().st_size, max_total=settings.max_unzipped_bytes)
        manifest = _read_json(zf, "manifest.json") or {}
        if manifest.get("format") != FORMAT:
            raise LoupeError(ErrorCode.INVALID, "the ZIP is not a Loupe dataset export")
        try:
            labels_csv = read_member(zf, "labels.csv", max_bytes=settings.max_unzipped_bytes)
        except KeyError:
            raise LoupeError(ErrorCode.INVALID, "the ZIP has no labels.csv") from None
        text = labels_csv.decode("utf-8-sig")
        rows = [
            {
                unescape_cell(k.strip()).lower(): unescape_cell((v or "").strip())
                for k, v in r.items()
                if k
            }
            for r in csv.DictReader(io.StringIO(text, newline=""))
        ]
        info = manifest.get("project") or {}
        created = project_id is None
        pattern = None
        if project_id is None:
            task = str(info.get("task") or "classify")
            schema = _schema(task, zf)
            wanted = (name or str(info.get("name") or path.stem)).strip()[:200]
            extra = {k: v for k, v in (info.get("settings") or {}).items() if v is not None and k}
            # The file-name pattern is set after the images are in: cases come from
            # labels.csv, not from re-parsing names (a case may have been renamed).
            pattern = extra.pop("case_pattern", None)
            with session_scope(settings.db_url) as db:
                project = projects.create_project(
                    db,
                    name=_unique_name(settings, wanted),
                    task=task,
                    schema=schema,
                    owner_id=owner_id,
                    description=str(info.get("description") or ""),
                    settings=extra,
                )
                project_id, project_name = project.id, project.name
        else:
            with session_scope(settings.db_url, write=False) as db:
                found = db.get(Project, project_id)
                if found is None:
                    raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
                project_name = found.name
        images = {r["image"]: r.get("filename") or "" for r in rows if r.get("image")}
        settings.media_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=settings.media_dir, prefix=".zip-import-"))
        try:
            files = _extract_images(zf, images, tmp, settings.max_unzipped_bytes)
            ingest = ingest_paths(settings, project_id, files, user_id=owner_id, copy=True)
        except BaseException:
            if created:  # a failed import leaves no half-made project behind
                _drop_project(settings, project_id)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        cases = _restore_cases(settings, project_id, rows, replace=created)
        if created and pattern:
            with session_scope(settings.db_url) as db:
                found = db.get(Project, project_id)
                if found is not None:
                    projects.update_project(db, found, settings={"case_pattern": pattern})
        report = import_labels(settings, project_id, labels_csv, user_id=owner_id)
    except BaseException:
        if created:
            _drop_project(settings, project_id)
        raise
    return {
        "project_id": project_id,
        "name": project_name,
        "created": created,
        "items": ingest.to_json(),
        "cases": cases,
        "labels": report.to_json(max_rows=0),
    }
