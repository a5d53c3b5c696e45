"""The score-project trainer: ridge heads per member, cross-validated, snapped, triaged.

Arrays in, a result dataclass out, like :func:`loupe.learn.train.train_classifier_ensemble`
(which re-exports everything here).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.crossval import DEFAULT_SPLITS, cross_validate_scores, kfold
from loupe.learn.ensemble import (
    DEFAULT_ALPHA,
    apply_review_budget,
    combine_members,
    conformal_radius,
    interval_steps,
    reason_counts,
    score_intervals,
    score_spread,
    triage_scores,
)
from loupe.learn.members import (
    FeaturePair,
    check_budget,
    check_members,
    find_novelty,
    single_threaded_blas,
    triage_summary,
)
from loupe.learn.metrics import MetricSpec, score_metrics
from loupe.learn.novelty import Novelty
from loupe.learn.regress import ScoreHead, snap


@dataclass
class ScorePredictions:
    """Predictions for all ``N`` items of a score project (original units)."""

    values: NDArray[np.float64]  # (N, m) ensemble: mean of member raw values, snapped
    raw: NDArray[np.float32]  # (N, m) mean of member raw values (unclipped)
    member_values: dict[str, NDArray[np.float64]]  # name -> (N, m) snapped
    spread: NDArray[np.float32]  # (N, m) (max - min) across members, in steps
    # (N,) widest member spread or conformal interval over metrics, in steps
    uncertainty: NDArray[np.float32]
    flagged: NDArray[np.bool_]  # (N,) after the review budget
    # 'novel' | 'members differ by more than one step on <metrics>' | 'wide interval on <metrics>'
    reason: list[str | None]
    novel: NDArray[np.bool_]  # (N,) unlike every labelled item; never auto-accept these
    novelty: NDArray[np.float32]  # (N,) kNN distance / threshold, mean over members (0: off)
    # (N, m) split-conformal interval bounds (1 - alpha coverage); None: too few OOF labels
    interval_lo: NDArray[np.float64] | None = None
    interval_hi: NDArray[np.float64] | None = None


@dataclass
class ScoreEnsembleResult:
    """Everything a score ModelVersion stores; ``metrics_json()`` is its metrics column."""

    metrics: list[dict[str, Any]]  # the metric specs {name, min, max, step}
    member_names: list[str]
    heads: dict[str, dict[str, Any]]  # name -> ScoreHead.to_state()
    cv: dict[str, Any]
    member_metrics: dict[str, dict[str, Any] | None]  # {"per_metric": {...}, "cv": {...}}
    ensemble_metrics: dict[str, Any] | None
    predictions: ScorePredictions
    timings: dict[str, float] = field(default_factory=dict)
    triage: dict[str, Any] = field(default_factory=dict)  # triage_summary()
    conformal: dict[str, Any] | None = None  # {alpha, radius: {metric: q}}; None: too few
    novelty: Novelty | None = None  # thresholds and centres: drafts new items later

    def metrics_json(self) -> dict[str, Any]:
        """Plain JSON: per-member and ensemble OOF metrics (with 95% intervals), fold plan,
        flag counts, novelty and review budget (``triage``)."""
        return {
            "task": "scores",
            "metrics": self.metrics,
            "members": self.member_metrics,
            "ensemble": self.ensemble_metrics,
            "cv": self.cv,
            "flagged": int(self.predictions.flagged.sum()),
            "flag_reasons": dict(reason_counts(self.predictions.reason)),
            "triage": self.triage,
            "conformal": self.conformal,
            "timings": self.timings,
        }


def train_score_ensemble(
    member_features: Mapping[str, FeaturePair],
    Y: NDArray[np.floating],
    metrics: Sequence[MetricSpec],
    *,
    seed: int = 0,
    max_splits: int = DEFAULT_SPLITS,
    novelty: bool = True,
    max_flag_fraction: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    max_interval_steps: float = 2.0,
) -> ScoreEnsembleResult:
    """Fit ridge heads per member, cross-validate, predict, snap and triage every item.

    ``Y`` is ``(n, m)`` in the metrics' units (``metrics``: ``[{name, min, max, step}]``).
    Items are flagged when they are unlike every labelled item (``novelty``, reason
    ``"novel"``), when members' snapped values differ by more than one step, or when
    the split-conformal interval (from the OOF residuals, ``1 - alpha`` coverage)
    spans more than ``max_interval_steps`` steps on a metric.
    ``max_flag_fraction`` (review budget; ``None``: no cap) keeps at most that share
    flagged: novel items first, then the widest member spread.
    """
    targets = np.asarray(Y, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[1] != len(metrics) or len(targets) == 0:
        raise ValueError(f"Y must be (n, {len(metrics)}) with n > 0, got {targets.shape}")
    specs = [dict(m) for m in metrics]
    check_budget(max_flag_fraction)
    members = check_members(member_features, len(targets))
    timings: dict[str, float] = {"cv": 0.0, "fit": 0.0, "predict": 0.0}
    found = find_novelty(members, novelty, timings)
    plan = kfold(len(targets), seed=seed, max_splits=max_splits)

    heads: dict[str, dict[str, Any]] = {}
    member_metrics: dict[str, dict[str, Any] | None] = {}
    member_raw: dict[str, NDArray[np.float32]] = {}
    oof_raw: list[NDArray[np.float32]] = []
    for name, (x_lab, x_all) in members.items():
        with single_threaded_blas():
            start = time.perf_counter()
            head = ScoreHead().fit(x_lab, targets, specs, seed=seed)
            timings["fit"] += time.perf_counter() - start
            # folds reuse the alphas chosen by exact LOO on all labels: one
            # eigendecomposition per member instead of one per fold (a choice among
            # a handful of alphas; its optimism in the OOF metrics is small)
            start = time.perf_counter()
            alphas = head.alpha_
            cv = cross_validate_scores(
                partial(ScoreHead, fixed_alphas=alphas),
                x_lab,
                targets,
                specs,
                plan=plan,
                seed=seed,
            )
            timings["cv"] += time.perf_counter() - start
        start = time.perf_counter()
        member_raw[name] = head.predict(x_all)
        timings["predict"] += time.perf_counter() - start
        heads[name] = head.to_state()
        member_metrics[name] = cv.metrics
        oof_raw.append(cv.raw)

    start = time.perf_counter()
    ensemble_metrics = None
    radius = None
    if plan.n_splits:
        truth = targets[plan.evaluated]
        oof_snapped = [snap(raw, specs) for raw in oof_raw]
        flagged_oof, _ = triage_scores(oof_snapped, specs)
        ensemble_metrics = {
            "per_metric": score_metrics(truth, snap(combine_members(oof_raw), specs), specs),
            "member_agreement": float(1.0 - flagged_oof.mean()),
            "cv": plan.describe(),
        }
        radius = conformal_radius(combine_members(oof_raw), truth, alpha=alpha)
    predictions, flagged_before = score_drafts(
        member_raw,
        specs,
        radius=radius,
        novelty=found,
        max_interval_steps=max_interval_steps,
        max_flag_fraction=max_flag_fraction,
    )
    n_all = len(predictions.raw)
    timings["ensemble"] = time.perf_counter() - start
    return ScoreEnsembleResult(
        metrics=specs,
        member_names=list(members),
        heads=heads,
        cv=plan.describe(),
        member_metrics=member_metrics,
        ensemble_metrics=ensemble_metrics,
        predictions=predictions,
        timings=timings,
        triage=triage_summary(found, max_flag_fraction, flagged_before, n_all),
        novelty=found,
        conformal=None
        if radius is None
        else {
            "alpha": alpha,
            "max_interval_steps": max_interval_steps,
            "radius": {str(m["name"]): float(q) for m, q in zip(specs, radius, strict=True)},
        },
    )


def score_drafts(
    member_raw: Mapping[str, NDArray[np.float32]],
    specs: Sequence[MetricSpec],
    *,
    radius: NDArray[np.floating] | None,
    novelty: Novelty | None,
    max_interval_steps: float,
    max_flag_fraction: float | None,
) -> tuple[ScorePredictions, int]:
    """The ensemble's score drafts from its members' raw predictions: combined and
    snapped, conformal intervals (``radius`` per metric, None: off), triage, the review
    budget. Shared by a training and a stored version drafting items added later.

    Returns the predictions and how many items were flagged before the budget.
    """
    raw = combine_members(list(member_raw.values()))
    member_values = {name: snap(values, specs) for name, values in member_raw.items()}
    novel = None if novelty is None else novelty.novel
    spread = score_spread(list(member_values.values()), specs)
    lo = hi = None
    interval_widths = None
    widths = spread
    if radius is not None:
        lo, hi = score_intervals(list(member_raw.values()), radius, specs)
        interval_widths = interval_steps(lo, hi, specs)
        widths = np.maximum(spread, interval_widths)
    flagged, reasons = triage_scores(
        list(member_values.values()),
        specs,
        novel=novel,
        widths=interval_widths,
        max_interval_steps=max_interval_steps,
    )
    flagged_before = int(flagged.sum())
    n_all = len(raw)
    widest = widths.max(axis=1) if widths.shape[1] else np.zeros(n_all, np.float32)
    flagged, reasons = apply_review_budget(
        flagged,
        reasons,
        uncertainty=widest,
        max_flag_fraction=max_flag_fraction,
        novelty=None if novelty is None else novelty.novelty,
    )
    predictions = ScorePredictions(
        values=snap(raw, specs),
        raw=raw,
        member_values=member_values,
        spread=spread,
        uncertainty=widest,
        flagged=flagged,
        reason=reasons,
        novel=np.zeros(n_all, dtype=bool) if novel is None else novel,
        novelty=np.zeros(n_all, dtype=np.float32) if novelty is None else novelty.novelty,
        interval_lo=lo,
        interval_hi=hi,
    )
    return predictions, flagged_before
