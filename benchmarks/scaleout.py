"""Scale-out: ingest, embedding and drafting throughput with 1 and 2 ``loupe worker``
processes.

Server set-up: PostgreSQL (a fresh database created, migrated and dropped by this
script on the server at ``LOUPE_BENCH_PG_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and Redis
(``LOUPE_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/14``, under a queue
name of its own whose keys are deleted afterwards). For each worker count, a
fresh database and LOUPE_HOME; the workers (one job thread each) are started and
warmed with a ``selftest`` job, then the clock runs over:

1. an ``ingest`` job of ``--n`` real images (the images of ``benchmarks/ingest.py``:
   512x512 crops of the photos shipped with scikit-image, 3 in 4 JPEG, 1 in 4 PNG),
   split into chunk jobs of ``--chunk`` files (hash, probe, thumbnail, item rows);
2. an ``embed`` job of every item with ``--members`` (default ``effnet-lite0``),
   split into chunk jobs of ``--chunk`` items, assembled into the feature store;
3. (not timed) 20 labels and a training in this process (the features are cached),
   then ``--n`` more images imported with drafting off; timed: the ``predict`` job
   that drafts them with the new version, in chunks of ``--chunk`` (each embeds its
   items and drafts them).

Printed: images/s for each (``predict``: new images drafted per second) and the
ratio 2 workers / 1 worker (target >= 1.7 on this 2-core machine), twice: workers
unpinned (a worker may use both cores: its ingest threads and ONNX Runtime threads
already do, so a second worker on the same two cores has little left to add) and
pinned to one core each with ``taskset`` (as if each worker were a machine of its
own: the chunk jobs' scale-out). Other
processes on the machine share its two cores: the figures are only as quiet as the
machine (the load average is printed with them).

Run: ``.venv/bin/python benchmarks/scaleout.py [--n 2000] [--chunk 250]``
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PG_ADMIN_URL = os.environ.get(
    "LOUPE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("LOUPE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
TARGET_RATIO = 1.7


# --- shared with load.py ---------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, migrated PostgreSQL database; dropped afterwards. Yields its URL."""
    from sqlalchemy import create_engine, text

    from loupe.db.migrate import upgrade
    from loupe.db.session import get_engine

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"{PG_ADMIN_URL.rpartition('/')[0]}/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def server_env(home: Path, db_url: str, queue_name: str) -> dict[str, str]:
    """The environment of every process of one deployment (web, workers, this one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOUPE_")}
    env.update(
        LOUPE_HOME=str(home),
        LOUPE_DATABASE_URL=db_url,
        LOUPE_QUEUE_URL=REDIS_URL,
        LOUPE_QUEUE_NAME=queue_name,
        LOUPE_SECRET_KEY="bench-" + uuid.uuid4().hex * 2,
    )
    return env


def use_env(env: dict[str, str]) -> Any:
    """Make this process a producer of that deployment; return its Settings."""
    from loupe.settings import Settings, get_settings

    for key in [k for k in os.environ if k.startswith("LOUPE_")]:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("LOUPE_")})
    get_settings.cache_clear()
    settings = Settings()
    settings.ensure_dirs()
    return settings


@contextlib.contextmanager
def workers(
    env: dict[str, str], count: int, log_dir: Path, *, pin: bool = False, nice: int = 0
) -> Iterator[list[int]]:
    """``count`` ``loupe worker`` processes (one job thread each); yields their pids.

    With ``pin``, worker k may use core k only (``taskset``): one core per worker,
    as if each ran on a machine of its own. ``nice`` lowers their CPU priority
    (``loupe worker --nice``), as for a worker on the web host.
    """
    procs = []
    cores = os.cpu_count() or 1
    for k in range(count):
        prefix = ["taskset", "-c", str(k % cores)] if pin else []
        with (log_dir / f"worker-{k}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    [
                        *prefix,
                        sys.executable,
                        "-m",
                        "loupe.cli",
                        "worker",
                        *(["--nice", str(nice)] if nice else []),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_job(settings: Any, job_id: int, timeout_s: float, log_dir: Path) -> Any:
    """Poll a job until it ends; raise with the workers' logs if it fails or hangs."""
    from loupe.jobs.core import fetch_job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = fetch_job(settings, job_id)
        if job.status in ("done", "failed", "cancelled"):
            if job.status != "done":
                logs = "".join(p.read_text()[-2000:] for p in log_dir.glob("worker-*.log"))
                raise RuntimeError(f"job {job_id} ({job.kind}) {job.status}: {job.error}\n{logs}")
            return job
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} did not end in {timeout_s} s")


