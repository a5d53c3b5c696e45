"""Plain-function trainers the service layer calls: arrays in, result dataclasses out.

Each member (a backbone's features) gets its own head; the members share one
fold plan, so their out-of-fold (OOF) predictions can be combined into OOF
predictions of the ensemble, which give its metrics and the conformal
threshold. Then every member is refitted on all labels and predicts every
item with one matrix product.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
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
    cross_validate_scores,
    kfold,
    stratified_folds,
)
from loupe.learn.ensemble import (
    DEFAULT_THRESHOLD,
    combine_members,
    confidence,
    reason_counts,
    score_spread,
    triage_classes,
    triage_scores,
    uncertainty,
)
from loupe.learn.metrics import MetricSpec, classification_metrics, score_metrics
from loupe.learn.regress import ScoreHead, snap

FeaturePair = tuple[NDArray[np.floating], NDArray[np.floating]]  # (X_labelled, X_all)


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run BLAS/LAPACK on one thread inside the block.

    Fitting works on small matrices (labelled items x dim), where extra BLAS
    threads barely help and, on a busy machine (web server, feature jobs),
    their spin-waiting made our fits 3-8x slower. No-op without threadpoolctl.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass
class ClassPredictions:
    """Predictions for all ``N`` items of a class project."""

    probs: NDArray[np.float32]  # (N, k) ensemble: mean of calibrated member probs, tempered
    member_probs: dict[str, NDArray[np.float32]]  # name -> (N, k) calibrated
    label: NDArray[np.int64]  # (N,) argmax of probs
    confidence: NDArray[np.float32]  # (N,) max of probs
    uncertainty: NDArray[np.float32]  # (N,) normalised entropy of probs, [0, 1]
    flagged: NDArray[np.bool_]  # (N,)
    reason: list[str | None]  # 'disagreement' | 'low_confidence' | 'ambiguous_set' | None
    prediction_sets: NDArray[np.bool_] | None  # (N, k) conformal sets, None when off


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

    def metrics_json(self) -> dict[str, Any]:
        """Plain JSON: metrics, temperatures, conformal threshold, fold plan, flag counts."""
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
            "timings": self.timings,
        }


def _check_members(
    member_features: Mapping[str, FeaturePair], n_labelled: int
) -> dict[str, tuple[NDArray[np.float32], NDArray[np.float32]]]:
    if not member_features:
        raise ValueError("member_features is empty: need at least one member")
    out = {}
    n_all = None
    for name, (labelled, every) in member_features.items():
        x_lab = np.asarray(labelled, dtype=np.float32)
        x_all = np.asarray(every, dtype=np.float32)
        if x_lab.ndim != 2 or x_all.ndim != 2 or x_lab.shape[1] != x_all.shape[1]:
            raise ValueError(
                f"member_features[{name!r}] must be ((n, dim), (N, dim)), "
                f"got {x_lab.shape} and {x_all.shape}"
            )
        if len(x_lab) != n_labelled:
            raise ValueError(
                f"member_features[{name!r}] has {len(x_lab)} labelled rows "
                f"but there are {n_labelled} labels"
            )
        if n_all is not None and len(x_all) != n_all:
            raise ValueError(f"member_features[{name!r}] has {len(x_all)} items, others {n_all}")
        n_all = len(x_all)
        out[name] = (x_lab, x_all)
    return out


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
) -> ClassifierEnsembleResult:
    """Fit calibrated softmax heads per member, cross-validate, predict and triage every item.

    ``member_features`` maps a member name to ``(X_labelled (n, dim), X_all (N, dim))``;
    ``y`` ``(n,)`` holds class indices into ``class_names``. ``threshold`` is the
    confidence below which agreeing members still flag an item; ``conformal_alpha``
    (``None`` to turn off) the miscoverage of the conformal sets whose size > 1
    flags an item. ``C`` is the heads' inverse L2 strength.
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
    members = _check_members(member_features, len(labels))
    timings: dict[str, float] = {"cv": 0.0, "fit": 0.0, "predict": 0.0}

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
                lambda: ClassifierHead(C=C), x_lab, labels, class_names=names, plan=plan, seed=seed
            )
            timings["cv"] += time.perf_counter() - start
            start = time.perf_counter()
            head = ClassifierHead(C=C).fit(x_lab, labels, n_classes=n_classes, seed=seed)
            head.temperature = cv.temperature
            timings["fit"] += time.perf_counter() - start
        start = time.perf_counter()
        member_probs[name] = head.predict_proba(x_all)
        timings["predict"] += time.perf_counter() - start
        heads[name] = head.to_state()
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

    probs = temper_probs(combine_members(list(member_probs.values())), ensemble_temperature)
    sets_all = prediction_sets(probs, qhat) if qhat is not None else None
    flagged, reasons = triage_classes(
        list(member_probs.values()), probs, threshold=threshold, conformal_sets=sets_all
    )
    predictions = ClassPredictions(
        probs=probs,
        member_probs=member_probs,
        label=probs.argmax(axis=1),
        confidence=confidence(probs),
        uncertainty=uncertainty(probs),
        flagged=flagged,
        reason=reasons,
        prediction_sets=sets_all,
    )
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
    )


