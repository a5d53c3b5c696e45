"""Evaluation metrics as plain JSON-able dicts (floats, ints, lists, ``None``).

``None`` stands for an undefined value (precision of a class never
predicted, Spearman of a constant column), never NaN, so the result can go
straight into ``json.dumps``.

Every rate comes with its 95% interval, because with 18 labels "100%" alone
says little: rates (accuracy, recall, within-one-step) get the Wilson score
interval (good coverage at small ``n`` and at 0% / 100%, where the normal
approximation gives a zero-width interval), mean absolute errors a
percentile bootstrap (errors are skewed and bounded below by 0).
:func:`format_rate` writes one for people: ``100% (18 labels, 95% CI 82-100%)``.
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


# two-sided 95%: the normal quantile for Wilson, the tails for the bootstrap
Z_95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def wilson_interval(successes: float, n: int, *, z: float = Z_95) -> list[float] | None:
    """Wilson score interval ``[lo, hi]`` (within ``[0, 1]``) for ``successes`` out of ``n``.

    ``z`` is the normal quantile (default: two-sided 95%). ``None`` when ``n == 0``.
    """
    if n <= 0:
        return None
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    # at p = 0 or 1 one bound is exactly 0 or 1; clip float noise
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return [float(lo), float(hi)]


def bootstrap_mean_interval(
    values: NDArray[np.floating],
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> list[float] | None:
    """Percentile bootstrap interval ``[lo, hi]`` of the mean of ``values`` ``(n,)``.

    Deterministic for a given ``seed``. ``None`` for fewer than 2 values.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    n = len(x)
    if n < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    # in blocks so that n x resamples indices never sit in memory at once
    block = max(1, min(resamples, 2_000_000 // n))
    for start in range(0, resamples, block):
        stop = min(resamples, start + block)
        means[start:stop] = x[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return [float(lo), float(hi)]


def format_rate(
    p: float | None, n: int, ci: Sequence[float] | None, *, unit: str = "labels"
) -> str:
    """A rate for people: ``format_rate(1.0, 18, [0.824, 1.0])`` -> ``'100% (18 labels, 95% CI
    82-100%)'``.

    ``p`` and ``ci`` are fractions in ``[0, 1]`` (``ci`` from :func:`wilson_interval`;
    ``None`` leaves the interval out). The rate never rounds to 100% or 0% unless it
    is exactly that; the interval is rounded outwards, with the same rule. ``unit``
    names what ``n`` counts (``'label'`` when ``n == 1``). Returns ``'n/a'`` when ``p`` is ``None``.
    """
    if p is None:
        return "n/a"
    percent = 100.0 * float(p)
    shown = round(percent)
    if shown == 100 and p < 1.0:
        shown = 99
    elif shown == 0 and p > 0.0:
        shown = 1
    noun = unit[:-1] if n == 1 and unit.endswith("s") else unit
    if ci is None:
        return f"{shown}% ({n} {noun})"
    lo = math.floor(100.0 * float(ci[0]) + 1e-9)
    hi = math.ceil(100.0 * float(ci[1]) - 1e-9)
    # as for the rate: 100% and 0% only when the bound is exactly that
    hi = min(hi, 99) if ci[1] < 1.0 else hi
    lo = max(lo, 1) if ci[0] > 0.0 else lo
    return f"{shown}% ({n} {noun}, 95% CI {lo}-{hi}%)"


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
    recall over classes that occur in ``y_true``. ``accuracy_ci`` and each
    class's ``recall_ci`` are 95% Wilson intervals ``[lo, hi]`` (``None`` without
    items).
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
            "recall_ci": wilson_interval(float(hits[i]), int(support[i])),
            "support": int(support[i]),
        }
        for i, name in enumerate(class_names)
    }
    recalls = [hits[i] / support[i] for i in range(k) if support[i] > 0]
    return {
        "n": int(n),
        "accuracy": _ratio(float(hits.sum()), float(n)),
        "accuracy_ci": wilson_interval(float(hits.sum()), int(n)),
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
    ``{name: {"n", "mae", "mae_ci", "within_one_step", "within_one_step_ci", "spearman"}}``
    where ``mae_ci`` is a 95% percentile-bootstrap interval (fixed seed) and
    ``within_one_step_ci`` a 95% Wilson interval (``None`` when undefined).
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
            "mae_ci": bootstrap_mean_interval(error, seed=j),
            "within_one_step": float(within.mean()) if len(t) else None,
            "within_one_step_ci": wilson_interval(float(within.sum()), len(t)),
            "spearman": spearman(t, p),
        }
    return out
