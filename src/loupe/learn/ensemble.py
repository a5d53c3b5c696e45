"""Combining ensemble members and triage: which items an expert should review, and why.

Class reasons, first applicable in this order:

- ``"novel"``: the item is unlike every labelled item (see
  :mod:`loupe.learn.novelty`; the UI says "unlike the labelled images"): its
  draft is a guess from outside the labelled data, however confident;
- ``"disagreement"``: the members' argmax classes differ;
- ``"low_confidence"``: they agree but the ensemble's max probability is
  below ``threshold``;
- ``"ambiguous_set"``: the conformal prediction set has more than one class.

Score items are flagged as novel first, then when the members differ by more
than one step, then when their split-conformal interval (:func:`conformal_radius`,
:func:`score_intervals`) spans more than ``max_interval_steps`` steps, so a
one-member project still flags the items its model cannot place.

A review budget (:func:`apply_review_budget`, ``max_flag_fraction``) caps the
share of flagged items: novel items are kept first (most novel first), then
the most uncertain ones (least confident for classes, widest member spread
for scores); the rest lose their flag and reason.

Uncertainty is the normalised entropy of the ensemble distribution,
``H(p) / log(k)`` in ``[0, 1]`` (0: one class certain, 1: uniform);
confidence is the ensemble's max probability.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.metrics import MetricSpec, metric_step

NOVEL = "novel"
DISAGREEMENT = "disagreement"
LOW_CONFIDENCE = "low_confidence"
AMBIGUOUS_SET = "ambiguous_set"
DEFAULT_THRESHOLD = 0.8
WIDE_INTERVAL = "wide interval"
DEFAULT_ALPHA = 0.1  # intervals cover the truth for 90% of items
DEFAULT_MAX_INTERVAL_STEPS = 2.0


def combine_members(member_probs: Sequence[NDArray[np.floating]]) -> NDArray[np.float32]:
    """Mean of the members' ``(n, k)`` probability matrices, float32 ``(n, k)``."""
    if not member_probs:
        raise ValueError("member_probs is empty")
    shapes = {np.shape(p) for p in member_probs}
    if len(shapes) != 1:
        raise ValueError(f"member_probs must share one shape, got {sorted(shapes)}")
    out = np.array(member_probs[0], dtype=np.float32, copy=True)
    for probs in member_probs[1:]:
        out += np.asarray(probs, dtype=np.float32)
    out /= np.float32(len(member_probs))
    return out


def confidence(probs: NDArray[np.floating]) -> NDArray[np.float32]:
    """Max probability per row, float32 ``(n,)``."""
    return np.asarray(probs, dtype=np.float32).max(axis=1)


def uncertainty(probs: NDArray[np.floating]) -> NDArray[np.float32]:
    """Normalised entropy ``-sum p log p / log k`` per row, float32 ``(n,)`` in ``[0, 1]``."""
    p = np.asarray(probs, dtype=np.float32)
    k = p.shape[1]
    if k < 2:
        return np.zeros(len(p), dtype=np.float32)
    safe = np.clip(p, 1e-12, 1.0)
    entropy = -(p * np.log(safe)).sum(axis=1)
    return np.clip(entropy / np.float32(np.log(k)), 0.0, 1.0).astype(np.float32)


def triage_classes(
    member_probs: Sequence[NDArray[np.floating]],
    ensemble_probs: NDArray[np.floating],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    conformal_sets: NDArray[np.bool_] | None = None,
    novel: NDArray[np.bool_] | None = None,
) -> tuple[NDArray[np.bool_], list[str | None]]:
    """Flag items for review: ``(flagged bool (n,), reason per item or None)``.

    ``member_probs`` are the members' ``(n, k)`` probabilities, ``ensemble_probs``
    their combination; ``conformal_sets`` an optional ``(n, k)`` boolean matrix
    from :func:`loupe.learn.calibration.prediction_sets`; ``novel`` an optional
    ``(n,)`` mask from :func:`loupe.learn.novelty.novelty_scores` (reason
    ``"novel"``, before every other reason).
    """
    ensemble = np.asarray(ensemble_probs)
    n = len(ensemble)
    is_novel = np.zeros(n, dtype=bool) if novel is None else np.asarray(novel, dtype=bool)
    if is_novel.shape != (n,):
        raise ValueError(f"novel must be ({n},), got {is_novel.shape}")
    votes = np.stack([np.asarray(p).argmax(axis=1) for p in member_probs])  # (members, n)
    disagree = np.any(votes != votes[:1], axis=0)
    low = ~disagree & (ensemble.max(axis=1) < threshold)
    ambiguous = np.zeros(n, dtype=bool)
    if conformal_sets is not None:
        ambiguous = ~disagree & ~low & (np.asarray(conformal_sets).sum(axis=1) > 1)
    codes = np.zeros(n, dtype=np.int8)
    codes[disagree] = 1
    codes[low] = 2
    codes[ambiguous] = 3
    codes[is_novel] = 4
    names: list[str | None] = [None, DISAGREEMENT, LOW_CONFIDENCE, AMBIGUOUS_SET, NOVEL]
    return codes > 0, [names[c] for c in codes.tolist()]