def flush_queue(settings: Any) -> None:
    """Delete this deployment's queue keys in Redis (its queue name only)."""
    from loupe.jobs.queue import get_huey
    from loupe.jobs.registry import QUEUES

    for queue in QUEUES:
        get_huey(settings, queue).storage.flush_all()


def make_owner_project(settings: Any, name: str) -> tuple[int, int]:
    from loupe.db.session import session_scope
    from loupe.services.auth.core import create_user
    from loupe.services.projects.core import create_project

    with session_scope(settings.db_url) as db:
        owner = create_user(db, email="bench@example.org", password="bench-password-1")
        project = create_project(
            db,
            name=name,
            task="classify",
            schema={"classes": [{"name": "a"}, {"name": "b"}]},
            owner_id=owner.id,
            settings={},
        )
        return owner.id, project.id


# --- the measurement -------------------------------------------------------------------


def warm_backbones(settings: Any, members: list[str], image: Path) -> None:
    """Share one backbone cache (ONNX exports) between runs and export it before the
    clock runs: a one-time cost per machine, not part of the throughput."""
    from loupe.features import get_backbone

    shared = HERE / ".cache" / "backbones"
    shared.mkdir(parents=True, exist_ok=True)
    settings.home.mkdir(parents=True, exist_ok=True)
    link = settings.home / "cache"
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)
    for name in members:
        backbone = get_backbone(name, weights_dir=settings.weights, cache_dir=link)
        backbone.embed_paths([image])


def measure_predict(
    settings: Any, user_id: int, project_id: int, more: Path, chunk: int, log_dir: Path
) -> float:
    """Train on 20 labels (here, features cached), import the images of ``more`` with
    drafting off, then time the ``predict`` job that drafts them; returns seconds."""
    from sqlalchemy import insert, select, update

    from loupe.db.models import Annotation, Item, Project
    from loupe.db.session import session_scope
    from loupe.jobs.core import submit
    from loupe.services.training.predict import request_prediction
    from loupe.services.training.train import train_project

    with session_scope(settings.db_url) as db:
        ids = list(
            db.scalars(select(Item.id).where(Item.project_id == project_id).order_by(Item.id))
        )[:20]
        db.execute(
            insert(Annotation),
            [
                {
                    "project_id": project_id,
                    "item_id": item_id,
                    "kind": "class",
                    "label": ("a", "b")[k % 2],
                    "origin": "human",
                    "version": 1,
                    "updated_by": user_id,
                }
                for k, item_id in enumerate(ids)
            ],
        )
        project = db.get(Project, project_id)
        assert project is not None
        db.execute(
            update(Project)
            .where(Project.id == project_id)
            .values(settings={**(project.settings or {}), "draft_new_items": False})
        )
    train_project(settings, project_id)
    job = submit(
        settings,
        kind="ingest",
        project_id=project_id,
        params={"project_id": project_id, "paths": [str(more)], "chunk_size": chunk},
        user_id=user_id,
    )
    job = wait_job(settings, job.id, 1800, log_dir)
    added = int(job.result["imported"])
    t0 = time.perf_counter()
    job = request_prediction(settings, project_id, user_id=user_id, chunk_size=chunk)
    job = wait_job(settings, job.id, 3600, log_dir)
    seconds = time.perf_counter() - t0
    if job.result["drafted"] != added:
        raise RuntimeError(f"predict did not draft all {added} new items: {job.result}")
    return seconds


