"""Novelty: which items are unlike every labelled item, in each member's embedding.

A head trained on a few labels says nothing useful about an image unlike any
of them (gravel among blood cells): a linear head extrapolates, often with
high confidence. So every item gets a distance to its ``k`` nearest labelled
items, and the threshold comes from the labelled set itself: the
``quantile`` of the labelled items' leave-one-out kNN distances (each to its
``k`` nearest *other* labelled items), times ``margin``. An item as far from
the labels as the labels typically are from each other is not novel; one
farther than almost all of them is (by construction about ``1 - quantile`` of
items like the labelled ones are flagged: 2-7% in ``benchmarks/triage.py``).

The distance is the cosine distance ``1 - cos`` *about the centre of all
items*: every row minus the mean of ``X_all``, then L2-normalised. Backbone
embeddings (post-ReLU pooled CNN features) share a large common direction, so
raw cosines are all high and squeezed together; removing the data's own mean
spreads them out. On the benchmark's LFW photos with digit scans mixed in, the
share of scans found novel went from 37-78% (raw cosine) to ~100%, at 2-7% of
ordinary items flagged. Exact numpy, in row chunks (the centre is subtracted
per chunk), so 100k x 1280 items against a few hundred labels stays a few
hundred MB.

Each member's distance is divided by its own threshold (so backbones with
different distance scales weigh the same); the ensemble's ``novelty`` is the
mean of these ratios over members and ``novel = novelty > 1``. Labelled items
have distance 0 and are never novel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

DEFAULT_K = 1
DEFAULT_QUANTILE = 0.95
DEFAULT_MARGIN = 1.0
# rows of the query matrix per block: a (CHUNK_ROWS, n_labelled) float32 similarity block
CHUNK_ROWS = 4096
# floor for a threshold, so duplicated labelled images (LOO distance 0) still divide safely
_MIN_THRESHOLD = 1e-6


def _unit_rows(x: NDArray[np.floating]) -> NDArray[np.float32]:
    rows = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, np.float32(1e-12))


def knn_distance(
    queries: NDArray[np.floating],
    reference: NDArray[np.floating],
    *,
    k: int = DEFAULT_K,
    exclude_self: bool = False,
    centre: NDArray[np.floating] | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> NDArray[np.float32]:
    """Mean cosine distance of each query row to its ``k`` nearest ``reference`` rows.

    ``queries`` ``(N, dim)`` and ``reference`` ``(n, dim)``; ``centre`` ``(dim,)``
    (optional) is subtracted from both first; then rows are L2-normalised here
    (zero rows stay zero: distance 1 to everything). With ``exclude_self``, the
    queries *are* the reference rows (``N == n``) and row ``i`` skips reference
    row ``i`` (leave-one-out). ``k`` is capped at the number of candidates.
    Returns float32 ``(N,)`` in ``[0, 2]``; zeros when there is no candidate.
    """
    q = np.asarray(queries)
    ref = np.asarray(reference, dtype=np.float32)
    if q.ndim != 2 or ref.ndim != 2 or q.shape[1] != ref.shape[1]:
        raise ValueError(
            f"queries and reference must be (N, dim) and (n, dim), got {q.shape} and {ref.shape}"
        )
    shift = None if centre is None else np.asarray(centre, dtype=np.float32).reshape(-1)
    if shift is not None and shift.shape != (q.shape[1],):
        raise ValueError(f"centre must be ({q.shape[1]},), got shape {shift.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if exclude_self and len(q) != len(ref):
        raise ValueError("exclude_self needs queries to be the reference rows")
    candidates = len(ref) - (1 if exclude_self else 0)
    out = np.zeros(len(q), dtype=np.float32)
    if candidates < 1:
        return out
    k = min(k, candidates)
    n_ref = len(ref)
    unit_ref = _unit_rows(ref if shift is None else ref - shift)
    # The queries are never copied, centred or normalised (100k x 1280 would be
    # three passes over 500 MB): with r' = unit(r - c),
    #   (x - c) . r' = x . r' - c . r'   and   |x - c|^2 = |x|^2 - 2 x . c + |c|^2,
    # so one product with [r'^T | c] gives both, and the row norms one more pass.
    columns = unit_ref.T if shift is None else np.concatenate([unit_ref.T, shift[:, None]], 1)
    columns = np.ascontiguousarray(columns, dtype=np.float32)
    offset = None if shift is None else shift @ unit_ref.T  # (n,) c . r'
    shift_sq = 0.0 if shift is None else float(np.dot(shift, shift))
    for start in range(0, len(q), chunk_rows):
        stop = min(len(q), start + chunk_rows)
        block = np.asarray(q[start:stop], dtype=np.float32)
        product = block @ columns  # (rows, n [+ 1])
        norm_sq = np.einsum("ij,ij->i", block, block).astype(np.float64)
        dots = product[:, :n_ref]
        if offset is not None:
            dots -= offset
            norm_sq += shift_sq - 2.0 * product[:, n_ref].astype(np.float64)
        if exclude_self:
            rows = np.arange(stop - start)
            dots[rows, start + rows] = -np.inf
        # the k largest dot products = the k nearest (one positive norm per row);
        # their order does not matter
        if k == 1:
            top = dots.max(axis=1, keepdims=True)
        else:
            top = np.partition(dots, n_ref - k, axis=1)[:, -k:]
        norm = np.sqrt(np.maximum(norm_sq, 1e-24)).astype(np.float32)
        out[start:stop] = 1.0 - top.mean(axis=1) / norm
    return np.clip(out, 0.0, 2.0)


def novelty_threshold(
    labelled: NDArray[np.floating],
    *,
    k: int = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    centre: NDArray[np.floating] | None = None,
) -> float | None:
    """``margin`` x the ``quantile`` of the labelled rows' leave-one-out kNN distances.

    ``labelled`` is ``(n, dim)``; ``centre`` as in :func:`knn_distance`. Returns
    ``None`` with fewer than two rows (no leave-one-out distance exists, so
    nothing can be called novel).
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    if margin <= 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    rows = np.asarray(labelled)
    if len(rows) < 2:
        return None
    loo = knn_distance(rows, rows, k=k, exclude_self=True, centre=centre)
    return max(float(margin * np.quantile(loo, quantile)), _MIN_THRESHOLD)