@dataclass
class ScorePredictions:
    """Predictions for all ``N`` items of a score project (original units)."""

    values: NDArray[np.float64]  # (N, m) ensemble: mean of member raw values, snapped
    raw: NDArray[np.float32]  # (N, m) mean of member raw values (unclipped)
    member_values: dict[str, NDArray[np.float64]]  # name -> (N, m) snapped
    spread: NDArray[np.float32]  # (N, m) (max - min) across members, in steps
    uncertainty: NDArray[np.float32]  # (N,) largest spread over metrics, in steps
    flagged: NDArray[np.bool_]  # (N,)
    reason: list[str | None]  # 'members differ by more than one step on <metrics>' | None


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

    def metrics_json(self) -> dict[str, Any]:
        """Plain JSON: per-member and ensemble OOF metrics, fold plan, flag counts."""
        return {
            "task": "scores",
            "metrics": self.metrics,
            "members": self.member_metrics,
            "ensemble": self.ensemble_metrics,
            "cv": self.cv,
            "flagged": int(self.predictions.flagged.sum()),
            "flag_reasons": dict(reason_counts(self.predictions.reason)),
            "timings": self.timings,
        }


def train_score_ensemble(
    member_features: Mapping[str, FeaturePair],
    Y: NDArray[np.floating],
    metrics: Sequence[MetricSpec],
    *,
    seed: int = 0,
    max_splits: int = DEFAULT_SPLITS,
) -> ScoreEnsembleResult:
    """Fit ridge heads per member, cross-validate, predict, snap and triage every item.

    ``Y`` is ``(n, m)`` in the metrics' units (``metrics``: ``[{name, min, max, step}]``).
    Items are flagged when members' snapped values differ by more than one step.
    """
    targets = np.asarray(Y, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[1] != len(metrics) or len(targets) == 0:
        raise ValueError(f"Y must be (n, {len(metrics)}) with n > 0, got {targets.shape}")
    specs = [dict(m) for m in metrics]
    members = _check_members(member_features, len(targets))
    timings: dict[str, float] = {"cv": 0.0, "fit": 0.0, "predict": 0.0}
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
    if plan.n_splits:
        truth = targets[plan.evaluated]
        oof_snapped = [snap(raw, specs) for raw in oof_raw]
        flagged_oof, _ = triage_scores(oof_snapped, specs)
        ensemble_metrics = {
            "per_metric": score_metrics(truth, snap(combine_members(oof_raw), specs), specs),
            "member_agreement": float(1.0 - flagged_oof.mean()),
            "cv": plan.describe(),
        }
    raw = combine_members(list(member_raw.values()))
    member_values = {name: snap(values, specs) for name, values in member_raw.items()}
    flagged, reasons = triage_scores(list(member_values.values()), specs)
    spread = score_spread(list(member_values.values()), specs)
    predictions = ScorePredictions(
        values=snap(raw, specs),
        raw=raw,
        member_values=member_values,
        spread=spread,
        uncertainty=spread.max(axis=1) if spread.shape[1] else np.zeros(len(raw), np.float32),
        flagged=flagged,
        reason=reasons,
    )
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
    )
