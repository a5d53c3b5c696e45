"""The ``loupe`` command line: thin, calls the same services as the API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loupe.cli_backup import register as register_backup_commands
from loupe.cli_common import _fail, _migrated_settings, _settings
from loupe.cli_exports import register as register_export_commands
from loupe.errors import LoupeError

if TYPE_CHECKING:
    from loupe.jobs.worker import WorkerProcess

app = typer.Typer(
    help="Loupe: model-assisted labeling for scientific and medical images.",
    no_args_is_help=True,
    add_completion=False,
)
user_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True)
project_app = typer.Typer(help="Manage projects.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
app.add_typer(user_app, name="user")
app.add_typer(project_app, name="project")
app.add_typer(db_app, name="db")

# The worker child of `loupe serve`: its CPU priority (nice +10, below the web
# server's) and how long it lets running jobs finish when the server stops
# (jobs still running then are marked failed: retry them).
WORKER_NICE = 10
WORKER_SHUTDOWN_S = 5.0


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    worker: Annotated[
        bool,
        typer.Option(help="Start a job worker process (off when LOUPE_QUEUE_URL is redis)"),
    ] = True,
    workers: Annotated[
        int, typer.Option(min=1, help="Web server processes (share the port; see docs/deploy.md)")
    ] = 1,
) -> None:
    """Run the web app and API and, by default, a job worker in a child process.

    The worker (``loupe worker`` on every queue, at nice +10) runs the model
    code, so the web process never imports torch and a request never waits on
    a training; it is stopped with the server, restarted if it dies, and stops
    by itself if the server is killed.
    """
    import uvicorn

    from loupe.api.app import create_app
    from loupe.jobs.registry import QUEUES

    settings = _migrated_settings()
    child = None
    if worker and not (settings.queue_url or "").startswith("redis"):
        child = _start_worker_process(settings.worker_threads)
    try:
        if workers > 1:
            # Each process builds its own app (the schema was migrated above, once).
            uvicorn.run("loupe.cli:web_app", factory=True, host=host, port=port, workers=workers)
        else:
            uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
    finally:
        if child is not None:
            # Each queue's jobs get WORKER_SHUTDOWN_S in turn, then the child exits.
            child.stop(timeout_s=WORKER_SHUTDOWN_S * len(QUEUES) + 5)


def web_app() -> Any:
    """The app of one ``loupe serve --workers N`` process (uvicorn's factory)."""
    from loupe.api.app import create_app

    return create_app(_settings(), migrate=False)


def _start_worker_process(threads: int) -> WorkerProcess:
    from loupe.jobs.registry import QUEUES
    from loupe.jobs.worker import WorkerProcess

    argv = [sys.executable, "-m", "loupe.cli", "worker", "--workers", str(threads)]
    for queue in QUEUES:
        argv += ["--queue", queue]
    argv += [
        "--nice",
        str(WORKER_NICE),
        "--parent-pid",
        str(os.getpid()),
        "--shutdown-timeout",
        str(WORKER_SHUTDOWN_S),
    ]
    return WorkerProcess(argv).start()


@app.command()
def worker(
    workers: Annotated[int, typer.Option(help="Worker threads per queue")] = 1,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            help="Queue to consume: cpu (the default) or gpu; repeat for several. "
            "Job kinds declare their queue; `loupe serve` consumes all of them."
        ),
    ] = None,
    nice: Annotated[int, typer.Option(help="Lower this process's CPU priority by N")] = 0,
    parent_pid: Annotated[
        int | None, typer.Option(hidden=True, help="Stop when this process dies")
    ] = None,
    shutdown_timeout: Annotated[
        float | None,
        typer.Option(hidden=True, help="Seconds running jobs get on a graceful stop"),
    ] = None,
) -> None:
    """Run a job consumer (for LOUPE_QUEUE_URL=redis://... on any number of machines)."""
    import logging

    from loupe.jobs.registry import DEFAULT_QUEUE, QUEUES
    from loupe.jobs.worker import lower_priority, run_worker

    queues = queue or [DEFAULT_QUEUE]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        typer.secho(f"error: unknown queue(s) {unknown}; use {list(QUEUES)}", fg="red", err=True)
        raise typer.Exit(2)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if nice:
        lower_priority(nice)
    run_worker(
        _migrated_settings(),
        queues=queues,
        workers=workers,
        shutdown_timeout_s=shutdown_timeout,
        parent_pid=parent_pid,
    )


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Only prepare the data")] = False,
) -> None:
    """Prepare the demo (admin account, demo projects with real images) and serve it."""
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    os.environ["LOUPE_DEMO"] = "1"
    os.environ.setdefault("LOUPE_HOME", "./loupe-demo")
    from loupe.settings import get_settings

    get_settings.cache_clear()
    from loupe.demo import prepare_demo

    settings = _migrated_settings()
    email, password = prepare_demo(settings)
    typer.secho("\n  Loupe demo", bold=True)
    typer.echo(f"  open      http://{host}:{port}")
    typer.echo(f"  log in    {email}")
    typer.echo(f"  password  {password}\n")
    if not no_serve:
        serve(host=host, port=port, worker=True)


