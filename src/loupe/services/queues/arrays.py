"""A project's arrays for the strategies: items, labels, model output, features.

Read in the request's transaction; features come from the feature store of the
active backbone (the active model's first member, else the project's first
ensemble member with stored vectors) as a memory map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, ModelVersion, Prediction, Project
from loupe.features.store import FeatureStore, open_existing
from loupe.services.labels.core import NONE_KIND, PERSON_ORIGINS
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.base import LabelValue
from loupe.tasks.embedding import ensemble_members


@dataclass
class ProjectArrays:
    """Per-item arrays of a project; row ``r`` is item ``ids[r]`` (ascending ids)."""

    ids: NDArray[np.int64]
    labelled: NDArray[np.bool_]
    labels: NDArray[np.int64] | None  # class index of a person's class label, -1: none
    class_names: tuple[str, ...]
    version_id: int | None
    probs: NDArray[np.float64] | None
    spread: NDArray[np.float64] | None
    flagged: NDArray[np.bool_] | None


def active_version(db: Session, project_id: int) -> ModelVersion | None:
    return db.scalar(
        select(ModelVersion).where(
            ModelVersion.project_id == project_id, ModelVersion.active.is_(True)
        )
    )


def feature_store(
    db: Session, settings: Settings, project: Project
) -> tuple[str | None, FeatureStore | None]:
    """``(backbone, store)`` of the project's active backbone; ``(None, None)`` if none
    has stored vectors."""
    version = active_version(db, project.id)
    names = [str(m) for m in (version.members if version is not None else [])]
    names += [m for m in ensemble_members(dict(project.settings)) if m not in names]
    for name in names:
        store = open_existing(settings.features_dir, project.id, name)
        if store is not None and len(store):
            return name, store
    return None, None


def load_arrays(db: Session, project: Project) -> ProjectArrays:
    """Items (not in error), the labelled mask, class labels and the active model's output."""
    ids = np.asarray(
        db.scalars(
            select(Item.id)
            .where(Item.project_id == project.id, Item.status != "error")
            .order_by(Item.id)
        ).all(),
        dtype=np.int64,
    )
    row_of = {int(i): r for r, i in enumerate(ids.tolist())}
    size = len(ids)
    version = active_version(db, project.id)
    class_names: tuple[str, ...] = ()
    probs = spread = flagged = None
    if version is not None:
        preds = db.execute(
            select(
                Prediction.item_id, Prediction.output, Prediction.uncertainty, Prediction.flagged
            ).where(Prediction.model_version_id == version.id)
        ).all()
        first = next((dict(o.get("probs") or {}) for _, o, _, _ in preds if o), {})
        class_names = tuple(first)
        probs = np.full((size, len(class_names)), np.nan) if class_names else None
        spread = np.full(size, np.nan)
        flagged = np.zeros(size, dtype=bool)
        for item_id, output, unc, flag in preds:
            r = row_of.get(int(item_id))
            if r is None:
                continue
            if probs is not None:
                p = (output or {}).get("probs") or {}
                probs[r] = [float(p.get(c, np.nan)) for c in class_names]
            spread[r] = np.nan if unc is None else float(unc)
            flagged[r] = bool(flag)
        if probs is not None:
            # an item new since the model (no prediction): as unsure as can be
            missing = np.isnan(probs).any(axis=1)
            probs[missing] = 1.0 / len(class_names)
        if np.isnan(spread).all():
            spread = None
        elif spread is not None:
            spread = np.nan_to_num(spread, nan=float(np.nanmax(spread)))
    kind = kind_of(project.task)
    if not class_names:
        class_names = tuple(kind.label_names(project.schema))
    index = {c: k for k, c in enumerate(class_names)}
    labelled = np.zeros(size, dtype=bool)
    labels = np.full(size, -1, dtype=np.int64)
    for item_id, ann_kind, label, scores, data in db.execute(
        select(
            Annotation.item_id,
            Annotation.kind,
            Annotation.label,
            Annotation.scores,
            Annotation.data,
        ).where(
            Annotation.project_id == project.id,
            Annotation.kind != NONE_KIND,
            Annotation.origin.in_(PERSON_ORIGINS),
        )
    ):
        r = row_of.get(int(item_id))
        if r is None:
            continue
        labelled[r] = True
        target = kind.training_target(
            LabelValue(kind=ann_kind, label=label, scores=scores, data=data)
        )
        if isinstance(target, str) and target in index:
            labels[r] = index[target]
    return ProjectArrays(
        ids=ids,
        labelled=labelled,
        labels=labels if (labels >= 0).any() else None,
        class_names=class_names,
        version_id=version.id if version is not None else None,
        probs=probs,
        spread=spread,
        flagged=flagged,
    )