@dataclass
class Novelty:
    """Novelty of ``N`` items: ensemble score and flag, with each member's part."""

    novelty: NDArray[np.float32]  # (N,) mean over members of distance / threshold
    novel: NDArray[np.bool_]  # (N,) novelty > 1
    member_novelty: dict[str, NDArray[np.float32]]  # name -> (N,) distance / threshold
    thresholds: dict[str, float | None]  # name -> cosine-distance threshold (None: too few)
    k: int = DEFAULT_K
    quantile: float = DEFAULT_QUANTILE
    margin: float = DEFAULT_MARGIN
    centred: bool = True
    notes: list[str] = field(default_factory=list)
    # name -> the centre the distances were taken about (None: not centred); with the
    # thresholds and the labelled rows, what scores new items later (:func:`novelty_against`)
    centres: dict[str, NDArray[np.float32] | None] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON summary stored with the metrics."""
        return {
            "k": self.k,
            "quantile": self.quantile,
            "margin": self.margin,
            "centred": self.centred,
            "thresholds": self.thresholds,
            "n_novel": int(self.novel.sum()),
            "notes": list(self.notes),
        }


def novelty_scores(
    member_features: Mapping[str, tuple[NDArray[np.floating], NDArray[np.floating]]],
    *,
    k: int = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
    centred: bool = True,
) -> Novelty:
    """Novelty of every item against the labelled items, per member and combined.

    ``member_features`` maps a member name to ``(X_labelled (n, dim), X_all (N, dim))``
    (the same pairs the trainers take). A member's score is its kNN distance
    (:func:`knn_distance`, about the mean of its ``X_all`` when ``centred``) over
    its threshold (:func:`novelty_threshold`); the ensemble's is the mean over
    members, and ``novel`` is ``novelty > 1``. With fewer than two labelled items
    nothing is novel (scores 0) and a note says so.
    """
    if not member_features:
        raise ValueError("member_features is empty: need at least one member")
    thresholds: dict[str, float | None] = {}
    centres: dict[str, NDArray[np.float32] | None] = {}
    references: dict[str, NDArray[np.floating]] = {}
    queries: dict[str, NDArray[np.floating]] = {}
    for name, (labelled, every) in member_features.items():
        x_all = np.asarray(every)
        centres[name] = (
            x_all.mean(axis=0, dtype=np.float64).astype(np.float32)
            if centred and len(x_all)
            else None
        )
        thresholds[name] = novelty_threshold(
            labelled, k=k, quantile=quantile, margin=margin, centre=centres[name]
        )
        references[name], queries[name] = labelled, x_all
    return novelty_against(
        queries,
        references,
        thresholds=thresholds,
        centres=centres,
        k=k,
        quantile=quantile,
        margin=margin,
    )


def novelty_against(
    queries: Mapping[str, NDArray[np.floating]],
    references: Mapping[str, NDArray[np.floating]],
    *,
    thresholds: Mapping[str, float | None],
    centres: Mapping[str, NDArray[np.floating] | None],
    k: int = DEFAULT_K,
    quantile: float = DEFAULT_QUANTILE,
    margin: float = DEFAULT_MARGIN,
) -> Novelty:
    """Novelty of ``queries`` (``{member: (N, dim)}``) with thresholds and centres
    already fixed: the training's (:func:`novelty_scores`), or a stored version's
    when it drafts items added after it was trained (``references`` are the rows of
    the items it was trained on). A member with threshold ``None`` scores 0 and,
    as in training, then nothing is novel.
    """
    if not queries:
        raise ValueError("queries is empty: need at least one member")
    member_novelty: dict[str, NDArray[np.float32]] = {}
    notes: list[str] = []
    n_all = None
    for name, x_all in queries.items():
        n_all = len(x_all)
        threshold = thresholds.get(name)
        if threshold is None:
            member_novelty[name] = np.zeros(n_all, dtype=np.float32)
            continue
        distance = knn_distance(x_all, references[name], k=k, centre=centres.get(name))
        member_novelty[name] = (distance / np.float32(threshold)).astype(np.float32)
    if any(thresholds.get(name) is None for name in queries):
        notes.append("novelty off: it needs at least two labelled items")
    stacked = np.stack(list(member_novelty.values()))
    combined = stacked.mean(axis=0).astype(np.float32)
    novel = combined > 1.0
    if n_all is not None and notes:
        novel = np.zeros(n_all, dtype=bool)
    centred = all(c is not None for c in centres.values())
    return Novelty(
        combined,
        novel,
        member_novelty,
        dict(thresholds),
        k,
        quantile,
        margin,
        centred,
        notes,
        {n: None if c is None else np.asarray(c, dtype=np.float32) for n, c in centres.items()},
    )
