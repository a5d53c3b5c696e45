"""``loupe backup PATH`` and ``loupe restore PATH`` (see loupe.services.backup).

Added to the main app by :func:`register`; thin, the work is in the service.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from loupe.cli_common import _fail, _migrated_settings, _settings
from loupe.errors import LoupeError


@contextmanager
def _bar(quiet: bool) -> Iterator[Callable[[int, int, str], None]]:
    """A rich progress bar on a terminal; the callback the services take."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        transient=quiet,
        disable=quiet or not sys.stderr.isatty(),
    ) as bar:
        task_id = bar.add_task("backup", total=None)

        def _progress(done: int, total: int, what: str) -> None:
            bar.update(task_id, completed=done, total=total or None, description=what)

        yield _progress


def backup_command(
    path: Annotated[Path, typer.Argument(help="New (or empty) folder to write the backup to")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary")] = False,
) -> None:
    """Back up the database, media, features and models; safe while the server runs."""
    from loupe.services.backup import core

    settings = _migrated_settings()
    try:
        with _bar(as_json) as progress:
            manifest = core.backup(settings, path.resolve(), progress=progress)
    except LoupeError as exc:
        raise _fail(exc) from exc
    summary = core.describe(manifest)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    typer.echo(
        f"backup written to {path}: {summary['files']} files, {summary['bytes']} bytes, "
        f"counts {json.dumps(summary['counts'])}"
    )
    if manifest.missing:
        typer.secho(
            f"warning: {len(manifest.missing)} referenced file(s) were missing: "
            + ", ".join(manifest.missing[:5]),
            fg="yellow",
            err=True,
        )


def restore_command(
    path: Annotated[Path, typer.Argument(help="A folder written by `loupe backup`")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty LOUPE_HOME / database")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary")] = False,
) -> None:
    """Restore a backup into LOUPE_HOME and LOUPE_DATABASE_URL (fresh ones, or --force)."""
    from loupe.services.backup import core

    settings = _settings()  # no migration: the target database must stay empty
    try:
        with _bar(as_json) as progress:
            report = core.restore(settings, path.resolve(), force=force, progress=progress)
    except LoupeError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(report.to_json()))
    else:
        typer.echo(
            f"restored {report.files} files and {json.dumps(report.counts)}; "
            f"{report.failed_jobs} unfinished job(s) marked failed"
        )
    for warning in report.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)


def register(app: typer.Typer) -> None:
    app.command("backup")(backup_command)
    app.command("restore")(restore_command)