def apply_review_budget(
    flagged: NDArray[np.bool_],
    reasons: Sequence[str | None],
    *,
    uncertainty: NDArray[np.floating],
    max_flag_fraction: float | None,
    novelty: NDArray[np.floating] | None = None,
) -> tuple[NDArray[np.bool_], list[str | None]]:
    """Keep at most ``floor(max_flag_fraction * n)`` of the ``n`` items flagged.

    ``flagged`` ``(n,)`` and ``reasons`` come from :func:`triage_classes` or
    :func:`triage_scores`. Flagged items are ranked: reason ``"novel"`` first
    (by ``novelty`` ``(n,)``, highest first, when given), then by ``uncertainty``
    ``(n,)`` (highest first; ties keep item order). Items past the budget lose
    their flag and reason. ``max_flag_fraction`` ``None`` (or 1) keeps every flag.
    Returns new ``(flagged, reasons)``.
    """
    flags = np.asarray(flagged, dtype=bool).copy()
    out = list(reasons)
    n = len(flags)
    if len(out) != n or np.shape(uncertainty) != (n,):
        raise ValueError(
            f"flagged, reasons and uncertainty must have one entry per item ({n}), got "
            f"{len(out)} reasons and uncertainty of shape {np.shape(uncertainty)}"
        )
    if max_flag_fraction is None:
        return flags, out
    if not 0.0 <= max_flag_fraction <= 1.0:
        raise ValueError(f"max_flag_fraction must be in [0, 1], got {max_flag_fraction}")
    budget = int(np.floor(max_flag_fraction * n + 1e-9))
    candidates = np.flatnonzero(flags)
    if len(candidates) <= budget:
        return flags, out
    is_novel = np.array([out[i] == NOVEL for i in candidates], dtype=bool)
    extra = (
        np.zeros(len(candidates))
        if novelty is None
        else np.asarray(novelty, dtype=np.float64)[candidates]
    )
    # lexsort: the last key is the primary one; negate for "highest first"
    order = np.lexsort(
        (
            -np.asarray(uncertainty, dtype=np.float64)[candidates],
            np.where(is_novel, -extra, 0.0),
            ~is_novel,
        )
    )
    for i in candidates[order[budget:]].tolist():
        flags[i] = False
        out[i] = None
    return flags, out


def score_spread(
    member_preds: Sequence[NDArray[np.floating]], metrics: Sequence[MetricSpec]
) -> NDArray[np.float32]:
    """``(max - min) / step`` across members per item and metric, float32 ``(n, m)``.

    ``member_preds`` are ``(n, m)`` predictions in original units (snapped); a
    metric without a step uses :func:`loupe.learn.metrics.metric_step`.
    """
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_preds])  # (r, n, m)
    steps = np.array([metric_step(m) for m in metrics], dtype=np.float64)
    return ((stacked.max(axis=0) - stacked.min(axis=0)) / steps).astype(np.float32)