@app.command()
def openapi() -> None:
    """Print the OpenAPI schema (also served at /api/openapi.json)."""
    os.environ.setdefault("LOUPE_DEMO", "1")  # the schema needs no secret
    from loupe.api.app import create_app

    typer.echo(json.dumps(create_app(_settings(), migrate=False).openapi(), indent=2))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (the server also does this on start)."""
    settings = _migrated_settings()
    typer.echo(f"database at head: {settings.db_url.split('@')[-1]}")


@user_app.command("create")
def user_create(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="Site administrator")] = False,
    name: Annotated[str, typer.Option(help="Display name")] = "",
) -> None:
    """Create a user; the password comes from LOUPE_PASSWORD or a prompt."""
    from loupe.db.session import session_scope
    from loupe.services.auth import core as auth

    password = os.environ.get("LOUPE_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            typer.secho("error: set LOUPE_PASSWORD or run in a terminal", fg="red", err=True)
            raise typer.Exit(2)
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url) as db:
            user = auth.create_user(db, email=email, password=password, name=name, admin=admin)
            uid, role = user.id, user.role
    except LoupeError as exc:
        raise _fail(exc) from exc
    typer.echo(f"created user {uid} {email} ({role})")


@project_app.command("create")
def project_create(
    name: str,
    task: Annotated[str, typer.Option(help="classify | score | segment | volume")],
    classes: Annotated[str | None, typer.Option(help="Comma-separated class names")] = None,
    metrics: Annotated[
        str | None, typer.Option(help="name:min:max:step,... e.g. fibrosis:0:4:1")
    ] = None,
    schema: Annotated[Path | None, typer.Option(help="JSON file with the schema")] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner e-mail (default: the first site admin)")
    ] = None,
    case_pattern: Annotated[
        str | None, typer.Option(help="Regex with (?P<case>...) for file names")
    ] = None,
) -> None:
    """Create a project and print its id."""
    from sqlalchemy import select

    from loupe.db.models import SiteRole, User
    from loupe.db.session import session_scope
    from loupe.errors import ErrorCode
    from loupe.services.projects import core as projects
    from loupe.services.projects import schema as project_schema

    settings = _migrated_settings()
    try:
        if schema is not None:
            try:
                data = json.loads(schema.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise LoupeError(ErrorCode.INVALID, f"cannot read schema {schema}: {exc}") from exc
        else:
            data = project_schema.schema_from_cli(task, classes=classes, metrics=metrics)
        with session_scope(settings.db_url) as db:
            q = select(User).order_by(User.id)
            q = (
                q.where(User.email == owner.lower())
                if owner
                else q.where(User.role == SiteRole.admin.value)
            )
            user = db.scalars(q).first()
            if user is None:
                raise LoupeError(
                    ErrorCode.NOT_FOUND,
                    f"no user {owner!r}" if owner else "create an admin first: loupe user create",
                )
            extra = {"case_pattern": case_pattern} if case_pattern else {}
            project = projects.create_project(
                db, name=name, task=task, schema=data, owner_id=user.id, settings=extra
            )
            pid = project.id
    except LoupeError as exc:
        raise _fail(exc) from exc
    typer.echo(pid)


@project_app.command("set")
def project_set(
    project: Annotated[str, typer.Argument(help="Project id or name")],
    case_pattern: Annotated[
        str | None,
        typer.Option(help="Regex (RE2) with (?P<case>...) for file names; '' removes it"),
    ] = None,
    retrain_every: Annotated[
        int | None, typer.Option(help="Retrain after this many new labels (0: never)")
    ] = None,
) -> None:
    """Change a project's settings (the same checks as the web app's settings)."""
    from loupe.db.session import session_scope
    from loupe.services.projects import core as projects

    changes: dict[str, object] = {}
    if case_pattern is not None:
        changes["case_pattern"] = case_pattern or None
    if retrain_every is not None:
        changes["retrain_every"] = retrain_every
    if not changes:
        typer.echo("nothing to change: give --case-pattern or --retrain-every", err=True)
        raise typer.Exit(2)
    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url) as db:
            found = projects.find_project(db, project)
            projects.update_project(db, found, settings=changes)
            shown = {k: found.settings.get(k) for k in changes}
    except LoupeError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(shown))


@app.command()
def ingest(
    project: str,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (recursive)")],
    case_pattern: Annotated[
        str | None, typer.Option(help="Regex with (?P<case>...) applied to file names")
    ] = None,
    case: Annotated[str | None, typer.Option(help="Put every file into this case")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary")] = False,
) -> None:
    """Import images and volumes; exit 0 if all went in, 3 if some files failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from loupe.db.session import session_scope
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.projects import core as projects

    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url) as db:
            pid = projects.find_project(db, project).id
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=as_json,
            disable=as_json or not sys.stderr.isatty(),
        ) as bar:
            task_id = bar.add_task("importing", total=None)

            def _progress(done: int, total: int, _name: str) -> None:
                bar.update(task_id, completed=done, total=total)

            report = ingest_paths(
                settings,
                pid,
                [p.resolve() for p in paths],
                case_pattern=case_pattern,
                case_name=case,
                progress=_progress,
            )
    except LoupeError as exc:
        raise _fail(exc) from exc
    summary = report.to_json()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        typer.echo(
            f"imported {summary['imported']}, already there {summary['existing']}, "
            f"failed {len(summary['failed'])}"
        )
        for f in summary["failed"]:
            typer.secho(f"  skipped {f['path']}: {f['reason']}", fg="yellow", err=True)
    raise typer.Exit(3 if summary["failed"] else 0)


