"""``diverse``: k-center greedy (core-set) on the item embeddings.

Each pick is the unlabelled item farthest from everything labelled or picked
so far, so a batch covers the feature space instead of one dense corner. Pools
above ``MAX_CANDIDATES`` items are sampled first (a 100,000-item request stays
well under a second on 2 cores).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.kept import Kept
from loupe.select.base import (
    BoolArray,
    FloatArray,
    Ranked,
    SelectionRequest,
    Strategy,
    feature_fingerprint,
    make_ranked,
    one_blas_thread,
)

# rows x centres per block of the initial distance matrix (float32: 64 MiB)
_BLOCK = 16_000_000
# Above this many multiply-adds (rows x (centres + picks) x dim) the search runs on a
# PCA projection: 100k x 1280 with 2000 labelled would be ~3e11, minutes on 2 cores.
EXACT_WORK = 2e9
PCA_FIT_ROWS = 2_000
# Above this many unlabelled rows ``diverse`` picks from a uniform sample of this size.
MAX_CANDIDATES = 20_000


def pca_project(features: FloatArray, dims: int, *, seed: int = 0, chunk: int = 8192) -> Any:
    """``features`` (N, d) projected on its first ``dims`` principal axes, float32.

    The axes are fitted on at most ``PCA_FIT_ROWS`` rows; rows are projected in chunks.
    """
    from sklearn.utils.extmath import randomized_svd

    size = len(features)
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(size, PCA_FIT_ROWS, replace=False)) if size > PCA_FIT_ROWS else None
    sample = np.asarray(features if fit is None else features[fit], dtype=np.float32)
    dims = min(dims, *sample.shape)
    mean = sample.mean(axis=0)
    # two power iterations are plenty for ranking distances; sklearn's PCA default
    # (seven, with a full PCA object around it) costs seconds at 2,000 x 1,280
    _, _, vt = randomized_svd(sample - mean, dims, n_iter=2, random_state=seed)
    axes = np.ascontiguousarray(vt.T, dtype=np.float32)
    offset = mean.astype(np.float32) @ axes
    out = np.empty((size, dims), dtype=np.float32)
    for start in range(0, size, chunk):
        part = np.asarray(features[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = part @ axes - offset
    return out


def _sq_norms(x: NDArray[np.float32], chunk: int) -> NDArray[np.float32]:
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start : start + chunk], dtype=np.float32)
        out[start : start + chunk] = np.einsum("ij,ij->i", part, part)
    return out


def _min_sq_dist_to(
    x: NDArray[np.float32], norms: NDArray[np.float32], centres: NDArray[np.intp], chunk: int
) -> NDArray[np.float32]:
    """Squared distance of every row to its nearest row of ``centres`` (blocked)."""
    best = np.full(len(x), np.inf, dtype=np.float32)
    if len(centres) == 0:
        return best
    c_block = max(1, min(len(centres), _BLOCK // max(1, chunk)))
    for c0 in range(0, len(centres), c_block):
        idx = centres[c0 : c0 + c_block]
        c = np.asarray(x[idx], dtype=np.float32)
        cn = norms[idx]
        for start in range(0, len(x), chunk):
            part = np.asarray(x[start : start + chunk], dtype=np.float32)
            # |x - c|^2 = |x|^2 + (|c|^2 - 2 x.c): only the bracket varies with c
            d = part @ c.T
            d *= -2.0
            d += cn[None, :]
            near = d.min(axis=1) + norms[start : start + chunk]
            np.minimum(best[start : start + chunk], near, out=best[start : start + chunk])
    return np.maximum(best, 0.0)


def k_center_greedy(
    features: FloatArray,
    n: int,
    *,
    centres: BoolArray | None = None,
    candidates: BoolArray | None = None,
    chunk: int = 8192,
    max_dim: int = 64,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Pick ``n`` rows of ``features`` greedily, each farthest from the centres so far.

    Parameters
    ----------
    features : float (N, d)
        Row vectors (a memory map is read in chunks of ``chunk`` rows).
    n : int
        How many rows to pick at most.
    centres : bool (N,), optional
        Rows already covered (labelled items). None or empty: the first pick is
        the candidate nearest to the mean of all rows.
    candidates : bool (N,), optional
        Rows that may be picked (default: all rows not in ``centres``).
    chunk : int
        Rows per block; bounds the memory of a pass to ``chunk x max(d, centres)``.
    max_dim : int
        When the exact search would exceed ``EXACT_WORK`` multiply-adds, it runs on
        the first ``max_dim`` principal components instead (distances approximate).

    Returns
    -------
    rows : intp (m,), m <= n
        Picked rows in pick order.
    distances : float64 (m,)
        Euclidean distance of each pick to its nearest centre when it was picked.
    """
    x = features
    if x.ndim != 2:
        raise ValueError(f"features must be (N, d), got shape {x.shape}")
    size = len(x)
    centre_mask = np.zeros(size, dtype=bool) if centres is None else np.asarray(centres, bool)
    allowed = ~centre_mask if candidates is None else np.asarray(candidates, bool) & ~centre_mask
    n = min(int(n), int(allowed.sum()))
    if n <= 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float64)
    work = float(size) * (int(centre_mask.sum()) + n + 1) * x.shape[1]
    if x.shape[1] > max_dim and work > EXACT_WORK:
        x = pca_project(x, max_dim, chunk=chunk)
    norms = _sq_norms(x, chunk)
    best = _min_sq_dist_to(x, norms, np.flatnonzero(centre_mask), chunk)
    picked: list[int] = []
    dists: list[float] = []
    if not centre_mask.any():
        total = np.zeros(x.shape[1], dtype=np.float64)
        for start in range(0, size, chunk):
            total += np.asarray(x[start : start + chunk], dtype=np.float64).sum(axis=0)
        mean = (total / size).astype(np.float32)
        to_mean = norms - 2.0 * _matvec(x, mean, chunk) + float(mean @ mean)
        to_mean[~allowed] = np.inf
        first = int(np.argmin(to_mean))
        picked.append(first)
        dists.append(float(np.sqrt(max(to_mean[first], 0.0))))
        best = np.minimum(best, _dist_to_row(x, norms, first, chunk))
    scores = np.where(allowed, best, -np.inf)
    scores[picked] = -np.inf
    while len(picked) < n:
        row = int(np.argmax(scores))
        if not np.isfinite(scores[row]):
            break
        picked.append(row)
        dists.append(float(np.sqrt(max(scores[row], 0.0))))
        update = _dist_to_row(x, norms, row, chunk)
        np.minimum(best, update, out=best)
        scores = np.where(allowed, best, -np.inf)
        scores[picked] = -np.inf
    return np.asarray(picked, dtype=np.intp), np.asarray(dists, dtype=np.float64)