def conformal_radius(
    oof_pred: NDArray[np.floating],
    truth: NDArray[np.floating],
    *,
    alpha: float = DEFAULT_ALPHA,
) -> NDArray[np.float64] | None:
    """Split-conformal half-width per metric from out-of-fold residuals.

    ``oof_pred`` and ``truth`` are ``(n, m)`` in original units. Returns the
    ``ceil((n + 1)(1 - alpha)) / n`` quantile of ``|truth - oof_pred|`` per metric,
    float64 ``(m,)``, so ``[pred - q, pred + q]`` covers a new item's value with
    probability at least ``1 - alpha``; ``None`` when ``n`` is too small for that.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    pred = np.asarray(oof_pred, dtype=np.float64)
    true = np.asarray(truth, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 2:
        raise ValueError(f"oof_pred and truth must both be (n, m), got {pred.shape}, {true.shape}")
    n = len(pred)
    rank = int(np.ceil((n + 1) * (1.0 - alpha)))
    if n == 0 or rank > n:
        return None
    residuals: NDArray[np.float64] = np.sort(np.abs(true - pred), axis=0)[rank - 1]
    return residuals


def score_intervals(
    member_raw: Sequence[NDArray[np.floating]],
    radius: NDArray[np.floating],
    metrics: Sequence[MetricSpec],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-item intervals ``(lo, hi)``, each float64 ``(n, m)``, clipped to each metric's range.

    ``member_raw`` are the members' unsnapped ``(n, m)`` predictions; ``radius``
    ``(m,)`` from :func:`conformal_radius`. The interval is the union of every
    member's conformal band, so members that disagree widen it.
    """
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in member_raw])  # (r, n, m)
    low = np.array([float(m["min"]) for m in metrics])
    high = np.array([float(m["max"]) for m in metrics])
    q = np.asarray(radius, dtype=np.float64)
    lo = np.clip(stacked.min(axis=0) - q, low, high)
    hi = np.clip(stacked.max(axis=0) + q, low, high)
    return lo, hi


def interval_steps(
    lo: NDArray[np.floating], hi: NDArray[np.floating], metrics: Sequence[MetricSpec]
) -> NDArray[np.float32]:
    """Width of each interval in the metric's steps, float32 ``(n, m)``."""
    steps = np.array([metric_step(m) for m in metrics], dtype=np.float64)
    return ((np.asarray(hi) - np.asarray(lo)) / steps).astype(np.float32)


def triage_scores(
    member_preds: Sequence[NDArray[np.floating]],
    metrics: Sequence[MetricSpec],
    *,
    novel: NDArray[np.bool_] | None = None,
    widths: NDArray[np.floating] | None = None,
    max_interval_steps: float = DEFAULT_MAX_INTERVAL_STEPS,
) -> tuple[NDArray[np.bool_], list[str | None]]:
    """Flag novel items, members more than one step apart, and wide intervals.

    ``member_preds`` are ``(n, m)`` predictions in original units (snapped);
    ``metrics`` the specs ``[{name, min, max, step}]`` (the steps, and names for
    the reason); ``novel`` an optional ``(n,)`` mask (reason ``"novel"``, first);
    ``widths`` optional ``(n, m)`` interval widths in steps (:func:`interval_steps`):
    wider than ``max_interval_steps`` flags the item. Returns ``(flagged (n,),
    reasons)`` where a reason reads ``"novel"``, ``"members differ by more than
    one step on grade, size"`` or ``"wide interval on grade"``.
    """
    # tolerance so that exactly one step apart in float arithmetic is not "more than one"
    too_far = score_spread(member_preds, metrics) > 1.0 + 1e-5
    names = [str(m["name"]) for m in metrics]
    n = len(too_far)
    is_novel = np.zeros(n, dtype=bool) if novel is None else np.asarray(novel, dtype=bool)
    if is_novel.shape != (n,):
        raise ValueError(f"novel must be ({n},), got {is_novel.shape}")
    too_wide = np.zeros_like(too_far)
    if widths is not None:
        if np.shape(widths) != too_far.shape:
            raise ValueError(f"widths must be {too_far.shape}, got {np.shape(widths)}")
        too_wide = np.asarray(widths) > max_interval_steps + 1e-5
    flagged: NDArray[np.bool_] = np.any(too_far | too_wide, axis=1) | is_novel
    reasons: list[str | None] = [None] * n
    for i in np.flatnonzero(flagged).tolist():
        if is_novel[i]:
            reasons[i] = NOVEL
        elif too_far[i].any():
            which = ", ".join(name for name, far in zip(names, too_far[i], strict=True) if far)
            reasons[i] = f"members differ by more than one step on {which}"
        else:
            which = ", ".join(name for name, wide in zip(names, too_wide[i], strict=True) if wide)
            reasons[i] = f"{WIDE_INTERVAL} on {which}"
    return flagged, reasons


def reason_counts(reasons: Sequence[str | None]) -> Mapping[str, Any]:
    """``{reason: count}`` over flagged items, for summaries."""
    counts: dict[str, int] = {}
    for reason in reasons:
        if reason is not None:
            counts[reason] = counts.get(reason, 0) + 1
    return counts
