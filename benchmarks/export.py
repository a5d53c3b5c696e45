"""Export speed and memory: CSV and dataset ZIP (labels only) of a 100,000-item project.

Builds (once, cached in ``benchmarks/.cache/export-<n>/``) a SQLite LOUPE_HOME
with one classify project of ``n`` items in 1,000 cases, every item labelled
by a human (file-name metadata, a note on 1 in 50) and drafted by an active
model version (confidence, 1 in 20 flagged): rows inserted in bulk, not
through the ingest pipeline (no image files are needed for a labels export).

Then it measures, each in a fresh child process so that its peak RSS
(``ru_maxrss``) is the export's alone:

* ``csv``:  ``loupe.services.exports.core.stream_csv`` written to a file;
* ``zip``:  ``loupe.services.exports.archive.write_dataset_zip`` (labels only);
* ``http``: ``GET /api/projects/{id}/export.csv`` from a real uvicorn server
  in the same process, read by an httpx client in chunks (with ``--http``).

The baseline RSS is the child's after imports and a first query; the peak
minus the baseline is what the export itself held. Targets: CSV under 10 s
with flat memory; the peer figure (about 280 s and 1 GB for the same export on
this machine kind) is from the issue.

Run: ``.venv/bin/python benchmarks/export.py [--n 100000] [--http]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
TARGET_S = 10.0
PEER_S = 280.0
PEER_MB = 1024.0
SECRET = "benchmark-only-secret-" + "x" * 40
PROJECT = "Export benchmark"
CLASSES = ["neutrophil", "lymphocyte", "monocyte", "eosinophil", "basophil", "blast"]
FORMAT_VERSION = "2"  # bump when the generated data changes


def _env(home: Path) -> None:
    os.environ["LOUPE_HOME"] = str(home)
    os.environ["LOUPE_SECRET_KEY"] = SECRET
    os.environ.pop("LOUPE_DATABASE_URL", None)
    os.environ.pop("LOUPE_QUEUE_URL", None)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(home: Path, n: int) -> dict[str, Any]:
    """Create (or reuse) the labelled project; returns ``{project_id, token}``."""
    marker = home / "ready.json"
    if marker.is_file():
        info = json.loads(marker.read_text())
        if info.get("format") == FORMAT_VERSION and info.get("n") == n:
            return dict(info)
    if home.exists():
        import shutil

        shutil.rmtree(home)
    home.mkdir(parents=True)
    _env(home)
    import datetime as dt
    import hashlib

    from sqlalchemy import insert, select

    from loupe.db.migrate import upgrade
    from loupe.db.models import Annotation, Case, Item, ModelVersion, Prediction
    from loupe.db.session import session_scope
    from loupe.services.auth import core as auth
    from loupe.services.projects import core as projects
    from loupe.settings import Settings

    settings = Settings()
    settings.ensure_dirs()
    upgrade(settings.db_url)
    t0 = time.perf_counter()
    with session_scope(settings.db_url) as db:
        user = auth.create_user(db, email="bench@example.org", password="x" * 12, admin=True)
        _, token = auth.create_token(db, user, name="bench")
        project = projects.create_project(
            db,
            name=PROJECT,
            task="classify",
            schema={"classes": [{"name": c} for c in CLASSES]},
            owner_id=user.id,
            settings={"case_pattern": r"(?P<case>S-\d+)_(?P<stain>[A-Z]+)_(?P<serial>\d+)"},
        )
        pid, uid = project.id, user.id
        n_cases = max(1, n // 100)
        db.execute(
            insert(Case), [{"project_id": pid, "name": f"S-{c:04d}"} for c in range(n_cases)]
        )
        case_ids = list(db.scalars(select(Case.id).where(Case.project_id == pid).order_by(Case.id)))
        version = ModelVersion(
            project_id=pid,
            number=1,
            status="ready",
            active=True,
            members=["classic", "mobilenet_v2"],
            metrics={"ensemble": {"accuracy": 0.93}},
        )
        db.add(version)
        db.flush()
        vid = version.id
    base = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    chunk = 10_000
    for start in range(0, n, chunk):
        with session_scope(settings.db_url) as db:
            rows = []
            for i in range(start, min(n, start + chunk)):
                case = i % len(case_ids)
                name = f"S-{case:04d}_HE_{i:06d}.png"
                rows.append(
                    {
                        "project_id": pid,
                        "case_id": case_ids[case],
                        "sha256": hashlib.sha256(name.encode()).hexdigest(),
                        "uri": f"/data/slides/{name}",
                        "filename": name,
                        "format": "png",
                        "shape": [96, 96, 3],
                        "axes": "YXC",
                        "size_bytes": 20_000 + i % 5000,
                        "meta": {"stain": "HE", "serial": f"{i:06d}"},
                        "created_by": uid,
                        "created_at": base,
                    }
                )
            ids = list(db.scalars(insert(Item).returning(Item.id), rows))
            db.execute(
                insert(Annotation),
                [
                    {
                        "item_id": item_id,
                        "project_id": pid,
                        "kind": "class",
                        "label": CLASSES[(start + k) % len(CLASSES)],
                        "note": "check again" if (start + k) % 50 == 0 else None,
                        "origin": "human",
                        "version": 1,
                        "updated_by": uid,
                        "updated_at": base + dt.timedelta(seconds=start + k),
                    }
                    for k, item_id in enumerate(ids)
                ],
            )
            db.execute(
                insert(Prediction),
                [
                    {
                        "project_id": pid,
                        "item_id": item_id,
                        "model_version_id": vid,
                        "label": CLASSES[(start + k + (k % 7 == 0)) % len(CLASSES)],
                        "confidence": 0.5 + ((start + k) % 50) / 100,
                        "uncertainty": 0.1,
                        "flagged": (start + k) % 20 == 0,
                        "flag_reason": "low_confidence" if (start + k) % 20 == 0 else None,
                        "output": {},
                        "members": {},
                    }
                    for k, item_id in enumerate(ids)
                ],
            )
    info = {"format": FORMAT_VERSION, "n": n, "project_id": pid, "token": token}
    marker.write_text(json.dumps(info))
    print(f"built {n} labelled items in {time.perf_counter() - t0:.1f} s", flush=True)
    return info


def measure(kind: str, home: Path, info: dict[str, Any]) -> dict[str, Any]:
    """Run one export in this (child) process; report time, size and memory."""
    _env(home)
    from sqlalchemy import func, select

    from loupe.db.models import Item
    from loupe.db.session import session_scope
    from loupe.services.exports import archive as exports_zip
    from loupe.services.exports import core as exports
    from loupe.settings import Settings

    settings = Settings()
    pid = int(info["project_id"])
    with session_scope(settings.db_url, write=False) as db:
        rows = db.scalar(select(func.count(Item.id)).where(Item.project_id == pid)) or 0
    out = settings.exports_dir / f"bench.{'zip' if kind == 'zip' else 'csv'}"
    out.unlink(missing_ok=True)
    if kind == "http":
        return _measure_http(settings, pid, info["token"], rows, out)
    baseline = _rss_mb()
    t0 = time.perf_counter()
    if kind == "csv":
        exports.write_csv(settings, pid, out)
    else:
        exports_zip.write_dataset_zip(settings, pid, out)
    seconds = time.perf_counter() - t0
    return {
        "kind": kind,
        "rows": rows,
        "seconds": seconds,
        "bytes": out.stat().st_size,
        "baseline_mb": baseline,
        "peak_mb": _rss_mb(),
    }


def _measure_http(settings: Any, pid: int, token: str, rows: int, out: Path) -> dict[str, Any]:
    import socket
    import threading

    import httpx
    import uvicorn

    from loupe.api.app import create_app
    from loupe.api.routes import ROUTERS

    app = create_app(settings, migrate=False)
    if not any(getattr(r, "path", "").endswith("/export.csv") for r in app.routes):
        from loupe.api import app as app_module
        from loupe.api.routes import exports as exports_routes

        app_module.ROUTERS = [*ROUTERS, exports_routes.router]  # type: ignore[attr-defined]
        app = create_app(settings, migrate=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    baseline = _rss_mb()
    url = f"http://127.0.0.1:{port}/api/projects/{pid}/export.csv"
    t0 = time.perf_counter()
    size = 0
    with (
        httpx.stream("GET", url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as r,
        out.open("wb") as handle,
    ):
        r.raise_for_status()
        for chunk in r.iter_bytes(1 << 16):
            size += len(chunk)
            handle.write(chunk)
    seconds = time.perf_counter() - t0
    server.should_exit = True
    thread.join(timeout=10)
    return {
        "kind": "http",
        "rows": rows,
        "seconds": seconds,
        "bytes": size,
        "baseline_mb": baseline,
        "peak_mb": _rss_mb(),
    }


def _child(kind: str, home: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--measure", kind, "--home", str(home)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    from loupe.plugins import load_plugins

    load_plugins()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="items in the project")
    parser.add_argument("--http", action="store_true", help="also through uvicorn + httpx")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--home", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        info = json.loads((args.home / "ready.json").read_text())
        print(json.dumps(measure(args.measure, args.home, info)))
        return 0
    home = CACHE / f"export-{args.n}"
    print(f"preparing a {args.n}-item labelled project in {home} ...", flush=True)
    # Build in a child too, so this process stays small and imports nothing heavy.
    subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(HERE)!r}); "
         f"import export; export.build(__import__('pathlib').Path({str(home)!r}), {args.n})"],
        check=True,
    )  # fmt: skip
    kinds = ["csv", "zip"] + (["http"] if args.http else [])
    results = [_child(kind, home) for kind in kinds]
    print(f"\n{'export':<22}{'rows':>9}{'seconds':>9}{'rows/s':>11}{'MB':>8}"
          f"{'base RSS':>10}{'peak RSS':>10}{'held':>8}")  # fmt: skip
    labels = {"csv": "CSV (service)", "zip": "ZIP labels (service)", "http": "CSV (HTTP, uvicorn)"}
    for r in results:
        print(
            f"{labels[r['kind']]:<22}{r['rows']:>9}{r['seconds']:>9.2f}"
            f"{r['rows'] / r['seconds']:>11.0f}{r['bytes'] / 1e6:>8.1f}"
            f"{r['baseline_mb']:>9.0f}M{r['peak_mb']:>9.0f}M"
            f"{r['peak_mb'] - r['baseline_mb']:>7.0f}M"
        )
    csv_result = results[0]
    print(
        f"\nCSV: {csv_result['seconds']:.2f} s for {csv_result['rows']} rows; "
        f"target {TARGET_S:.0f} s -> ratio target/actual {TARGET_S / csv_result['seconds']:.1f}x"
    )
    held = csv_result["peak_mb"] - csv_result["baseline_mb"]
    print(
        f"vs peer (about {PEER_S:.0f} s, {PEER_MB:.0f} MB): "
        f"{PEER_S / csv_result['seconds']:.0f}x faster, "
        f"{PEER_MB / csv_result['peak_mb']:.1f}x less peak memory "
        f"({csv_result['peak_mb']:.0f} MB peak, {held:.0f} MB above the process baseline)"
    )
    ok = csv_result["seconds"] < TARGET_S
    print("CSV target met" if ok else "CSV target MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
