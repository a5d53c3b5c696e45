"""Similar items: exact cosine k-nearest neighbours on item embeddings.

Exact numpy in row chunks: for a project's size (up to ~10^5 items x 1280
floats) one pass is a matrix-vector product of a few hundred MB, well under a
second, with no index to build or keep in step with the feature store; faiss
would only pay off far beyond that.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from loupe.select.base import BoolArray, FloatArray

COMBINE = ("mean", "max")


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def row_norms(features: FloatArray, chunk: int = 16384) -> NDArray[np.float32]:
    """L2 norm of every row (read in chunks: a memory map stays on disk)."""
    out = np.empty(len(features), dtype=np.float32)
    for start in range(0, len(features), chunk):
        part = np.asarray(features[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return out


def cosine_knn(
    features: FloatArray,
    queries: FloatArray,
    k: int,
    *,
    exclude: BoolArray | None = None,
    combine: str = "mean",
    chunk: int = 16384,
    norms: FloatArray | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The ``k`` rows of ``features`` most similar (cosine) to ``queries``.

    Parameters
    ----------
    features : float (N, d)
        Row vectors (a memory map is read in chunks of ``chunk`` rows).
    queries : float (q, d) or (d,)
        One or several query vectors.
    k : int
        How many neighbours at most.
    exclude : bool (N,), optional
        Rows never returned (e.g. the queries themselves).
    combine : {'mean', 'max'}
        Several queries: similarity to the mean of the normalised queries, or the
        highest similarity to any one query.
    norms : float (N,), optional
        The rows' L2 norms (:func:`row_norms`), kept by a caller that asks many
        queries of the same rows: one pass over ``features`` instead of two.

    Returns
    -------
    rows : intp (m,), m <= k
        Best first (ties: lower row first).
    similarity : float64 (m,)
        Cosine similarity in [-1, 1].
    """
    if combine not in COMBINE:
        raise ValueError(f"combine must be one of {list(COMBINE)}, got {combine!r}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if features.ndim != 2 or q.shape[1] != features.shape[1]:
        raise ValueError(f"queries must have {features.shape[1]} columns, got shape {q.shape}")
    q = _unit(q)
    if combine == "mean" or len(q) == 1:
        q = _unit(q.mean(axis=0, keepdims=True))
    size = len(features)
    sims = np.empty(size, dtype=np.float32)
    for start in range(0, size, chunk):
        part = np.asarray(features[start : start + chunk], dtype=np.float32)
        if norms is None:
            part_norms = np.sqrt(np.einsum("ij,ij->i", part, part))
        else:
            part_norms = np.asarray(norms[start : start + chunk], dtype=np.float32)
        sims[start : start + chunk] = (part @ q.T).max(axis=1) / np.maximum(part_norms, 1e-12)
    allowed = np.ones(size, dtype=bool) if exclude is None else ~np.asarray(exclude, bool)
    rows = np.flatnonzero(allowed)
    k = min(k, len(rows))
    if k == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
    values = sims[rows]
    if k < len(rows):
        part_idx = np.argpartition(-values, k - 1)[:k]
        rows, values = rows[part_idx], values[part_idx]
    order = np.lexsort((rows, -values))
    return rows[order].astype(np.intp), values[order].astype(np.float64)