def measure(
    count: int, folder: Path, more: Path, n: int, chunk: int, members: list[str], *, pin: bool
) -> dict[str, Any]:
    from loupe.jobs.core import submit

    with (
        tempfile.TemporaryDirectory(prefix="loupe-scaleout-") as tmp,
        fresh_database("loupe_bench_scaleout") as db_url,
    ):
        home = Path(tmp) / "home"
        env = server_env(home, db_url, f"loupe_bench_{uuid.uuid4().hex[:10]}")
        settings = use_env(env)
        try:
            warm_backbones(settings, members, next(folder.glob("*.jpg")))
            user_id, project_id = make_owner_project(settings, f"scale-out x{count}")
            with workers(env, count, Path(tmp), pin=pin):
                for _ in range(count):  # every worker up and warm
                    warm = submit(
                        settings,
                        kind="selftest",
                        project_id=None,
                        params={"steps": 1},
                        user_id=user_id,
                    )
                    wait_job(settings, warm.id, 120, Path(tmp))
                t0 = time.perf_counter()
                job = submit(
                    settings,
                    kind="ingest",
                    project_id=project_id,
                    params={"project_id": project_id, "paths": [str(folder)], "chunk_size": chunk},
                    user_id=user_id,
                )
                job = wait_job(settings, job.id, 1800, Path(tmp))
                ingest_s = time.perf_counter() - t0
                if job.result["imported"] != n or job.result["failed"]:
                    raise RuntimeError(f"ingest did not import all {n} images: {job.result}")
                t0 = time.perf_counter()
                job = submit(
                    settings,
                    kind="embed",
                    project_id=project_id,
                    params={"project_id": project_id, "members": members, "chunk_size": chunk},
                    user_id=user_id,
                )
                job = wait_job(settings, job.id, 3600, Path(tmp))
                embed_s = time.perf_counter() - t0
                if job.result["unreadable"] or job.result["items"] != n:
                    raise RuntimeError(f"embedding did not cover all {n} items: {job.result}")
                chunks = job.result["chunks"]
                predict_s = measure_predict(settings, user_id, project_id, more, chunk, Path(tmp))
            return {
                "ingest": n / ingest_s,
                "embed": n / embed_s,
                "predict": n / predict_s,
                "ingest_s": ingest_s,
                "embed_s": embed_s,
                "predict_s": predict_s,
                "chunks": chunks,
            }
        finally:
            flush_queue(settings)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from ingest import make_images
    from loupe.plugins import load_plugins

    load_plugins()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="images (default 1000)")
    parser.add_argument("--chunk", type=int, default=250, help="files or items per chunk")
    parser.add_argument("--members", nargs="+", default=["effnet-lite0"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--pin",
        choices=["no", "yes", "both"],
        default="both",
        help="no: workers share every core; yes: one core per worker (taskset)",
    )
    args = parser.parse_args(argv)
    folder = HERE / ".cache" / f"ingest-{args.n}"
    print(f"preparing {args.n} images in {folder} (skimage.data photos) ...", flush=True)
    make_images(folder, args.n)
    more = HERE / ".cache" / f"ingest-{args.n}-more"
    make_images(more, args.n, first=args.n)
    print(f"PostgreSQL {PG_ADMIN_URL.rpartition('/')[0]}/<fresh>, Redis {REDIS_URL}", flush=True)
    modes = {"no": [False], "yes": [True], "both": [False, True]}[args.pin]
    for pin in modes:
        print(
            "workers pinned to one core each (taskset)"
            if pin
            else "workers unpinned (each may use every core)",
            flush=True,
        )
        results: dict[int, dict[str, Any]] = {}
        for count in args.workers:
            res = results[count] = measure(
                count, folder, more, args.n, args.chunk, args.members, pin=pin
            )
            print(
                f"  {count} worker(s): ingest {res['ingest']:7.1f} images/s"
                f" ({res['ingest_s']:.1f} s)   embed {'+'.join(args.members)}"
                f" {res['embed']:6.1f} images/s ({res['embed_s']:.1f} s, {res['chunks']} chunks)"
                f"   predict {res['predict']:6.1f} images/s ({res['predict_s']:.1f} s)"
                f"   load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
        if 1 in results and 2 in results:
            for key in ("ingest", "embed", "predict"):
                ratio = results[2][key] / results[1][key]
                verdict = "ok" if ratio >= TARGET_RATIO else "MISSED"
                print(
                    f"  ratio {key} throughput 2 workers / 1 worker"
                    f"{' (pinned)' if pin else ''}: {ratio:.2f}x "
                    f"(target >= {TARGET_RATIO}x: {verdict})",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    raise SystemExit(main())