@app.command()
def train(
    project: str,
    mode: Annotated[str, typer.Option(help="frozen (heads on cached features) or finetune")] = (
        "frozen"
    ),
    wait: Annotated[bool, typer.Option(help="Run here and wait (default) or only queue")] = True,
) -> None:
    """Train the project's ensemble on its human labels and draft every item."""
    from rich.progress import BarColumn, Progress, TextColumn

    from loupe.db.session import session_scope
    from loupe.services.projects import core as projects
    from loupe.services.training import train as train_service

    settings = _migrated_settings()
    try:
        with session_scope(settings.db_url, write=False) as db:
            pid = projects.find_project(db, project).id
        if not wait:
            job = train_service.request_training(settings, pid, user_id=None, mode=mode)
            typer.echo(f"queued job {job.id}")
            return
        with Progress(
            TextColumn("{task.description}"), BarColumn(), disable=not sys.stderr.isatty()
        ) as bar:
            task_id = bar.add_task("training", total=1.0)

            def _progress(fraction: float, message: str) -> None:
                bar.update(task_id, completed=fraction, description=message[:60])

            result = train_service.train_project(settings, pid, progress=_progress, mode=mode)
    except LoupeError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps(result, indent=1, default=str))


register_export_commands(app)
register_backup_commands(app)

if __name__ == "__main__":  # pragma: no cover
    app()
