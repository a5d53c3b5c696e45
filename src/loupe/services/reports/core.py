"""Case reports: build the PDF, store it, list the history.

A report of a *finished* case depends only on what was true when it was
finished: its date is the case's ``finished_at``, its model is the version that
was the newest ready one at that moment, and every list is sorted, so
regenerating it gives a byte-identical PDF (the same sha256, the same file).
An open case's report is dated now and says it is a draft.

The case's data is gathered by :mod:`loupe.services.reports.data`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import Case, Membership, Project, Report, User
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.fsutil import atomic_write
from loupe.reports.case_report import build_case_pdf
from loupe.services.reports.data import RESOLUTION_ORDER as RESOLUTION_ORDER
from loupe.services.reports.data import collect_case_data
from loupe.settings import Settings

REPORT_KIND = "case_pdf"


# --- generating and listing ----------------------------------------------------------------


def _store(settings: Settings, project_id: int, case_id: int, pdf: bytes, sha: str) -> Path:
    folder = settings.reports_dir / str(project_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"case-{case_id}-{sha[:16]}.pdf"
    if path.is_file():
        return path  # the same bytes were generated before
    return atomic_write(path, pdf)


def build_report_pdf(
    settings: Settings, project_id: int, case_id: int
) -> tuple[bytes, dict[str, Any]]:
    """The PDF of a case and the report's params (no file written, no row)."""
    with session_scope(settings.db_url, write=False) as db:
        project = db.get(Project, project_id)
        case = db.get(Case, case_id)
        if project is None:
            raise LoupeError(ErrorCode.NOT_FOUND, f"project {project_id} not found")
        if case is None or case.project_id != project_id:
            raise LoupeError(
                ErrorCode.NOT_FOUND, f"case {case_id} not found in project {project_id}"
            )
        data = collect_case_data(settings, db, project, case)
    params = {
        "case_name": data.case_name,
        "case_status": data.case_status,
        "project_name": data.project_name,
        "items": data.items_total,
        "labelled": data.labelled,
        "flagged": len(data.flagged),
        "model_version": data.model.number if data.model else None,
        "report_date": data.generated_at.isoformat(),
    }
    return build_case_pdf(data), params


def generate_case_report(
    settings: Settings, project_id: int, case_id: int, user_id: int | None
) -> Report:
    """Build, store and record a case report; returns the ``Report`` row (detached)."""
    pdf, params = build_report_pdf(settings, project_id, case_id)
    sha = hashlib.sha256(pdf).hexdigest()
    path = _store(settings, project_id, case_id, pdf, sha)
    params["size_bytes"] = len(pdf)
    with session_scope(settings.db_url) as db:
        report = Report(
            project_id=project_id,
            case_id=case_id,
            user_id=user_id,
            kind=REPORT_KIND,
            path=str(path),
            sha256=sha,
            params=params,
        )
        db.add(report)
        db.flush()
    return report


def report_file(settings: Settings, report: Report) -> Path:
    """The stored PDF of a report (only inside ``reports_dir``)."""
    root = settings.reports_dir.resolve()
    path = Path(report.path).resolve()
    if root not in path.parents or not path.is_file():
        raise LoupeError(
            ErrorCode.NOT_FOUND, f"the file of report {report.id} is gone; generate it again"
        )
    return path


def project_reports(
    db: Session, project_id: int, *, case_id: int | None = None, limit: int = 100, offset: int = 0
) -> tuple[list[Report], int]:
    """A project's reports (optionally of one case), newest first, and their count."""
    where = [Report.project_id == project_id]
    if case_id is not None:
        where.append(Report.case_id == case_id)
    count = db.scalar(select(func.count(Report.id)).where(*where)) or 0
    rows = db.scalars(
        select(Report).where(*where).order_by(Report.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), count


def user_reports(
    db: Session, user: User, *, limit: int = 100, offset: int = 0
) -> tuple[list[Report], int]:
    """The reports ``user`` generated, in projects they can still open (newest first)."""
    where = [Report.user_id == user.id]
    if not user.is_admin:
        member_of = select(Membership.project_id).where(Membership.user_id == user.id)
        where.append(Report.project_id.in_(member_of))
    count = db.scalar(select(func.count(Report.id)).where(*where)) or 0
    rows = db.scalars(
        select(Report).where(*where).order_by(Report.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), count


def readable_report(db: Session, user: User, report_id: int) -> Report:
    """A report whose project ``user`` is a member of (site admins: any); else NOT_FOUND."""
    report = db.get(Report, report_id)
    allowed = report is not None and (
        user.is_admin
        or db.scalar(
            select(Membership.id).where(
                Membership.project_id == report.project_id, Membership.user_id == user.id
            )
        )
        is not None
    )
    if report is None or not allowed:
        raise LoupeError(ErrorCode.NOT_FOUND, f"report {report_id} not found")
    return report
