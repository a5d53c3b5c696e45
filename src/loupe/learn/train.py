"""Plain-function trainers the service layer calls: arrays in, result dataclasses out.

Each member (a backbone's features) gets its own head; the members share one
fold plan, so their out-of-fold (OOF) predictions can be combined into OOF
predictions of the ensemble, which give its metrics and the conformal
threshold. Then every member is refitted on all labels and predicts every
item with one matrix product.

Triage flags items for review (:mod:`loupe.learn.ensemble`); with ``novelty``
on, items unlike every labelled item (:mod:`loupe.learn.novelty`) are flagged
``"novel"`` first, and ``max_flag_fraction`` (a project's review budget) caps
the share of flagged items.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from loupe.learn.calibration import (
    conformal_threshold,
    expected_calibration_error,
    fit_temperature,
    prediction_sets,
    temper_probs,
)
from loupe.learn.classify import ClassifierHead
from loupe.learn.crossval import (
    DEFAULT_SPLITS,
    cross_validate_classifier,
    stratified_folds,
)
from loupe.learn.ensemble import (
    DEFAULT_THRESHOLD,
    apply_review_budget,
    combine_members,
    confidence,
    reason_counts,
    triage_classes,
    uncertainty,
)
from loupe.learn.members import (
    FeaturePair,
    check_budget,
    check_members,
    find_novelty,
    single_threaded_blas,
    triage_summary,
)
from loupe.learn.metrics import classification_metrics
from loupe.learn.novelty import Novelty
from loupe.learn.train_scores import (
    ScoreEnsembleResult,
    ScorePredictions,
    score_drafts,
    train_score_ensemble,
)

__all__ = [
    "ClassPredictions",
    "class_drafts",
    "score_drafts",
    "ClassifierEnsembleResult",
    "FeaturePair",
    "ScoreEnsembleResult",
    "ScorePredictions",
    "single_threaded_blas",
    "train_classifier_ensemble",
    "train_score_ensemble",
]


@dataclass
class ClassPredictions:
    """Predictions for all ``N`` items of a class project."""

    probs: NDArray[np.float32]  # (N, k) ensemble: mean of calibrated member probs, tempered
    member_probs: dict[str, NDArray[np.float32]]  # name -> (N, k) calibrated
    label: NDArray[np.int64]  # (N,) argmax of probs
    confidence: NDArray[np.float32]  # (N,) max of probs
    uncertainty: NDArray[np.float32]  # (N,) normalised entropy of probs, [0, 1]
    flagged: NDArray[np.bool_]  # (N,) after the review budget
    # 'novel' | 'disagreement' | 'low_confidence' | 'ambiguous_set' | None
    reason: list[str | None]
    prediction_sets: NDArray[np.bool_] | None  # (N, k) conformal sets, None when off
    # (N,) unlike every labelled item: never auto-accept, even when the budget unflags it
    novel: NDArray[np.bool_]
    novelty: NDArray[np.float32]  # (N,) kNN distance / threshold, mean over members (0: off)


@dataclass
class ClassifierEnsembleResult:
    """Everything a class ModelVersion stores; ``metrics_json()`` is its metrics column."""

    class_names: list[str]
    member_names: list[str]
    heads: dict[str, dict[str, Any]]  # name -> ClassifierHead.to_state() (temperature inside)
    temperatures: dict[str, float]  # per member
    ensemble_temperature: float  # applied to the mean of calibrated member probs
    threshold: float
    conformal_alpha: float | None
    qhat: float | None  # conformal threshold on 1 - p_true; None when off or no CV
    cv: dict[str, Any]  # FoldPlan.describe()
    member_metrics: dict[str, dict[str, Any] | None]  # OOF, calibrated; ece_before / ece_after
    ensemble_metrics: dict[str, Any] | None  # same for the ensemble, + conformal coverage
    predictions: ClassPredictions
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    triage: dict[str, Any] = field(default_factory=dict)  # triage_summary()
    novelty: Novelty | None = None  # thresholds and centres: drafts new items later

    def metrics_json(self) -> dict[str, Any]:
        """Plain JSON: metrics (with 95% intervals), temperatures, conformal threshold,
        fold plan, flag counts, novelty and review budget (``triage``)."""
        return {
            "task": "classes",
            "class_names": self.class_names,
            "members": self.member_metrics,
            "ensemble": self.ensemble_metrics,
            "temperatures": self.temperatures,
            "ensemble_temperature": self.ensemble_temperature,
            "threshold": self.threshold,
            "conformal_alpha": self.conformal_alpha,
            "qhat": self.qhat,
            "cv": self.cv,
            "flagged": int(self.predictions.flagged.sum()),
            "flag_reasons": dict(reason_counts(self.predictions.reason)),
            "triage": self.triage,
            "timings": self.timings,
        }


def train_classifier_ensemble(
    member_features: Mapping[str, FeaturePair],
    y: NDArray[np.integer],
    class_names: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    seed: int = 0,
    conformal_alpha: float | None = 0.1,
    C: float = 1.0,
    max_splits: int = DEFAULT_SPLITS,
    novelty: bool = True,
    max_flag_fraction: float | None = None,
    head: Callable[..., Any] = ClassifierHead,
) -> ClassifierEnsembleResult:
    """Fit calibrated softmax heads per member, cross-validate, predict and triage every item.

    ``member_features`` maps a member name to ``(X_labelled (n, dim), X_all (N, dim))``;
    ``y`` ``(n,)`` holds class indices into ``class_names``. ``threshold`` is the
    confidence below which agreeing members still flag an item; ``conformal_alpha``
    (``None`` to turn off) the miscoverage of the conformal sets whose size > 1
    flags an item. ``C`` is the heads' inverse L2 strength. ``novelty`` flags items
    unlike every labelled item (reason ``"novel"``); ``max_flag_fraction`` (the
    review budget, e.g. 0.2; ``None``: no cap) keeps at most that share of the
    items flagged, novel ones first, then the least confident. ``head`` is the head
    class (``loupe.learn.CLASS_HEADS[name]``), built as ``head(C=C)``.
    """
    labels = np.asarray(y, dtype=np.int64)
    names = list(class_names)
    n_classes = len(names)
    if n_classes < 1:
        raise ValueError("class_names is empty")
    if labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"y must be a non-empty (n,) array, got shape {labels.shape}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"y must hold indices into class_names (0..{n_classes - 1})")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    check_budget(max_flag_fraction)
    members = check_members(member_features, len(labels))
    timings: dict[str, float] = {"cv": 0.0, "fit": 0.0, "predict": 0.0}
    found = find_novelty(members, novelty, timings)

    plan = stratified_folds(labels, seed=seed, max_splits=max_splits, class_names=names)
    heads: dict[str, dict[str, Any]] = {}
    temperatures: dict[str, float] = {}
    member_metrics: dict[str, dict[str, Any] | None] = {}
    member_probs: dict[str, NDArray[np.float32]] = {}
    oof_before: list[NDArray[np.float32]] = []
    oof_after: list[NDArray[np.float32]] = []
    for name, (x_lab, x_all) in members.items():
        with single_threaded_blas():
            start = time.perf_counter()
            cv = cross_validate_classifier(
                lambda: head(C=C), x_lab, labels, class_names=names, plan=plan, seed=seed
            )
            timings["cv"] += time.perf_counter() - start
            start = time.perf_counter()
            fitted = head(C=C).fit(x_lab, labels, n_classes=n_classes, seed=seed)
            fitted.temperature = cv.temperature
            timings["fit"] += time.perf_counter() - start
        start = time.perf_counter()
        member_probs[name] = fitted.predict_proba(x_all)
        timings["predict"] += time.perf_counter() - start
        heads[name] = fitted.to_state()
        temperatures[name] = cv.temperature
        member_metrics[name] = cv.metrics
        oof_before.append(cv.probs_before)
        oof_after.append(cv.probs)

    start = time.perf_counter()
    qhat = None
    ensemble_metrics = None
    ensemble_temperature = 1.0
    if plan.n_splits:
        truth = labels[plan.evaluated]
        before = combine_members(oof_before)
        # averaging calibrated members that disagree gives an under-confident
        # mixture: one more temperature, on the mixture's log probabilities
        mixed = combine_members(oof_after)
        if len(members) > 1:
            ensemble_temperature = fit_temperature(np.log(np.clip(mixed, 1e-30, None)), truth)
        after = temper_probs(mixed, ensemble_temperature)
        ensemble_metrics = classification_metrics(truth, after.argmax(axis=1), after, names)
        votes = np.stack([p.argmax(axis=1) for p in oof_after])
        ensemble_metrics.update(
            ece_before=expected_calibration_error(before, truth),
            ece_members_calibrated=expected_calibration_error(mixed, truth),
            ece_after=ensemble_metrics["ece"],
            temperature=ensemble_temperature,
            member_agreement=float(np.mean(np.all(votes == votes[:1], axis=0))),
            cv=plan.describe(),
        )
        if conformal_alpha is None:
            pass
        elif math.ceil((len(truth) + 1) * (1 - conformal_alpha)) > len(truth):
            # the finite-sample quantile would be "every class": no set is informative
            ensemble_metrics["conformal_note"] = (
                f"conformal sets off: {len(truth)} evaluated labels are too few for "
                f"{1 - conformal_alpha:.0%} coverage"
            )
        else:
            qhat = conformal_threshold(after, truth, conformal_alpha)
            sets = prediction_sets(after, qhat)
            ensemble_metrics.update(
                conformal_oof_coverage=float(np.mean(sets[np.arange(len(truth)), truth])),
                conformal_oof_mean_set_size=float(sets.sum(axis=1).mean()),
            )

    predictions, flagged_before = class_drafts(
        member_probs,
        ensemble_temperature=ensemble_temperature,
        qhat=qhat,
        threshold=threshold,
        novelty=found,
        max_flag_fraction=max_flag_fraction,
    )
    n_all = len(predictions.probs)
    timings["ensemble"] = time.perf_counter() - start
    return ClassifierEnsembleResult(
        class_names=names,
        member_names=list(members),
        heads=heads,
        temperatures=temperatures,
        ensemble_temperature=ensemble_temperature,
        threshold=float(threshold),
        conformal_alpha=conformal_alpha,
        qhat=qhat,
        cv=plan.describe(),
        member_metrics=member_metrics,
        ensemble_metrics=ensemble_metrics,
        predictions=predictions,
        timings=timings,
        triage=triage_summary(found, max_flag_fraction, flagged_before, n_all),
        novelty=found,
    )


def class_drafts(
    member_probs: Mapping[str, NDArray[np.float32]],
    *,
    ensemble_temperature: float,
    qhat: float | None,
    threshold: float,
    novelty: Novelty | None,
    max_flag_fraction: float | None,
) -> tuple[ClassPredictions, int]:
    """The ensemble's drafts from its members' calibrated probabilities: combined and
    tempered, conformal sets, triage, the review budget. One code path for a training
    (every item) and a stored version drafting items added later (a chunk of them: the
    budget then caps each chunk's share, so the whole stays within it).

    Returns the predictions and how many items were flagged before the budget.
    """
    probs = temper_probs(combine_members(list(member_probs.values())), ensemble_temperature)
    sets_all = prediction_sets(probs, qhat) if qhat is not None else None
    novel = None if novelty is None else novelty.novel
    flagged, reasons = triage_classes(
        list(member_probs.values()),
        probs,
        threshold=threshold,
        conformal_sets=sets_all,
        novel=novel,
    )
    flagged_before = int(flagged.sum())
    top = confidence(probs)
    flagged, reasons = apply_review_budget(
        flagged,
        reasons,
        uncertainty=1.0 - top,  # least confident first, as the benchmark's baseline
        max_flag_fraction=max_flag_fraction,
        novelty=None if novelty is None else novelty.novelty,
    )
    n_all = len(probs)
    predictions = ClassPredictions(
        probs=probs,
        member_probs=dict(member_probs),
        label=probs.argmax(axis=1),
        confidence=top,
        uncertainty=uncertainty(probs),
        flagged=flagged,
        reason=reasons,
        prediction_sets=sets_all,
        novel=np.zeros(n_all, dtype=bool) if novel is None else novel,
        novelty=np.zeros(n_all, dtype=np.float32) if novelty is None else novelty.novelty,
    )
    return predictions, flagged_before
