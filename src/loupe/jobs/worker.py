"""Job consumers: :func:`run_worker` (``loupe worker``) and :class:`WorkerProcess`
(the ``loupe worker`` child process that ``loupe serve`` starts and stops).

A worker consumes one or more queues (``cpu``, ``gpu``: see
:mod:`loupe.jobs.registry`) with huey consumers polling fast (first retry after
0.05 s, backing off by 1.1x up to 0.5 s), so an idle SqliteHuey queue starts a
job in about 0.2 s instead of huey's ~1.4 s; it reaps jobs left ``running`` by a
killed worker, at start and then periodically. The job kinds must be registered
before (:func:`loupe.plugins.load_plugins`; the CLI does it).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

from huey.consumer import Consumer

from loupe.jobs.queue import get_huey
from loupe.jobs.registry import DEFAULT_QUEUE, QUEUES, periodic_hooks
from loupe.jobs.runner import (
    DEFAULT_STALE_AFTER_S,
    fail_worker_jobs,
    reap_stale_jobs,
    worker_name,
)
from loupe.settings import Settings

log = logging.getLogger(__name__)

POLLING = {"initial_delay": 0.05, "max_delay": 0.5, "backoff": 1.1}
REAP_EVERY_S = 30.0
HEALTH_CHECK_EVERY_S = 10.0
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


class _Consumer(Consumer):
    """A huey Consumer that may leave signal handling to another consumer.

    ``signal.signal`` only works in the main thread, and one process may run a
    consumer per queue: only the first, run in the main thread, installs them.
    """

    def __init__(self, *args: Any, install_signal_handlers: bool, **kwargs: Any) -> None:
        self._install_signal_handlers = install_signal_handlers
        self.siblings: list[_Consumer] = []  # the other queues' consumers in this process
        super().__init__(*args, **kwargs)

    def _set_signal_handlers(self) -> None:
        if self._install_signal_handlers:
            super()._set_signal_handlers()

    def stop(self, graceful: bool = False) -> None:
        # No queue of this process takes a new job while this one winds down.
        for sibling in self.siblings:
            sibling.stop_flag.set()
        super().stop(graceful=graceful)

    @property
    def graceful(self) -> bool:
        """Whether the signal that stopped it asked for a graceful stop."""
        return bool(self._graceful)


def _consumer(
    settings: Settings,
    queue: str,
    workers: int,
    *,
    install_signal_handlers: bool,
    shutdown_timeout_s: float | None,
) -> _Consumer:
    return _Consumer(
        get_huey(settings, queue, immediate=False),
        workers=workers,
        worker_type="thread",
        periodic=False,
        shutdown_timeout=shutdown_timeout_s,
        install_signal_handlers=install_signal_handlers,
        **POLLING,
    )


def _housekeeping(
    settings: Settings,
    stop: threading.Event,
    stale_after_s: float,
    consumers: Sequence[_Consumer] = (),
    parent_pid: int | None = None,
) -> threading.Thread:
    """A thread that reaps stale jobs, restarts dead threads of ``consumers`` (those
    not run in the main thread) and stops this process when ``parent_pid`` is gone."""

    def loop() -> None:
        last_reap = time.monotonic()
        last_run = dict.fromkeys((p.name for p in periodic_hooks()), 0.0)
        tick = min([HEALTH_CHECK_EVERY_S, *(p.every_s for p in periodic_hooks())])
        while not stop.wait(tick):
            try:
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("parent process %s is gone; stopping", parent_pid)
                    os.kill(os.getpid(), signal.SIGTERM)
                for consumer in consumers:
                    consumer.check_worker_health()
                if time.monotonic() - last_reap >= REAP_EVERY_S:
                    last_reap = time.monotonic()
                    reap_stale_jobs(settings, stale_after_s=stale_after_s)
            except Exception:
                log.exception("job housekeeping failed; trying again later")
            for hook in periodic_hooks():
                if time.monotonic() - last_run.get(hook.name, 0.0) < hook.every_s:
                    continue
                last_run[hook.name] = time.monotonic()
                try:
                    hook.fn(settings)
                except Exception:
                    log.exception("periodic %s failed; trying again later", hook.name)

    thread = threading.Thread(target=loop, name="loupe-jobs-housekeeping", daemon=True)
    thread.start()
    return thread


def run_worker(
    settings: Settings,
    *,
    queues: Sequence[str] = (DEFAULT_QUEUE,),
    workers: int = 1,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    shutdown_timeout_s: float | None = None,
    parent_pid: int | None = None,
) -> None:
    """Consume ``queues`` with ``workers`` threads each; block until stopped.

    SIGINT stops gracefully (running jobs finish, within ``shutdown_timeout_s``
    per queue if given; a second SIGINT stops at once), SIGTERM at once. Jobs still
    running then are marked failed. With ``parent_pid``, the worker stops when
    that process dies (see :func:`stop_with_parent`).
    """
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise ValueError(f"queues must be some of {QUEUES}, got {list(queues)}")
    queues = list(dict.fromkeys(queues))
    main = threading.current_thread() is threading.main_thread()
    first, *others = [
        _consumer(
            settings,
            queue,
            workers,
            install_signal_handlers=main and i == 0,
            shutdown_timeout_s=shutdown_timeout_s,
        )
        for i, queue in enumerate(queues)
    ]
    first.siblings = others
    if parent_pid is not None:
        stop_with_parent(parent_pid)
    reap_stale_jobs(settings, stale_after_s=stale_after_s)
    stop = threading.Event()
    _housekeeping(settings, stop, stale_after_s, others, parent_pid)
    log.info("loupe worker %s: queue(s) %s, %d thread(s) each", worker_name(), queues, workers)
    try:
        for consumer in others:
            consumer.start()
        first.run()  # returns when a signal stopped it
    finally:
        stop.set()
        for consumer in others:
            consumer.stop(graceful=first.graceful)
        fail_worker_jobs(settings, worker_name(), "worker stopped while running; retry it")


def stop_with_parent(parent_pid: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent dies (Linux).

    The housekeeping thread also polls the parent's pid, for other systems. If
    the parent is already gone, SIGTERM is sent at once.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def lower_priority(increment: int) -> int:
    """Add ``increment`` to this process's nice value; return the new value."""
    return os.nice(increment) if increment else os.nice(0)


