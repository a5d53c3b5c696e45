"""Similar items: cosine nearest neighbours on the active backbone's features."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Item, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.kept import Kept
from loupe.select.knn import COMBINE, cosine_knn, row_norms
from loupe.services.queues.arrays import feature_store
from loupe.settings import Settings

MAX_K = 1000
MAX_QUERY = 1000


@dataclass
class SimilarResult:
    backbone: str
    query: list[int]
    items: list[tuple[int, float]] = field(default_factory=list)  # (item id, cosine)


# Row norms per feature matrix (a pass over 500 MB at 100,000 x 1280): kept while
# the store's rows are the same (same folder, same stored ids).
_NORMS: Kept[np.ndarray] = Kept(4)


def _norms(directory: Path, stored_ids: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(stored_ids, dtype=np.int64)
    key = (str(directory), len(ids), int(ids.sum()), hashlib.blake2b(ids.tobytes()).digest())
    return _NORMS.get(key, lambda: row_norms(matrix))


def similar(
    db: Session,
    settings: Settings,
    project: Project,
    item_ids: Sequence[int],
    k: int = 50,
    *,
    combine: str = "mean",
) -> SimilarResult:
    """The ``k`` items most like ``item_ids`` (one or several), the queries left out.

    Several queries: similarity to the mean of their normalised vectors
    (``combine='mean'``) or the best similarity to any of them (``'max'``).
    NOT_FOUND for an item of another project; CONFLICT when features are missing.
    """
    query = list(dict.fromkeys(int(i) for i in item_ids))
    if not query or len(query) > MAX_QUERY:
        raise LoupeError(ErrorCode.INVALID, f"give 1 to {MAX_QUERY} item ids, got {len(query)}")
    if not 1 <= k <= MAX_K:
        raise LoupeError(ErrorCode.INVALID, f"k must be within [1, {MAX_K}], got {k}")
    if combine not in COMBINE:
        raise LoupeError(ErrorCode.INVALID, f"combine must be one of {list(COMBINE)}")
    ids = np.asarray(
        db.scalars(
            select(Item.id)
            .where(Item.project_id == project.id, Item.status != "error")
            .order_by(Item.id)
        ).all(),
        dtype=np.int64,
    )
    known = set(ids.tolist())
    absent = [i for i in query if i not in known]
    if absent:
        raise LoupeError(ErrorCode.NOT_FOUND, f"items {absent[:10]} not found in this project")
    backbone, store = feature_store(db, settings, project)
    if store is None or backbone is None:
        raise LoupeError(
            ErrorCode.CONFLICT, "this project has no features yet: train a model first"
        )
    lacking = store.missing(query)
    if lacking:
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"items {lacking[:10]} have no {backbone} features yet: train the model again",
        )
    stored_ids, matrix = store.all()
    queries = store.get(query)
    # rows of deleted items or of the queries themselves are never answers
    exclude = ~np.isin(stored_ids, ids) | np.isin(stored_ids, np.asarray(query))
    norms = _norms(store.directory, stored_ids, matrix)
    rows, sims = cosine_knn(matrix, queries, k, exclude=exclude, combine=combine, norms=norms)
    return SimilarResult(
        backbone=backbone,
        query=query,
        items=[(int(stored_ids[r]), float(s)) for r, s in zip(rows, sims, strict=True)],
    )
