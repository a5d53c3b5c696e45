"""A project's arrays for the strategies: items, labels, model output, features.

Read in the request's transaction; features come from the feature store of the
active backbone (the active model's first member, else the project's first
ensemble member with stored vectors) as a memory map.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, Item, ModelVersion, Project
from loupe.features.store import FeatureStore, open_existing
from loupe.kept import Kept, Recent
from loupe.services.labels.core import person_labelled
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.base import LabelValue
from loupe.tasks.embedding import ensemble_members
from loupe.tasks.prediction_arrays import (
    OutputKey,
    VersionOutput,
    decode,
    load_or_decode,
    output_rows,
    version_key,
)


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
        store = _open_store(settings, project.id, name)
        if store is not None and len(store):
            return name, store
    return None, None


# Open stores are kept (a store re-reads its index when another process changed
# it): opening one indexes its 100,000 ids, on every queue request otherwise.
_STORES: Kept[FeatureStore | None] = Kept(8)


def _open_store(settings: Settings, project_id: int, backbone: str) -> FeatureStore | None:
    key = (str(settings.features_dir), project_id, backbone)
    return _STORES.get(key, lambda: open_existing(settings.features_dir, project_id, backbone))


# Decoding 100,000 JSON outputs takes seconds; a version's predictions only grow
# (a predict job adds items), so its arrays are kept per (database, version,
# prediction count, newest prediction id) and rebuilt only when that changes. A
# process that has not kept them reads the version's sidecar file (written by the
# job that stored the predictions, or by the first process that decoded them).
_OUTPUTS: Kept[VersionOutput] = Kept(4)


# How long a process trusts its last look at what the kept arrays depend on (item
# count/max/sum, a version's prediction count): an aggregate over 100,000 rows per
# queue request otherwise. Labels are read fresh on every request, and the leases
# re-check them; only an item added or deleted in the last second may be missed or
# offered once (its label PUT then answers 404).
_CHECKED: Recent[tuple[int, int | None, int | None]] = Recent()
_VERSION_CHECKED: Recent[OutputKey] = Recent()


def _recheck_s(settings: Settings | None) -> float:
    return settings.queue_recheck_s if settings is not None else 0.0


def _version_output(
    db: Session, version: ModelVersion, settings: Settings | None = None
) -> VersionOutput:
    """The version's arrays: kept in this process, else its sidecar (when ``settings``
    are given and the file is current), else the decoded rows."""
    vkey = _VERSION_CHECKED.get(
        (str(db.get_bind().engine.url), version.id, version.created_at),
        lambda: version_key(db, version),
        _recheck_s(settings),
    )
    key = (str(db.get_bind().engine.url), version.id, version.created_at, vkey.count, vkey.newest)

    def compute() -> VersionOutput:
        if settings is not None:
            return load_or_decode(db, settings, version, vkey)
        return decode(output_rows(db, version)[0])

    return _OUTPUTS.get(key, compute)


_IDS: Kept[NDArray[np.int64]] = Kept(8)


def _item_ids(db: Session, project_id: int, recheck_s: float = 0.0) -> NDArray[np.int64]:
    """The project's item ids (not in error), ascending; kept while their count, largest
    and sum stay the same (ids only grow: an insert or a delete changes them), looked
    at once per ``recheck_s`` seconds."""
    live = (Item.project_id == project_id, Item.status != "error")
    url = str(db.get_bind().engine.url)

    def fingerprint() -> tuple[int, int | None, int | None]:
        count, largest, total = db.execute(
            select(func.count(Item.id), func.max(Item.id), func.sum(Item.id)).where(*live)
        ).one()
        return int(count), largest, None if total is None else int(total)

    key = (url, project_id, *_CHECKED.get((url, project_id), fingerprint, recheck_s))

    def compute() -> NDArray[np.int64]:
        cursor = db.execute(select(Item.id).where(*live).order_by(Item.id))
        return np.fromiter((row[0] for row in cursor), dtype=np.int64)

    return _IDS.get(key, compute)


def load_arrays(db: Session, project: Project, settings: Settings | None = None) -> ProjectArrays:
    """Items (not in error), the labelled mask, class labels and the active model's output
    (read from the version's sidecar file under ``settings.models_dir`` when given)."""
    ids = _item_ids(db, project.id, _recheck_s(settings))
    size = len(ids)
    version = active_version(db, project.id)
    class_names: tuple[str, ...] = ()
    probs = spread = flagged = None
    if version is not None:
        out = _version_output(db, version, settings)
        class_names = out.class_names
        # rows of ids that the version predicted, and where in its arrays
        at = np.searchsorted(out.item_ids, ids)
        at_clipped = np.minimum(at, max(len(out.item_ids) - 1, 0))
        has = (at < len(out.item_ids)) & (
            out.item_ids[at_clipped] == ids if len(out.item_ids) else False
        )
        src = at_clipped[has]
        if out.probs is not None:
            probs = np.full((size, len(class_names)), np.nan)
            probs[has] = out.probs[src]
        spread = np.full(size, np.nan)
        spread[has] = out.spread[src]
        flagged = np.zeros(size, dtype=bool)
        flagged[has] = out.flagged[src]
        if probs is not None:
            # an item new since the model (no prediction): as unsure as can be
            missing = np.isnan(probs).any(axis=1)
            probs[missing] = 1.0 / len(class_names)
        if np.isnan(spread).all():
            spread = None
        else:
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
            person_labelled(),
        )
    ):
        r = int(np.searchsorted(ids, item_id))
        if r >= size or ids[r] != item_id:
            continue  # an item in error
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
