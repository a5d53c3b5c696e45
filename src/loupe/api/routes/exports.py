"""Exports (CSV, dataset ZIP), label import from CSV, and case reports of a project.

Access: a viewer may export and read reports; generating a report, starting an
export job and importing labels need the annotator role. Exports stream: the
CSV and a ZIP are built while they are sent, in a read session of their own,
and a job writes large ones to a file for ``GET /exports/{job_id}/download``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Path, Query, UploadFile
from fastapi.responses import FileResponse, StreamingResponse

from loupe.api.deps import (
    ROLE_RANK,
    AnnotatorProject,
    CurrentUser,
    SessionDep,
    SettingsDep,
    ViewerProject,
    project_role,
)
from loupe.api.params import MAX_ID, Offset, OptionalIdQuery
from loupe.api.schemas.exports import (
    DatasetImportPublic,
    ExportCreate,
    LabelImportReport,
    ReportPublic,
    ReportsPublic,
)
from loupe.api.schemas.jobs import JobPublic
from loupe.db.models import Job, JobStatus, Project, ProjectRole, Report
from loupe.errors import ErrorCode, LoupeError
from loupe.jobs import core as job_service
from loupe.services.exports import archive as exports_zip
from loupe.services.exports import core as exports
from loupe.services.exports.registry import get_exporter
from loupe.services.labels import import_csv as label_import
from loupe.services.projects import core as project_service
from loupe.services.reports import core as reports

router = APIRouter(tags=["exports"])

MAX_REPORT_ROWS = 2000
_CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV with a header row"}
}
_ZIP_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/zip": {}},
        "description": "labels.csv, classes/metrics.json, manifest.json",
    }
}


def _filter(
    case_id: int | None, since: str | None, until: str | None, labelled_only: bool
) -> exports.ExportFilter:
    return exports.ExportFilter(
        case_id=case_id,
        since=exports.parse_when(since),
        until=exports.parse_when(until, end_of_day=True),
        labelled_only=labelled_only,
    )


def _attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


@router.get(
    "/projects/{project_id}/export.csv",
    response_class=StreamingResponse,
    responses=_CSV_RESPONSE,
)
def export_csv(
    project: ViewerProject,
    settings: SettingsDep,
    case_id: OptionalIdQuery = None,
    since: str | None = Query(None, description="labelled at or after (ISO date or date-time)"),
    until: str | None = Query(None, description="labelled before (a date includes that day)"),
    labelled_only: bool = Query(False, description="only items with a human label"),
    bom: bool = Query(True, description="start with a UTF-8 byte-order mark (for Excel)"),
    raw: bool = Query(
        False, description="no ' before text cells starting with = + - @ (formula escaping off)"
    ),
) -> StreamingResponse:
    """One row per item, streamed as it is read (see ``loupe.services.exports.core``)."""
    f = _filter(case_id, since, until, labelled_only)
    exports.check_export(settings, project.id, f)
    name = exports.export_basename(project.name, ".csv")
    return StreamingResponse(
        exports.stream_csv(settings, project.id, f, bom=bom, raw=raw),
        media_type="text/csv; charset=utf-8",
        headers=_attachment(name),
    )


@router.get(
    "/projects/{project_id}/export.zip",
    response_class=StreamingResponse,
    responses=_ZIP_RESPONSE,
)
def export_zip(
    project: ViewerProject,
    settings: SettingsDep,
    include_images: bool = Query(False, description="add images/<class>/<file>"),
    split_seed: int = Query(0, ge=0, le=2**31 - 1),
    split: str = Query("0.8,0.1,0.1", description="train,val,test fractions"),
    case_id: OptionalIdQuery = None,
    since: str | None = Query(None),
    until: str | None = Query(None),
    labelled_only: bool = Query(False),
    raw: bool = Query(
        False, description="no ' before text cells starting with = + - @ (formula escaping off)"
    ),
) -> StreamingResponse:
    """The dataset ZIP, streamed while it is built (for big image sets prefer a job)."""
    try:
        fractions = tuple(float(x) for x in split.split(","))
    except ValueError as exc:
        raise LoupeError(
            ErrorCode.INVALID, f"split {split!r}: three numbers, e.g. 0.8,0.1,0.1"
        ) from exc
    if len(fractions) != 3:
        raise LoupeError(ErrorCode.INVALID, f"split {split!r}: three numbers, e.g. 0.8,0.1,0.1")
    options = exports_zip.DatasetOptions(
        include_images=include_images,
        split_seed=split_seed,
        split=(fractions[0], fractions[1], fractions[2]),
        filter=_filter(case_id, since, until, labelled_only),
        raw=raw,
    )
    exports.check_export(settings, project.id, options.filter)
    name = exports.export_basename(project.name, ".zip")
    return StreamingResponse(
        exports_zip.stream_dataset_zip(settings, project.id, options),
        media_type="application/zip",
        headers=_attachment(name),
    )


@router.post("/projects/{project_id}/exports", response_model=JobPublic, status_code=202)
def start_export(
    body: ExportCreate,
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
) -> Job:
    """Queue an export job; follow it at ``/jobs/{id}`` and fetch the file from
    ``/exports/{id}/download`` when it is done."""
    get_exporter(body.format, project.task)  # 422 for an unknown or unsuitable format
    f = _filter(body.case_id, body.since, body.until, body.labelled_only)
    exports.check_export(settings, project.id, f)
    db.commit()  # submit() writes in a transaction of its own
    params = body.model_dump()
    params.update(project_id=project.id, user_id=user.id, since=exports.iso(f.since) or None,
                  until=exports.iso(f.until) or None)  # fmt: skip
    return job_service.submit(
        settings,
        kind=exports_zip.EXPORT_KIND,
        project_id=project.id,
        params=params,
        user_id=user.id,
    )


@router.get(
    "/exports/{job_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}, "text/csv": {}}}},
)
def download_export(
    user: CurrentUser, db: SessionDep, settings: SettingsDep, job_id: int = Path(ge=1, le=MAX_ID)
) -> FileResponse:
    """The file written by an export job (members of its project only)."""
    job = db.get(Job, job_id)
    project = db.get(Project, job.project_id) if job and job.project_id else None
    role = project_role(db, project, user) if project is not None else None
    if job is None or job.kind != exports_zip.EXPORT_KIND or role is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"export {job_id} not found")
    if ROLE_RANK[role] < ROLE_RANK[ProjectRole.viewer.value]:
        raise LoupeError(ErrorCode.FORBIDDEN, "this needs the viewer role")
    if job.status != JobStatus.done.value:
        raise LoupeError(ErrorCode.CONFLICT, f"export {job_id} is {job.status}, not done")
    path = exports_zip.export_file_for(settings, job.result)
    fmt = (job.result or {}).get("format", "zip")
    return FileResponse(
        path,
        media_type="application/zip" if fmt == "zip" else "text/csv; charset=utf-8",
        filename=str((job.result or {}).get("filename") or path.name),
    )


@router.post("/projects/{project_id}/labels/import", response_model=LabelImportReport)
def import_labels(
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(description="CSV (UTF-8) or a Loupe dataset ZIP"),
    dry_run: bool = Form(False, description="only report what would change"),
    overwrite: bool = Form(False, description="replace differing human labels"),
) -> dict[str, Any]:
    """Import labels matched by sha256 or file name; see ``loupe.services.labels.import_csv``."""
    db.commit()  # the import writes in a session of its own
    report = label_import.import_labels(
        settings, project.id, file.file, dry_run=dry_run, overwrite=overwrite, user_id=user.id
    )
    return report.to_json(max_rows=MAX_REPORT_ROWS)


def report_public(report: Report, project_name: str | None) -> ReportPublic:
    params = report.params or {}
    return ReportPublic(
        id=report.id,
        project_id=report.project_id,
        project_name=project_name or params.get("project_name"),
        case_id=report.case_id,
        case_name=params.get("case_name"),
        user_id=report.user_id,
        kind=report.kind,
        sha256=report.sha256,
        size_bytes=params.get("size_bytes"),
        params=params,
        stale=bool(params.get("stale")),
        created_at=report.created_at,
        download_url=f"/api/reports/{report.id}/download",
    )


@router.post(
    "/projects/{project_id}/cases/{case_id}/report", response_model=ReportPublic, status_code=201
)
def generate_report(
    project: AnnotatorProject,
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    case_id: int = Path(ge=1, le=MAX_ID),
) -> ReportPublic:
    """Generate the case's PDF report and add it to the caller's history."""
    project_service.get_case(db, project, case_id)
    db.commit()  # the report is recorded in a transaction of its own
    report = reports.generate_case_report(settings, project.id, case_id, user.id)
    return report_public(report, project.name)


@router.get("/projects/{project_id}/reports", response_model=ReportsPublic)
def list_reports(
    project: ViewerProject,
    db: SessionDep,
    case_id: OptionalIdQuery = None,
    limit: int = Query(100, ge=1, le=500),
    offset: Offset = 0,
) -> ReportsPublic:
    """The project's generated reports, newest first."""
    rows, count = reports.project_reports(
        db, project.id, case_id=case_id, limit=limit, offset=offset
    )
    return ReportsPublic(data=[report_public(r, project.name) for r in rows], count=count)


@router.post("/projects/import-dataset", response_model=DatasetImportPublic, status_code=201)
def import_dataset(
    user: CurrentUser,
    db: SessionDep,
    settings: SettingsDep,
    file: UploadFile = File(description="A dataset ZIP exported by Loupe"),
    name: str | None = Form(None, max_length=200, description="name of the new project"),
) -> dict[str, Any]:
    """Create a project (owned by the caller) from a Loupe dataset ZIP: items, classes, labels."""
    from loupe.services.items.ingest import save_upload
    from loupe.services.labels.import_zip import import_dataset_zip

    db.commit()  # the import writes in sessions of its own
    path = save_upload(settings, file.file, "dataset.zip", max_bytes=settings.max_upload_bytes)
    try:
        return import_dataset_zip(settings, path, owner_id=user.id, name=name)
    finally:
        path.unlink(missing_ok=True)
