"""The built-in diagnostic job kind ``selftest`` (registered when imported)."""

from __future__ import annotations

import time
from typing import Any

from loupe.jobs.context import JobContext
from loupe.jobs.registry import register_job_kind
from loupe.jobs.runner import worker_name
from loupe.settings import Settings


@register_job_kind("selftest")
def selftest(settings: Settings, ctx: JobContext, params: dict[str, Any]) -> dict[str, Any]:
    """Diagnostic job: ``steps`` steps of ``seconds`` each, progress after each step.

    Params: ``{"steps": n, "seconds": s, "fail_at": k | None}``; with ``fail_at``
    it raises at step ``k`` (0-based). It proves that a worker picks jobs up,
    that progress reaches the UI and that failures are recorded. It does no
    work, so only site admins may submit it through the API.
    """
    steps = int(params.get("steps", 5))
    seconds = float(params.get("seconds", 0.1))
    fail_at = params.get("fail_at")
    if not 1 <= steps <= 10_000:
        raise ValueError(f"steps must be in [1, 10000], got {steps}")
    if not 0 <= seconds <= 60:
        raise ValueError(f"seconds must be in [0, 60], got {seconds}")
    for step in range(steps):
        ctx.check_cancelled()
        if fail_at is not None and step == int(fail_at):
            raise RuntimeError(f"selftest failed at step {step} as asked (fail_at={fail_at})")
        time.sleep(seconds)
        ctx.progress((step + 1) / steps, f"step {step + 1}/{steps}")
    return {"steps": steps, "seconds": seconds, "worker": worker_name()}
