"""The trainer shared by kinds that learn from one embedding per item.

Classify and score (and any kind whose model is a small head over a frozen
backbone's image embedding) train the same way: embed every item for every
ensemble member (cached; only new items are computed), fit the kind's heads
on the human labels, predict every item. :class:`EmbeddingTaskKind` owns the
first and last steps; a subclass writes :meth:`EmbeddingTaskKind.fit_heads`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import update

from loupe.db.models import Item
from loupe.db.session import session_scope
from loupe.tasks.base import FitOutcome, Report, TaskKind, TrainingData

if TYPE_CHECKING:
    from loupe.settings import Settings

DEFAULT_ENSEMBLE = ("effnet-lite0", "mobilenet_v2")
FeatureMap = dict[str, tuple[np.ndarray, np.ndarray]]  # member -> (X_labelled, X_all)


def ensemble_members(settings: dict[str, Any]) -> list[str]:
    """The project's ensemble members (backbone names), default effnet + mobilenet."""
    return list(settings.get("ensemble") or DEFAULT_ENSEMBLE)


def review_budget(settings: dict[str, Any]) -> float | None:
    """The project's review budget: the most items a model may flag, as a fraction."""
    value = settings.get("review_budget")
    return None if value in (None, 0, 1) else float(value)


def compute_features(
    settings: Settings,
    data: TrainingData,
    members: Sequence[str],
    *,
    report: Report,
    span: tuple[float, float] = (0.0, 0.7),
) -> tuple[list[int], dict[str, np.ndarray], dict[int, str]]:
    """Embed every item for every member (cached; only new items are computed).

    Returns the ids that every member could read, the matrices in that order,
    and ``{item_id: reason}`` for unreadable items (marked 'error' in the DB).
    """
    from loupe.features import FeatureStore, compute_missing, get_backbone

    errors: dict[int, str] = {}
    lo, hi = span
    per = (hi - lo) / max(1, len(members))
    for k, name in enumerate(members):
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        start = lo + k * per

        def progress(done: int, total: int, *, _start: float = start, _name: str = name) -> None:
            report(_start + per * done / max(1, total), f"features {_name}: {done}/{total}")

        report(start, f"features {name}")
        errors.update(compute_missing(store, backbone, data.items, progress=progress))
    if errors:
        mark_unreadable(settings, errors)
    ids = [i for i, _ in data.items if i not in errors]
    matrices = {}
    for name in members:
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        matrices[name] = store.get(ids)
    return ids, matrices, errors


def mark_unreadable(settings: Settings, errors: dict[int, str]) -> None:
    with session_scope(settings.db_url) as db:
        for item_id, reason in errors.items():
            db.execute(
                update(Item).where(Item.id == item_id).values(status="error", error=reason[:2000])
            )


class EmbeddingTaskKind(TaskKind):
    """A kind trained as heads over per-item embeddings of an ensemble of backbones."""

    trainable = True

    def fit_and_predict(
        self,
        settings: Settings,
        data: TrainingData,
        version_id: int,
        *,
        mode: str,
        report: Report,
    ) -> FitOutcome:
        members = ensemble_members(data.settings)
        ids, matrices, errors = compute_features(settings, data, members, report=report)
        labelled = [i for i in ids if i in data.labels]
        row_of = {item_id: r for r, item_id in enumerate(ids)}
        lab_rows = np.array([row_of[i] for i in labelled], dtype=np.int64)
        feats: FeatureMap = {m: (x[lab_rows], x) for m, x in matrices.items()}
        report(0.75, f"fitting heads on {len(labelled)} labels")
        outcome = self.fit_heads(
            settings, data, feats, labelled, ids, mode=mode, members=members, report=report
        )
        outcome.errors = errors
        outcome.params["members"] = members
        outcome.params["mode"] = mode
        return outcome

    def fit_heads(
        self,
        settings: Settings,
        data: TrainingData,
        feats: FeatureMap,
        labelled: list[int],
        ids: list[int],
        *,
        mode: str,
        members: list[str],
        report: Report,
    ) -> FitOutcome:
        """Fit the heads on the labelled rows of ``feats`` and predict every id."""
        raise NotImplementedError