class WorkerProcess:
    """A worker child process (``argv``, e.g. ``python -m loupe.cli worker ...``),
    restarted if it dies, stopped by :meth:`stop`.

    It runs in a session of its own, so a Ctrl+C in the terminal reaches only
    the parent, which then stops the child gracefully; the child should be
    started with ``--parent-pid`` so that it also stops if the parent is killed.
    """

    def __init__(self, argv: Sequence[str], *, restart_delay_s: float = 2.0) -> None:
        self.argv = list(argv)
        self.restart_delay_s = restart_delay_s
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._monitor: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        with self._lock:
            return None if self._proc is None else self._proc.pid

    def start(self) -> WorkerProcess:
        """Start the child and a thread that restarts it if it exits on its own."""
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, name="loupe-worker-monitor")
        self._monitor.daemon = True
        self._monitor.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL after ``timeout_s`` each;
        return the child's exit status."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is None:
            return None
        for send in (lambda: proc.send_signal(signal.SIGINT), proc.terminate, proc.kill):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                send()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout_s)
        if self._monitor is not None:
            self._monitor.join(timeout=5)
        return proc.returncode

    def _spawn(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            self._proc = proc = subprocess.Popen(self.argv, start_new_session=True)
        log.info("job worker process %s started: %s", proc.pid, " ".join(self.argv[1:]))

    def _watch(self) -> None:
        while True:
            with self._lock:
                proc = self._proc
            assert proc is not None
            code = proc.wait()
            if self._stopping.wait(self.restart_delay_s):
                return
            log.warning("job worker process %s exited with %s; restarting it", proc.pid, code)
            self._spawn()
