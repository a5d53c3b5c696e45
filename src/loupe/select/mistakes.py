"""``mistakes``: human labels that are likely wrong (confident learning, cleanlab).

Out-of-fold probabilities of the labelled items are given (``oof_probs``) or
computed here: a logistic regression on the embeddings, cross-validated so that
no item is judged by a model that saw its own label. cleanlab's
``find_label_issues`` then keeps the labels that disagree with the model more
than the estimated noise rates allow, most suspicious first.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from loupe.select.base import (
    FloatArray,
    IntArray,
    Ranked,
    SelectionRequest,
    Strategy,
    make_ranked,
    one_blas_thread,
)


def out_of_fold_probs(
    features: FloatArray, labels: IntArray, *, n_classes: int, folds: int = 5, seed: int = 0
) -> NDArray[np.float64]:
    """Out-of-fold class probabilities (n, n_classes) of ``features`` with ``labels``.

    A standardised logistic regression in stratified folds (at most ``folds``, at
    least 2; fewer when the rarest class has fewer items). Columns of classes
    absent from ``labels`` are 0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels, dtype=np.int64)
    x = np.asarray(features, dtype=np.float32)
    present, counts = np.unique(y, return_counts=True)
    splits = int(min(folds, counts.min()))
    if len(present) < 2 or splits < 2:
        raise ValueError("mistakes needs at least two labels in each of two classes")
    out = np.zeros((len(y), n_classes), dtype=np.float64)
    for train, test in StratifiedKFold(splits, shuffle=True, random_state=seed).split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        model.fit(x[train], y[train])
        out[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return out


def label_issues(labels: IntArray, pred_probs: FloatArray) -> tuple[IntArray, FloatArray]:
    """``(rows, suspicion)`` of likely label errors, most suspicious first.

    ``labels`` (n,) index the columns of ``pred_probs`` (n, k); only classes that
    occur in ``labels`` are kept (cleanlab needs every class to have examples).
    ``suspicion`` is 1 - the probability of the given label.
    """
    from cleanlab.filter import find_label_issues

    y = np.asarray(labels, dtype=np.int64)
    present = np.unique(y)
    if len(present) < 2:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    remap = np.full(int(y.max()) + 1, -1, dtype=np.int64)
    remap[present] = np.arange(len(present))
    compact = remap[y]
    p = np.asarray(pred_probs, dtype=np.float64)[:, present]
    p = np.clip(p, 1e-9, None)
    p = p / p.sum(axis=1, keepdims=True)
    rows = find_label_issues(
        compact, p, return_indices_ranked_by="self_confidence", n_jobs=1, verbose=False
    )
    rows = np.asarray(rows, dtype=np.int64)
    return rows, 1.0 - p[rows, compact[rows]]


class Mistakes(Strategy):
    name = "mistakes"
    title = "Likely mistakes"
    description = (
        "Labelled items whose human label is likely wrong: confident learning "
        "(cleanlab) on out-of-fold probabilities."
    )
    needs: ClassVar[frozenset[str]] = frozenset({"labels", "features|oof_probs"})
    labelled_items = True

    def __call__(self, req: SelectionRequest) -> Ranked:
        with one_blas_thread():
            return self._rank(req)

    def _rank(self, req: SelectionRequest) -> Ranked:
        assert req.labels is not None
        labels = np.asarray(req.labels, dtype=np.int64)
        rows = np.flatnonzero(labels >= 0)
        if req.oof_probs is not None:
            probs = np.asarray(req.oof_probs, dtype=np.float64)[rows]
        else:
            assert req.features is not None
            n_classes = max(len(req.class_names), int(labels.max()) + 1)
            probs = out_of_fold_probs(
                req.features[rows], labels[rows], n_classes=n_classes, seed=req.seed
            )
        found, suspicion = label_issues(labels[rows], probs)
        picked = rows[found]
        keep = req.free()[picked]
        return make_ranked(req, picked[keep], suspicion[keep])
