"""Evaluation metrics as plain JSON-able dicts (floats, ints, lists, ``None``).

``None`` stands for an undefined value (precision of a class never
predicted, Spearman of a constant column), never NaN, so the result can go
straight into ``json.dumps``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.calibration import expected_calibration_error

MetricSpec = Mapping[str, Any]  # {"name": str, "min": float, "max": float, "step": float | None}

# A metric with no step (0 / None) is continuous; "one step" is then this
# fraction of its range, for agreement metrics and for triage.
CONTINUOUS_STEP_FRACTION = 0.1


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def classification_metrics(
    y_true: NDArray[np.integer],
    y_pred: NDArray[np.integer],
    probs: NDArray[np.floating] | None,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class precision/recall/support, confusion, ECE.

    ``y_true`` / ``y_pred`` are ``(n,)`` class indices into ``class_names``;
    ``probs`` ``(n, k)`` (optional) gives ``ece``. ``confusion[i][j]`` counts
    items of true class ``i`` predicted as ``j``. Balanced accuracy is the mean
    recall over classes that occur in ``y_true``.
    """
    truth = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(y_pred, dtype=np.int64)
    k = len(class_names)
    if truth.shape != pred.shape:
        raise ValueError(f"y_true {truth.shape} and y_pred {pred.shape} must match")
    n = len(truth)
    confusion = np.zeros((k, k), dtype=np.int64)
    if n:
        np.add.at(confusion, (truth, pred), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    hits = np.diag(confusion)
    per_class = {
        name: {
            "precision": _ratio(float(hits[i]), float(predicted[i])),
            "recall": _ratio(float(hits[i]), float(support[i])),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    recalls = [hits[i] / support[i] for i in range(k) if support[i] > 0]
    return {
        "n": int(n),
        "accuracy": _ratio(float(hits.sum()), float(n)),
        "balanced_accuracy": float(np.mean(recalls)) if recalls else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "ece": expected_calibration_error(probs, truth) if probs is not None and n else None,
    }


def metric_step(metric: MetricSpec) -> float:
    """The metric's step, or ``CONTINUOUS_STEP_FRACTION`` of its range when it has none."""
    step = metric.get("step")
    if step is not None and float(step) > 0:
        return float(step)
    return CONTINUOUS_STEP_FRACTION * (float(metric["max"]) - float(metric["min"]))


def _ranks(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(a: NDArray[np.floating], b: NDArray[np.floating]) -> float | None:
    """Spearman's rank correlation (ties averaged); ``None`` if either side is constant."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    rx, ry = _ranks(x), _ranks(y)
    rx -= rx.mean()
    ry -= ry.mean()
    return float(np.dot(rx, ry) / math.sqrt(np.dot(rx, rx) * np.dot(ry, ry)))


def score_metrics(
    y_true: NDArray[np.floating],
    y_pred: NDArray[np.floating],
    metrics: Sequence[MetricSpec],
) -> dict[str, dict[str, Any]]:
    """Per metric: ``mae``, ``within_one_step`` (share with ``|pred - true| <= step``), Spearman.

    ``y_true`` and ``y_pred`` are ``(n, m)`` in the metrics' original units
    (pass snapped predictions: what the user sees). Returns
    ``{name: {"n", "mae", "within_one_step", "spearman"}}``.
    """
    truth = np.asarray(y_true, dtype=np.float64).reshape(len(y_true), -1)
    pred = np.asarray(y_pred, dtype=np.float64).reshape(len(y_pred), -1)
    if truth.shape != pred.shape or truth.shape[1] != len(metrics):
        raise ValueError(
            f"y_true {truth.shape} and y_pred {pred.shape} must be (n, {len(metrics)})"
        )
    out: dict[str, dict[str, Any]] = {}
    for j, metric in enumerate(metrics):
        t, p = truth[:, j], pred[:, j]
        error = np.abs(p - t)
        # relative slack so 0.1 + 0.2 vs 0.3 style float noise counts as one step
        within = error <= metric_step(metric) * (1 + 1e-9) + 1e-12
        out[str(metric["name"])] = {
            "n": int(len(t)),
            "mae": float(error.mean()) if len(t) else None,
            "within_one_step": float(within.mean()) if len(t) else None,
            "spearman": spearman(t, p),
        }
    return out
