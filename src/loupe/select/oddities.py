"""``oddities``: items unlike the rest (Local Outlier Factor and Isolation Forest).

LOF runs on the embeddings reduced by PCA (at most ``dims`` components:
neighbour search in 1280 dimensions is slow and no better); Isolation Forest on
the embeddings themselves (its cost does not grow with the dimension, and PCA
would hide an odd direction among many plain ones). The queue ranks by the mean
of the two detectors' rank percentiles.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from loupe.kept import Kept
from loupe.select.base import (
    FloatArray,
    Ranked,
    SelectionRequest,
    Strategy,
    feature_fingerprint,
    make_ranked,
    one_blas_thread,
    param_choice,
    top_rows,
)
from loupe.select.diverse import pca_project

METHODS = ("both", "lof", "iforest")
FIT_MAX = 5_000  # detectors are fitted on at most this many rows, then score every row


def _percentile_rank(values: NDArray[np.float64]) -> NDArray[np.float64]:
    order = np.argsort(values, kind="stable")
    out = np.empty(len(values), dtype=np.float64)
    out[order] = np.arange(len(values), dtype=np.float64) / max(1, len(values) - 1)
    return out


def outlier_scores(
    features: FloatArray, *, method: str = "both", dims: int = 32, seed: int = 0
) -> NDArray[np.float64]:
    """Per-row outlier score of ``features`` (N, d); higher is odder.

    ``method``: ``lof`` (negated LOF factor), ``iforest`` (negated Isolation
    Forest score) or ``both`` (mean rank percentile of the two, in [0, 1]).
    """
    from sklearn.ensemble import IsolationForest
    from sklearn.neighbors import LocalOutlierFactor

    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    raw = np.asarray(features, dtype=np.float32)
    size = len(raw)
    if size < 3:
        return np.zeros(size, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(size, FIT_MAX, replace=False)) if size > FIT_MAX else None
    scores: list[NDArray[np.float64]] = []
    if method in ("both", "lof"):
        x = raw
        fit_x = x if fit_rows is None else x[fit_rows]
        if x.shape[1] > dims and len(fit_x) > dims:
            x = pca_project(x, dims, seed=seed)
            fit_x = x if fit_rows is None else x[fit_rows]
        k = min(20, len(fit_x) - 1)
        if fit_rows is None:
            lof = LocalOutlierFactor(n_neighbors=k, algorithm="brute").fit(x)
            scores.append(-np.asarray(lof.negative_outlier_factor_, dtype=np.float64))
        else:
            lof = LocalOutlierFactor(n_neighbors=k, novelty=True, algorithm="brute").fit(fit_x)
            scores.append(-np.asarray(lof.score_samples(x), dtype=np.float64))
    if method in ("both", "iforest"):
        fit_raw = raw if fit_rows is None else raw[fit_rows]
        forest = IsolationForest(n_estimators=100, random_state=seed).fit(fit_raw)
        scores.append(-np.asarray(forest.score_samples(raw), dtype=np.float64))
    if len(scores) == 1:
        return scores[0]
    return np.mean([_percentile_rank(s) for s in scores], axis=0)


# The scores depend on the features alone (not on labels or the model): for a
# queue asked again and again over the same 100,000 rows they are computed once.
_SCORES: Kept[NDArray[np.float64]] = Kept()


def _cached_scores(
    ids: NDArray[np.int64], features: FloatArray, method: str, seed: int
) -> NDArray[np.float64]:
    key = (method, seed, tuple(features.shape), feature_fingerprint(ids, features))
    return _SCORES.get(key, lambda: outlier_scores(features, method=method, seed=seed))


class Oddities(Strategy):
    name = "oddities"
    title = "Oddities"
    description = (
        "Unlabelled items unlike the rest of the project (Local Outlier Factor and "
        "Isolation Forest on the embeddings)."
    )
    needs = frozenset({"features"})

    def __call__(self, req: SelectionRequest) -> Ranked:
        with one_blas_thread():
            return self._rank(req)

    def _rank(self, req: SelectionRequest) -> Ranked:
        assert req.features is not None
        method = param_choice(req, "method", METHODS)
        score = _cached_scores(req.ids, req.features, method, req.seed)
        rows, values = top_rows(req.pool(), score, req.n)
        return make_ranked(req, rows, values)
