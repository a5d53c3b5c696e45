"""CLI commands for exports, reports and label imports: ``loupe export``,
``loupe report``, ``loupe import-labels`` and ``loupe import-dataset``.

Added to the main app by :func:`register` (called from ``loupe.cli``); thin,
the same services as the API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from loupe.cli_common import _fail, _migrated_settings
from loupe.errors import ErrorCode, LoupeError


def _user_id(db: Any, email: str | None) -> int | None:
    from sqlalchemy import select

    from loupe.db.models import User

    if not email:
        return None
    uid = db.scalar(select(User.id).where(User.email == email.strip().lower()))
    if uid is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"no user {email!r}")
    return int(uid)


def _case_id(db: Any, project_id: int, ref: str | None) -> int | None:
    from sqlalchemy import select

    from loupe.db.models import Case

    if ref is None:
        return None
    case = db.scalar(select(Case).where(Case.project_id == project_id, Case.name == ref))
    if case is None and ref.isdigit():
        found = db.get(Case, int(ref))
        case = found if found is not None and found.project_id == project_id else None
    if case is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"no case {ref!r} in project {project_id}")
    return int(case.id)


def _bar() -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    return Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not sys.stderr.isatty(),
    )


def export(
    project: str,
    fmt: Annotated[str, typer.Option("--format", help="csv or zip (dataset)")] = "csv",
    out: Annotated[
        Path | None, typer.Option(help="Output file (default: a dated name here; '-': stdout)")
    ] = None,
    case: Annotated[str | None, typer.Option(help="Only this case (name or id)")] = None,
    labelled_only: Annotated[
        bool, typer.Option("--labelled-only", help="Only items with a human label")
    ] = False,
    since: Annotated[str | None, typer.Option(help="Labelled at or after (ISO date)")] = None,
    until: Annotated[str | None, typer.Option(help="Labelled up to this date (inclusive)")] = None,
    images: Annotated[
        bool, typer.Option("--images", help="ZIP: include images/<class>/<file>")
    ] = False,
    split_seed: Annotated[int, typer.Option(help="ZIP: seed of the train/val/test split")] = 0,
    split: Annotated[str, typer.Option(help="ZIP: train,val,test fractions")] = "0.8,0.1,0.1",
    raw: Annotated[
        bool,
        typer.Option("--raw", help="CSV cells as stored (no ' before =, +, -, @ text)"),
    ] = False,
) -> None:
    """Export a project as CSV (one row per item) or as a dataset ZIP.

    Text cells a spreadsheet would run as a formula get a leading ' unless --raw.
    """
    from loupe.db.session import session_scope
    from loupe.services.exports import archive as exports_zip
    from loupe.services.exports import core as exports
    from loupe.services.projects import core as projects

    if fmt not in ("csv", "zip"):
        raise _fail(LoupeError(ErrorCode.INVALID, f"--format {fmt!r}: use csv or zip"))
    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url, write=False) as db:
            p = projects.find_project(db, project)
            pid, name = p.id, p.name
            case_id = _case_id(db, pid, case)
        f = exports.ExportFilter(
            case_id=case_id,
            since=exports.parse_when(since),
            until=exports.parse_when(until, end_of_day=True),
            labelled_only=labelled_only,
        )
        if str(out) == "-":
            if fmt != "csv":
                raise LoupeError(ErrorCode.INVALID, "only CSV can go to stdout")
            exports.check_export(settings, pid, f)
            for chunk in exports.stream_csv(settings, pid, f, bom=False, raw=raw):
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return
        target = out or Path(exports.export_basename(name, f".{fmt}"))
        with _bar() as bar:
            task = bar.add_task(f"exporting {fmt}", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if fmt == "csv":
                exports.write_csv(settings, pid, target, f, raw=raw, progress=progress)
                summary: dict[str, Any] = {"path": str(target)}
            else:
                fractions = [float(x) for x in split.split(",")]
                if len(fractions) != 3:
                    raise LoupeError(ErrorCode.INVALID, f"--split {split!r}: three fractions")
                options = exports_zip.DatasetOptions(
                    include_images=images,
                    split_seed=split_seed,
                    split=(fractions[0], fractions[1], fractions[2]),
                    filter=f,
                    raw=raw,
                )
                summary = exports_zip.write_dataset_zip(
                    settings, pid, target, options, progress=progress
                )
    except ValueError as exc:
        raise _fail(LoupeError(ErrorCode.INVALID, str(exc))) from exc
    except LoupeError as exc:
        raise _fail(exc) from exc
    size = target.stat().st_size
    rows = f", {summary['rows']} rows" if "rows" in summary else ""
    typer.echo(f"wrote {target} ({size} bytes{rows})")


def report(
    project: str,
    case: str,
    out: Annotated[Path | None, typer.Option(help="Copy the PDF here too")] = None,
    user: Annotated[
        str | None, typer.Option(help="E-mail of the user whose history records it")
    ] = None,
) -> None:
    """Generate a case's PDF report (stored and listed in the user's history)."""
    import shutil

    from loupe.db.session import session_scope
    from loupe.services.projects import core as projects
    from loupe.services.reports import core as reports

    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url, write=False) as db:
            pid = projects.find_project(db, project).id
            case_id = _case_id(db, pid, case)
            uid = _user_id(db, user)
        assert case_id is not None
        row = reports.generate_case_report(settings, pid, case_id, uid)
    except LoupeError as exc:
        raise _fail(exc) from exc
    stored = Path(row.path)
    if out is not None:
        shutil.copyfile(stored, out)
    typer.echo(f"report {row.id}: {out or stored} (sha256 {row.sha256})")


def import_labels(
    project: str,
    file: Annotated[Path, typer.Argument(help="CSV with sha256 or file name, and labels")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only report what would change")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace differing human labels")
    ] = False,
    user: Annotated[str | None, typer.Option(help="E-mail recorded in the audit trail")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full report as JSON")] = False,
) -> None:
    """Import labels from a CSV; exit 0 when every row applied, 3 when some could not."""
    from loupe.db.session import session_scope
    from loupe.services.labels import import_csv as label_import
    from loupe.services.projects import core as projects

    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url, write=False) as db:
            pid = projects.find_project(db, project).id
            uid = _user_id(db, user)
        result = label_import.import_labels(
            settings, pid, file, dry_run=dry_run, overwrite=overwrite, user_id=uid
        )
    except OSError as exc:
        raise _fail(LoupeError(ErrorCode.INVALID, f"cannot read {file}: {exc}")) from exc
    except LoupeError as exc:
        raise _fail(exc) from exc
    counts = result.counts
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=1))
    else:
        head = "dry run, nothing written" if dry_run else "imported"
        parts = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
        typer.echo(f"{head}: {result.changed} label(s) {'would change' if dry_run else 'set'}")
        typer.echo(f"  {parts or 'no rows'}")
        for row in [r for r in result.rows if r.status not in ("set", "unchanged")][:20]:
            typer.secho(f"  line {row.row} {row.key}: {row.status}: {row.message}", err=True)
    problems = sum(counts[k] for k in ("conflict", "unknown_item", "ambiguous", "invalid"))
    raise typer.Exit(3 if problems else 0)


def import_dataset(
    file: Annotated[Path, typer.Argument(help="A Loupe dataset ZIP (loupe export --format zip)")],
    name: Annotated[str | None, typer.Option(help="Name of the new project")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner e-mail (default: the first site admin)")
    ] = None,
    into: Annotated[str | None, typer.Option(help="Add to this existing project instead")] = None,
) -> None:
    """Create a project from a dataset ZIP: items, classes (or metrics), cases, labels."""
    from sqlalchemy import select

    from loupe.db.models import SiteRole, User
    from loupe.db.session import session_scope
    from loupe.services.labels.import_zip import import_dataset_zip
    from loupe.services.projects import core as projects

    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url, write=False) as db:
            q = select(User.id).order_by(User.id)
            q = (
                q.where(User.email == owner.lower())
                if owner
                else q.where(User.role == SiteRole.admin.value)
            )
            owner_id = db.scalars(q).first()
            if owner_id is None:
                raise LoupeError(
                    ErrorCode.NOT_FOUND,
                    f"no user {owner!r}" if owner else "create an admin first: loupe user create",
                )
            into_id = projects.find_project(db, into).id if into else None
        result = import_dataset_zip(
            settings, file, owner_id=int(owner_id), name=name, project_id=into_id
        )
    except LoupeError as exc:
        raise _fail(exc) from exc
    labels = result["labels"]
    typer.echo(
        f"project {result['project_id']} {result['name']!r}: "
        f"{result['items']['imported']} items imported ({result['items']['existing']} there), "
        f"{result['cases']} put in cases, {labels['changed']} labels set"
    )


def register(app: typer.Typer) -> None:
    """Add the export, report and import commands to the ``loupe`` app."""
    app.command("export")(export)
    app.command("report")(report)
    app.command("import-labels")(import_labels)
    app.command("import-dataset")(import_dataset)