def _matvec(x: FloatArray, v: NDArray[np.float32], chunk: int) -> NDArray[np.float32]:
    out = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), chunk):
        out[start : start + chunk] = np.asarray(x[start : start + chunk], dtype=np.float32) @ v
    return out


def _dist_to_row(
    x: FloatArray, norms: NDArray[np.float32], row: int, chunk: int
) -> NDArray[np.float32]:
    c = np.asarray(x[row], dtype=np.float32)
    d = norms + norms[row] - 2.0 * _matvec(x, c, chunk)
    return np.maximum(d, 0.0)


_PROJECTIONS: Kept[NDArray[np.float32]] = Kept()
PROJECTION_DIMS = 64


def _projection(ids: NDArray[np.int64], features: FloatArray) -> NDArray[np.float32]:
    """The first PROJECTION_DIMS principal components of every row, kept per matrix."""
    if features.shape[1] <= PROJECTION_DIMS:
        return np.asarray(features, dtype=np.float32)
    key = (tuple(features.shape), feature_fingerprint(ids, features))
    return _PROJECTIONS.get(
        key, lambda: np.asarray(pca_project(features, PROJECTION_DIMS), dtype=np.float32)
    )


class Diverse(Strategy):
    name = "diverse"
    title = "Diverse"
    description = (
        "Unlabelled items that cover the feature space: k-center greedy on the "
        "embeddings, far from everything labelled."
    )
    needs = frozenset({"features"})

    def __call__(self, req: SelectionRequest) -> Ranked:
        with one_blas_thread():
            return self._rank(req)

    def _rank(self, req: SelectionRequest) -> Ranked:
        assert req.features is not None
        # labelled items and items leased to others are covered already
        covered = np.asarray(req.labelled, bool) | ~req.free()
        pool = req.pool()
        if int(pool.sum()) <= MAX_CANDIDATES:
            rows, dists = k_center_greedy(req.features, req.n, centres=covered, candidates=pool)
            return make_ranked(req, rows, dists)
        # A big pool: the picks come from a seeded uniform sample of it. The farthest
        # items of a sample cover the space as well for a batch of tens, shun a few
        # extreme outliers, and only the sample and the covered rows are read.
        # The search runs on the rows' principal components, projected once per
        # feature matrix and kept (a 64-d copy instead of reading 1280-d rows).
        rng = np.random.default_rng(req.seed)
        sample = np.sort(rng.choice(np.flatnonzero(pool), MAX_CANDIDATES, replace=False))
        subset = np.union1d(sample, np.flatnonzero(covered))
        projected = _projection(req.ids, req.features)
        picked, dists = k_center_greedy(
            np.asarray(projected[subset], dtype=np.float32),
            req.n,
            centres=covered[subset],
            candidates=np.isin(subset, sample),
        )
        return make_ranked(req, subset[picked], dists)
