"""Job kinds by name: the function that runs a job, and which queue carries it.

A job kind is a function ``fn(settings, ctx, params) -> result | None``
registered with :func:`register_job_kind`; it is callable from a test or the
CLI with a :class:`~loupe.jobs.context.JobContext`. The registry holds code,
never job state (that lives in the ``jobs`` table), and imports no plug-in:
:func:`loupe.plugins.load_plugins` imports the modules that register the
built-in kinds, in the API process and in every worker alike.

Queues: a kind declares ``queue="cpu"`` (the default) or ``queue="gpu"``;
:func:`loupe.jobs.core.submit` enqueues a job on its kind's queue and
``loupe worker --queue gpu`` consumes only that one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loupe.errors import ErrorCode, LoupeError
from loupe.jobs.context import JobContext
from loupe.settings import Settings

QUEUES: tuple[str, ...] = ("cpu", "gpu")
DEFAULT_QUEUE = "cpu"

JobFn = Callable[[Settings, JobContext, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class JobKind:
    """A registered kind: ``fn`` runs it; ``exclusive`` kinds never run twice at
    once in one project (a second request is BUSY); ``queue`` carries its jobs."""

    name: str
    fn: JobFn
    exclusive: bool = False
    queue: str = DEFAULT_QUEUE


# Kind name -> kind. Filled at import time by @register_job_kind.
JOB_KINDS: dict[str, JobKind] = {}


def register_job_kind(
    name: str, *, exclusive: bool = False, queue: str = DEFAULT_QUEUE
) -> Callable[[JobFn], JobFn]:
    """Decorator: register ``fn`` as the job kind ``name`` on ``queue``.

    Registering the same function again (a re-imported module) is a no-op; a
    different function under a taken name is a ``ValueError``.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {QUEUES}, got {queue!r} (job kind {name!r})")

    def decorator(fn: JobFn) -> JobFn:
        old = JOB_KINDS.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(f"job kind {name!r} is already registered by {old.fn.__module__}")
        JOB_KINDS[name] = JobKind(name=name, fn=fn, exclusive=exclusive, queue=queue)
        return fn

    return decorator


def get_job_kind(name: str) -> JobKind:
    """The kind ``name``; ``LoupeError(INVALID)`` naming the known kinds otherwise."""
    kind = JOB_KINDS.get(name)
    if kind is None:
        raise LoupeError(
            ErrorCode.INVALID,
            f"unknown job kind {name!r}; known kinds: {sorted(JOB_KINDS)} "
            "(a kind is known once loupe.plugins.load_plugins() imported its module)",
        )
    return kind


def job_kinds() -> list[JobKind]:
    """Every registered kind, sorted by name."""
    return [JOB_KINDS[name] for name in sorted(JOB_KINDS)]


def describe_job_kinds() -> list[dict[str, Any]]:
    """``[{"name", "queue", "exclusive"}, ...]`` sorted by name (for ``/api/info``)."""
    return [{"name": k.name, "queue": k.queue, "exclusive": k.exclusive} for k in job_kinds()]


# --- periodic hooks ----------------------------------------------------------------------

PeriodicFn = Callable[[Settings], Any]


@dataclass(frozen=True)
class Periodic:
    """A function every worker runs about every ``every_s`` seconds (housekeeping)."""

    name: str
    fn: PeriodicFn
    every_s: float


PERIODIC: dict[str, Periodic] = {}


def register_periodic(name: str, *, every_s: float) -> Callable[[PeriodicFn], PeriodicFn]:
    """Decorator: run ``fn(settings)`` in every worker's housekeeping thread.

    For checks that must not cost the web process anything, e.g. whether enough
    new labels arrived to retrain. Several workers may run it at once: it must be
    safe to repeat (an exclusive job kind makes a second submit BUSY).
    """
    if every_s <= 0:
        raise ValueError(f"every_s must be > 0, got {every_s}")

    def decorator(fn: PeriodicFn) -> PeriodicFn:
        PERIODIC[name] = Periodic(name=name, fn=fn, every_s=float(every_s))
        return fn

    return decorator


def periodic_hooks() -> list[Periodic]:
    return [PERIODIC[name] for name in sorted(PERIODIC)]
