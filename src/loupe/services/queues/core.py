"""``next_items``: run a strategy over a project's arrays and lease what it picks.

Bad input is answered, not guessed: an unknown strategy is INVALID (422) with
the known names; a strategy whose arrays the project lacks (no model yet, no
features yet) falls back to ``diverse`` (or ``random`` without features) and
says why in ``fallback_reason``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from loupe.db.models import Project, User
from loupe.errors import ErrorCode, LoupeError
from loupe.select import registry
from loupe.select.base import SelectionRequest, Strategy
from loupe.services.queues import leases
from loupe.services.queues.arrays import ProjectArrays, feature_store, load_arrays
from loupe.settings import Settings

FALLBACKS = ("diverse", "random")
MAX_N = 500


@dataclass
class QueueResult:
    strategy: str  # asked for
    strategy_used: str
    fallback_reason: str | None
    backbone: str | None
    model_version_id: int | None
    lease_expires_at: dt.datetime
    items: list[tuple[int, float]] = field(default_factory=list)  # (item id, score)


def _uses_features(strategy: Strategy) -> bool:
    return any("features" in need.split("|") for need in strategy.needs)


def _request(
    arrays: ProjectArrays,
    features: Any,
    feature_rows: np.ndarray | None,
    *,
    blocked: set[int],
    n: int,
    seed: int,
    params: dict[str, Any],
) -> SelectionRequest:
    """The request over every item, or over the items with features (``feature_rows``)."""
    rows = feature_rows if feature_rows is not None else np.arange(len(arrays.ids))

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    ids = arrays.ids[rows]
    labels = pick(arrays.labels)
    return SelectionRequest(
        ids=ids,
        labelled=arrays.labelled[rows],
        features=features if feature_rows is not None else None,
        probs=pick(arrays.probs),
        spread=pick(arrays.spread),
        flagged=pick(arrays.flagged),
        labels=labels if labels is not None and (labels >= 0).any() else None,
        blocked=np.isin(ids, np.fromiter(blocked, dtype=np.int64, count=len(blocked))),
        class_names=arrays.class_names,
        n=n,
        seed=seed,
        params=params,
    )


def _aligned_features(
    settings: Settings, db: Session, project: Project, ids: np.ndarray
) -> tuple[str | None, Any, np.ndarray | None]:
    """``(backbone, features, rows of ids that have them)``; features row k is ids[rows[k]]."""
    backbone, store = feature_store(db, settings, project)
    if store is None:
        return None, None, None
    stored_ids, matrix = store.all()
    stored = np.asarray(stored_ids, dtype=np.int64)
    by_id = np.argsort(stored, kind="stable")
    at = np.searchsorted(stored[by_id], ids)
    found = at < len(stored)
    found[found] = stored[by_id[at[found]]] == ids[found]
    rows = np.flatnonzero(found).astype(np.intp)
    if len(rows) == 0:
        return None, None, None
    order = by_id[at[rows]].astype(np.intp)
    if len(order) == len(stored) and np.array_equal(order, np.arange(len(order))):
        return backbone, matrix, rows  # the memory map itself: no copy
    return backbone, np.asarray(matrix[order], dtype=np.float32), rows


def next_items(
    db: Session,
    settings: Settings,
    project: Project,
    user: User,
    strategy: str,
    n: int = 50,
    params: Mapping[str, Any] | None = None,
) -> QueueResult:
    """The next ``n`` items for ``user`` by ``strategy``, leased to them.

    The caller's earlier leases in the project are replaced; items leased to
    someone else are never returned; expired leases are dropped first.
    ``params`` are the strategy's options (``measure``, ``band_class``,
    ``band_lo``, ``band_hi``, ``method``, ``factor``, ``seed``).
    """
    asked = registry.get(strategy)  # INVALID listing the known names
    if not 1 <= n <= MAX_N:
        raise LoupeError(ErrorCode.INVALID, f"n must be within [1, {MAX_N}], got {n}")
    options = {k: v for k, v in (params or {}).items() if v is not None}
    try:
        seed = int(options.pop("seed", 0))
    except (TypeError, ValueError):
        raise LoupeError(ErrorCode.INVALID, f"seed must be an integer: {params}") from None
    now = leases.now_utc()
    expires_at = now + leases.lease_duration(project)
    leases.drop_expired(db, project.id, now)
    leases.release(db, project, user.id)
    blocked = leases.held_by_others(db, project.id, user.id, now)

    arrays = load_arrays(db, project, settings)
    backbone, features, feature_rows = _aligned_features(settings, db, project, arrays.ids)
    # a few spares in case a concurrent request wins some of the picks first
    want = min(n + max(5, n // 4), MAX_N + 50)

    def build(s: Strategy) -> SelectionRequest:
        rows = feature_rows if _uses_features(s) else None
        return _request(arrays, features, rows, blocked=blocked, n=want, seed=seed, params=options)

    chosen, reason = asked, None
    req = build(asked)
    lacking = asked.missing(req)
    if lacking:
        if arrays.version_id is None:
            why = "the project has no model yet"
        elif _uses_features(asked) and feature_rows is None:
            why = "the project has no features yet"
        else:
            why = "the active model does not give them"
        for name in FALLBACKS:
            candidate = registry.get(name)
            req = build(candidate)
            if not candidate.missing(req):
                chosen = candidate
                break
        reason = f"{strategy!r} needs {', '.join(lacking)}: {why}; serving {chosen.name!r} instead"
    try:
        result = chosen(req)
    except ValueError as exc:
        raise LoupeError(ErrorCode.INVALID, f"{chosen.name}: {exc}") from None

    ranked_ids = [int(i) for i in result.ids]
    won = leases.take(db, project.id, user.id, ranked_ids, now=now, expires_at=expires_at)
    if won and not chosen.labelled_items:
        # The arrays were read before the leases were taken: meanwhile someone may have
        # labelled a pick and let its lease go (their next queue request). Read again.
        gone = leases.labelled_among(db, project.id, won)
        if gone:
            leases.release(db, project, user.id, sorted(gone))
            won -= gone
    items = [
        (item_id, float(score))
        for item_id, score in zip(ranked_ids, result.scores.tolist(), strict=True)
        if item_id in won
    ][:n]
    served = {item_id for item_id, _ in items}
    extra = [item_id for item_id in won if item_id not in served]
    if extra:  # the spares this request won but does not serve go back at once
        leases.release(db, project, user.id, extra)
    return QueueResult(
        strategy=strategy,
        strategy_used=chosen.name,
        fallback_reason=reason,
        backbone=backbone if _uses_features(chosen) else None,
        model_version_id=arrays.version_id,
        lease_expires_at=expires_at,
        items=items,
    )
