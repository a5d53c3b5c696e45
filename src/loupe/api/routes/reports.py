"""The caller's report history and report downloads.

``GET /reports/mine`` lists the reports the caller generated in projects they
can still open; a report's PDF is served to members of its project only
(anyone else gets 404, as for a missing report).
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Path, Query
from fastapi.responses import FileResponse
from sqlalchemy import select

from loupe.api.deps import CurrentUser, SessionDep, SettingsDep
from loupe.api.params import MAX_ID, Offset
from loupe.api.routes.exports import report_public
from loupe.api.schemas.exports import ReportsPublic
from loupe.db.models import Project
from loupe.services.reports import core as reports

router = APIRouter(tags=["reports"])


@router.get("/reports/mine", response_model=ReportsPublic)
def my_reports(
    user: CurrentUser,
    db: SessionDep,
    limit: int = Query(100, ge=1, le=500),
    offset: Offset = 0,
) -> ReportsPublic:
    """Reports the caller generated, newest first (the history page)."""
    rows, count = reports.user_reports(db, user, limit=limit, offset=offset)
    ids = {r.project_id for r in rows}
    names = dict(db.execute(select(Project.id, Project.name).where(Project.id.in_(ids))).all())
    return ReportsPublic(
        data=[report_public(r, names.get(r.project_id)) for r in rows], count=count
    )


@router.get(
    "/reports/{report_id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"application/pdf": {}}}},
)
def download_report(
    user: CurrentUser, db: SessionDep, settings: SettingsDep, report_id: int = Path(ge=1, le=MAX_ID)
) -> FileResponse:
    """The report's PDF (members of its project only)."""
    report = reports.readable_report(db, user, report_id)
    path = reports.report_file(settings, report)
    case = re.sub(r"[^A-Za-z0-9._-]+", "-", str((report.params or {}).get("case_name") or "case"))
    return FileResponse(
        path, media_type="application/pdf", filename=f"report-{case}-{report.id}.pdf"
    )
