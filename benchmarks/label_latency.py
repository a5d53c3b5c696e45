"""Label latency with and without a training running: a real server on 127.0.0.1.

For each project size (10,000 and 100,000 items; the cached projects of
``web_grid.py``: real JPEG files, 10% labelled, an active model version) a real
``loupe serve`` (uvicorn, SQLite, the job worker in its own process) answers:

1. 200 sequential label submits (``PUT .../label`` with optimistic locking, one
   client with a cookie session, each on another unlabelled item);
2. 4 concurrent clients x 200 submits;

each (a) idle and (b) while a training embeds every item of the project (the
default two-CNN ensemble, started through the API and cancelled afterwards).
Printed: p50 / p95 / p99 round trip, labels/s, errors, and the server's own
time per label from its ``Server-Timing`` header (measured in-process).

Targets (this 2-core machine): sequential p50 <= 4 ms, p95 <= 8 ms idle and
p95 <= 15 ms while training; 4 clients >= 250 labels/s idle and >= 150 while
training, 4-client p95 <= 30 ms; 0 errors. Baseline (the issue, 10,000 items):
p50 / p95 8.3 / 11.3 ms idle, p95 57.6 ms while training; 4 clients 122.6
labels/s idle (p95 106 ms), 60.7 labels/s while training.

Run: ``.venv/bin/python benchmarks/label_latency.py [--n 10000 100000] [--submits 200]``
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from web_grid import ANNOTATORS, CLASSES, OWNER, cached_home, client, server  # noqa: E402

TARGETS = {
    "seq_p50_idle": 4.0,
    "seq_p95_idle": 8.0,
    "seq_p95_train": 15.0,
    "rate_idle": 250.0,
    "rate_train": 150.0,
    "conc_p95": 30.0,
}
BASELINE = {
    "seq_p50_idle": 8.3,
    "seq_p95_idle": 11.3,
    "seq_p95_train": 57.6,
    "rate_idle": 122.6,
    "rate_train": 60.7,
    "conc_p95": 106.0,
}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _server_ms(response: Any) -> float | None:
    timing = response.headers.get("server-timing", "")
    for part in timing.split(","):
        name, _, rest = part.strip().partition(";")
        if name == "app" and rest.startswith("dur="):
            return float(rest[4:])
    return None


def sequential(url: str, pid: int, ids: list[int]) -> dict[str, Any]:
    c = client(url, ANNOTATORS[0])
    times, server, errors = [], [], 0
    for k, item_id in enumerate(ids):
        body = {"kind": "class", "label": CLASSES[k % len(CLASSES)], "version": 0}
        t0 = time.perf_counter()
        r = c.put(f"/api/projects/{pid}/items/{item_id}/label", json=body)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            errors += 1
        ms = _server_ms(r)
        if ms is not None:
            server.append(ms)
    c.close()
    return {"times": times, "server": server, "errors": errors, "n": len(ids)}


def concurrent(url: str, pid: int, ids: list[int], clients: int = 4) -> dict[str, Any]:
    per = len(ids) // clients
    latencies: list[list[float]] = [[] for _ in range(clients)]
    server: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    barrier = threading.Barrier(clients + 1)

    def work(k: int) -> None:
        c = client(url, ANNOTATORS[k])
        barrier.wait()
        for j, item_id in enumerate(ids[k * per : (k + 1) * per]):
            body = {"kind": "class", "label": CLASSES[j % len(CLASSES)], "version": 0}
            t0 = time.perf_counter()
            r = c.put(f"/api/projects/{pid}/items/{item_id}/label", json=body)
            latencies[k].append((time.perf_counter() - t0) * 1000)
            if r.status_code != 200:
                errors[k] += 1
            ms = _server_ms(r)
            if ms is not None:
                server[k].append(ms)
        c.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    flat = [x for part in latencies for x in part]
    return {
        "times": flat,
        "server": [x for part in server for x in part],
        "errors": sum(errors),
        "n": len(flat),
        "rate": len(flat) / elapsed,
    }


def start_training(url: str, pid: int) -> tuple[Any, int]:
    """Start a training that embeds every item; wait until it is computing features."""
    c = client(url, OWNER)
    r = c.patch(
        f"/api/projects/{pid}", json={"settings": {"ensemble": ["effnet-lite0", "mobilenet_v2"]}}
    )
    r.raise_for_status()
    r = c.post(f"/api/projects/{pid}/train", json={})
    r.raise_for_status()
    job_id = int(r.json()["id"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = c.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "running" and "features" in (job.get("message") or ""):
            return c, job_id
        if job["status"] in ("done", "failed", "cancelled"):
            raise RuntimeError(f"the training ended before the measurement: {job}")
        time.sleep(0.5)
    raise RuntimeError("the training did not start computing features in 120 s")


def stop_training(c: Any, job_id: int) -> str:
    job = c.get(f"/api/jobs/{job_id}").json()
    still = job["status"] == "running"
    c.post(f"/api/jobs/{job_id}/cancel")
    c.close()
    return f"training still running at the end: {still} ({job.get('message')})"


def line(name: str, res: dict[str, Any]) -> str:
    t, s = res["times"], res["server"]
    out = (
        f"  {name:<28} p50 {pct(t, 50):6.1f}  p95 {pct(t, 95):6.1f}  p99 {pct(t, 99):6.1f} ms"
        f"  errors {res['errors']}/{res['n']}"
    )
    if "rate" in res:
        out += f"  {res['rate']:6.1f} labels/s"
    if s:
        out += f"  server p50 {pct(s, 50):.2f} ms"
    return out


def ratio(name: str, value: float, key: str, *, lower_is_better: bool) -> str:
    target, base = TARGETS[key], BASELINE[key]
    ok = value <= target if lower_is_better else value >= target
    vs_base = base / value if lower_is_better else value / base
    return (
        f"  {name:<34} {value:8.1f}  target {target:6.1f} ({value / target:4.2f} x, "
        f"{'ok' if ok else 'MISSED'})  baseline {base:6.1f} -> {vs_base:4.2f} x better"
    )


def run(n: int, submits: int) -> dict[str, Any]:
    home, pid = cached_home(n, rebuild=False)
    with sqlite3.connect(home / "loupe.db") as con:
        unlabelled = [
            i
            for (i,) in con.execute(
                "SELECT items.id FROM items LEFT JOIN annotations ON annotations.item_id = items.id"
                " WHERE items.project_id = ? AND annotations.id IS NULL ORDER BY items.id",
                (pid,),
            )
        ]
    need = submits * 10
    if len(unlabelled) < need:
        raise RuntimeError(f"{len(unlabelled)} unlabelled items; need {need}")
    chunk: dict[str, list[int]] = {}  # distinct items per phase
    chunk["seq_idle"] = unlabelled[0:submits]
    chunk["conc_idle"] = unlabelled[submits : 5 * submits]
    chunk["seq_train"] = unlabelled[5 * submits : 6 * submits]
    chunk["conc_train"] = unlabelled[6 * submits : 10 * submits]
    out: dict[str, Any] = {}
    with server(home) as url:
        sequential(url, pid, unlabelled[-30:])  # warm-up: imports, caches, connections
        out["seq_idle"] = sequential(url, pid, chunk["seq_idle"])
        out["conc_idle"] = concurrent(url, pid, chunk["conc_idle"])
        c, job_id = start_training(url, pid)
        out["seq_train"] = sequential(url, pid, chunk["seq_train"])
        out["conc_train"] = concurrent(url, pid, chunk["conc_train"])
        out["training"] = stop_training(c, job_id)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--submits", type=int, default=200, help="per client and phase")
    args = parser.parse_args()
    failed = False
    for n in args.n:
        print(f"\n--- {n:,} items ---", flush=True)
        res = run(n, args.submits)
        for key, name in (
            ("seq_idle", "sequential, idle"),
            ("conc_idle", "4 clients, idle"),
            ("seq_train", "sequential, training"),
            ("conc_train", "4 clients, training"),
        ):
            print(line(name, res[key]), flush=True)
        print(f"  {res['training']}")
        print("ratios (targets on this 2-core machine; baseline from the issue):")
        print(ratio("sequential p50 idle (ms)", pct(res["seq_idle"]["times"], 50),
                    "seq_p50_idle", lower_is_better=True))  # fmt: skip
        print(ratio("sequential p95 idle (ms)", pct(res["seq_idle"]["times"], 95),
                    "seq_p95_idle", lower_is_better=True))  # fmt: skip
        print(ratio("sequential p95 training (ms)", pct(res["seq_train"]["times"], 95),
                    "seq_p95_train", lower_is_better=True))  # fmt: skip
        print(ratio("4 clients labels/s idle", res["conc_idle"]["rate"],
                    "rate_idle", lower_is_better=False))  # fmt: skip
        print(ratio("4 clients labels/s training", res["conc_train"]["rate"],
                    "rate_train", lower_is_better=False))  # fmt: skip
        print(ratio("4 clients p95 idle (ms)", pct(res["conc_idle"]["times"], 95),
                    "conc_p95", lower_is_better=True))  # fmt: skip
        print(ratio("4 clients p95 training (ms)", pct(res["conc_train"]["times"], 95),
                    "conc_p95", lower_is_better=True))  # fmt: skip
        errors = sum(res[k]["errors"] for k in ("seq_idle", "conc_idle", "seq_train", "conc_train"))
        print(f"  errors: {errors}")
        failed = failed or errors > 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
