"""Helpers for the tests that run real ``loupe worker`` processes: the script a
worker runs (test-only job kinds declared first), the workers of one test with
their logs, and waiting for a job while they run it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loupe.jobs import core as jobs


def worker_script(prelude: str) -> str:
    """Python code that runs ``prelude`` (e.g. registers test-only job kinds), then
    ``loupe worker ARGS...`` with the arguments it is started with."""
    return prelude + "\nimport sys\nfrom loupe.cli import app\napp(['worker', *sys.argv[1:]])\n"


class Workers:
    """The ``loupe worker`` processes of one test, each writing to ``worker-<n>.log``
    in ``folder`` (also their working directory)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``python -c script ARGS...`` (a :func:`worker_script`) with this
        process's environment (the test's ``LOUPE_*`` settings)."""
        with open(self.folder / f"worker-{len(self.procs)}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", script, *args],
                env=dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.folder,
            )
        self.procs.append(proc)
        return proc

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the workers still running: SIGTERM (killed after 10 s), or at once
        with ``graceful=False`` (when no job of theirs has anything to wind down)."""
        for proc in self.procs:
            if proc.poll() is not None:
                continue
            if not graceful:
                proc.kill()
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for proc in self.procs:
            proc.wait()


def wait_for_job(
    settings: Any,
    job_id: int,
    done: Callable[[Any], bool],
    *,
    what: str,
    timeout_s: float,
    log_dir: Path,
) -> Any:
    """Poll the job until ``done(job)``, and return it; past ``timeout_s`` fail the test
    with its status and the logs of the workers (``log_dir/worker-*.log``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = jobs.fetch_job(settings, job_id)
        if done(job):
            return job
        time.sleep(0.05)
    logs = "\n".join(p.read_text() for p in sorted(log_dir.glob("worker-*.log")))
    pytest.fail(f"job {job_id} not {what} after {timeout_s}s: {job.status}\n{logs}")
