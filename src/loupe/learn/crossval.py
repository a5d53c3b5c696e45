"""K-fold cross-validation: fold plans, out-of-fold (OOF) logits / scores and their metrics.

The folds are a deterministic function of the labels and the seed, so the
frozen-feature heads (here) and fine-tuning (:func:`loupe.learn.finetune.finetune_cv`)
are evaluated on the *same* folds. ``k = min(max_splits, smallest class count)``;
a class with a single example cannot be both trained on and held out, so it is
always in the training part and left out of the metrics (the plan says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from loupe.learn.calibration import expected_calibration_error, fit_temperature, softmax
from loupe.learn.metrics import MetricSpec, classification_metrics, score_metrics
from loupe.learn.regress import snap

DEFAULT_SPLITS = 5


class ClassifierLike(Protocol):
    def fit(
        self, X: NDArray[np.floating], y: NDArray[np.integer], *, n_classes: int, seed: int
    ) -> Any: ...

    def logits(self, X: NDArray[np.floating]) -> NDArray[np.float32]: ...


class RegressorLike(Protocol):
    def fit(
        self,
        X: NDArray[np.floating],
        Y: NDArray[np.floating],
        metrics: Sequence[MetricSpec],
        *,
        seed: int,
    ) -> Any: ...

    def predict(self, X: NDArray[np.floating]) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class FoldPlan:
    """Which fold holds out each labelled item.

    ``fold[i]`` is in ``[0, n_splits)``, or ``-1`` for an item that is always
    trained on and never evaluated (a class with one example). ``n_splits == 0``
    means cross-validation is impossible (too few labels); ``note`` says why.
    """

    fold: NDArray[np.int64]
    n_splits: int
    excluded_classes: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def evaluated(self) -> NDArray[np.bool_]:
        """``(n,)`` mask of items that get an out-of-fold prediction."""
        return self.fold >= 0

    def splits(self) -> Iterator[tuple[NDArray[np.int64], NDArray[np.int64]]]:
        """``(train_index, test_index)`` per fold."""
        for k in range(self.n_splits):
            yield np.flatnonzero(self.fold != k), np.flatnonzero(self.fold == k)

    def describe(self) -> dict[str, Any]:
        """JSON summary stored with the metrics."""
        return {
            "n_splits": self.n_splits,
            "n_evaluated": int(self.evaluated.sum()),
            "n_labelled": int(len(self.fold)),
            "excluded_classes": list(self.excluded_classes),
            "notes": list(self.notes),
            # identifies the exact assignment, so two versions can show they used the same folds
            "fingerprint": hashlib.sha1(self.fold.astype("<i8").tobytes()).hexdigest()[:16],
        }


def stratified_folds(
    y: NDArray[np.integer],
    *,
    seed: int = 0,
    max_splits: int = DEFAULT_SPLITS,
    class_names: Sequence[str] | None = None,
) -> FoldPlan:
    """Stratified k-fold plan for class indices ``y`` ``(n,)``, deterministic in ``(y, seed)``.

    ``k = min(max_splits, smallest count among classes with >= 2 examples)``;
    classes with one example get fold ``-1`` (always trained on). Items of each
    class are shuffled and dealt round-robin, continuing where the previous
    class stopped, so fold sizes differ by at most one.
    """
    labels = np.asarray(y, dtype=np.int64)
    n = len(labels)
    fold = np.full(n, -1, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)

    def name(c: int) -> str:
        return repr(class_names[c]) if class_names is not None else str(c)

    singles = tuple(int(c) for c, count in zip(classes, counts, strict=True) if count < 2)
    notes = [
        f"class {name(c)} has one labelled example: always trained on, not evaluated"
        for c in singles
    ]
    eligible = counts[counts >= 2]
    if eligible.size == 0 or len(classes) < 2:
        notes.append("too few labels for cross-validation (need two classes and a class with 2+)")
        return FoldPlan(fold, 0, singles, tuple(notes))
    n_splits = int(min(max_splits, eligible.min()))
    if n_splits < max_splits:
        notes.append(
            f"{n_splits}-fold cross-validation: the smallest class has {int(eligible.min())} "
            "examples"
        )
    rng = np.random.default_rng(seed)
    offset = 0
    for c, count in zip(classes, counts, strict=True):
        if count < 2:
            continue
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members] = (offset + np.arange(count)) % n_splits
        offset = (offset + int(count)) % n_splits
    return FoldPlan(fold, n_splits, singles, tuple(notes))


def kfold(n: int, *, seed: int = 0, max_splits: int = DEFAULT_SPLITS) -> FoldPlan:
    """Plain shuffled k-fold plan over ``n`` items (``k = min(max_splits, n)``), for scores."""
    fold = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return FoldPlan(fold, 0, (), ("too few labels for cross-validation (need 2+)",))
    n_splits = int(min(max_splits, n))
    order = np.random.default_rng(seed).permutation(n)
    fold[order] = np.arange(n) % n_splits
    notes = () if n_splits == max_splits else (f"{n_splits}-fold cross-validation: {n} labels",)
    return FoldPlan(fold, n_splits, (), notes)


def oof_logits(
    make_head: Callable[[], ClassifierLike],
    X: NDArray[np.floating],
    y: NDArray[np.integer],
    *,
    n_classes: int,
    plan: FoldPlan,
    seed: int = 0,
) -> NDArray[np.float32]:
    """Out-of-fold logits ``(n, n_classes)``; rows not evaluated by ``plan`` stay 0."""
    labels = np.asarray(y, dtype=np.int64)
    out = np.zeros((len(labels), n_classes), dtype=np.float32)
    for train, test in plan.splits():
        head = make_head()
        head.fit(X[train], labels[train], n_classes=n_classes, seed=seed)
        out[test] = head.logits(X[test])
    return out


@dataclass
class ClassifierCV:
    """OOF results of one classifier head; arrays cover the evaluated items only."""

    plan: FoldPlan
    index: NDArray[np.int64]  # labelled rows that were evaluated
    y: NDArray[np.int64]  # their classes
    logits: NDArray[np.float32]  # (n_eval, k) uncalibrated OOF logits
    temperature: float
    probs_before: NDArray[np.float32]  # softmax(logits)
    probs: NDArray[np.float32]  # softmax(logits / temperature)
    metrics: dict[str, Any] | None  # None when the plan has no folds


def cross_validate_classifier(
    make_head: Callable[[], ClassifierLike],
    X: NDArray[np.floating],
    y: NDArray[np.integer],
    *,
    class_names: Sequence[str],
    plan: FoldPlan | None = None,
    seed: int = 0,
) -> ClassifierCV:
    """OOF logits, a temperature fitted on them, and metrics before/after calibration.

    ``metrics`` is :func:`classification_metrics` on the calibrated OOF
    probabilities plus ``ece_before``, ``ece_after``, ``temperature`` and
    ``cv`` (the plan). The temperature is fitted on the same OOF logits it is
    scored on (one parameter; the optimism is small).
    """
    labels = np.asarray(y, dtype=np.int64)
    n_classes = len(class_names)
    plan = (
        plan if plan is not None else stratified_folds(labels, seed=seed, class_names=class_names)
    )
    index = np.flatnonzero(plan.evaluated)
    if plan.n_splits == 0:
        empty = np.zeros((0, n_classes), dtype=np.float32)
        return ClassifierCV(plan, index, labels[index], empty, 1.0, empty, empty, None)
    logits = oof_logits(make_head, X, labels, n_classes=n_classes, plan=plan, seed=seed)[index]
    truth = labels[index]
    temperature = fit_temperature(logits, truth)
    before = softmax(logits)
    after = softmax(logits, temperature)
    metrics = classification_metrics(truth, after.argmax(axis=1), after, class_names)
    metrics.update(
        ece_before=expected_calibration_error(before, truth),
        ece_after=metrics["ece"],
        temperature=temperature,
        cv=plan.describe(),
    )
    return ClassifierCV(plan, index, truth, logits, temperature, before, after, metrics)


@dataclass
class ScoreCV:
    """OOF results of one score head; arrays cover the evaluated items only."""

    plan: FoldPlan
    index: NDArray[np.int64]
    raw: NDArray[np.float32]  # (n_eval, m) raw OOF predictions, original units
    snapped: NDArray[np.float64]  # clipped and step-snapped
    metrics: dict[str, Any] | None  # {"per_metric": score_metrics(...), "cv": plan}


def cross_validate_scores(
    make_head: Callable[[], RegressorLike],
    X: NDArray[np.floating],
    Y: NDArray[np.floating],
    metrics: Sequence[MetricSpec],
    *,
    plan: FoldPlan | None = None,
    seed: int = 0,
) -> ScoreCV:
    """OOF score predictions and :func:`score_metrics` on their snapped values."""
    targets = np.asarray(Y, dtype=np.float64).reshape(len(Y), -1)
    plan = plan if plan is not None else kfold(len(targets), seed=seed)
    raw = np.zeros(targets.shape, dtype=np.float32)
    for train, test in plan.splits():
        head = make_head()
        head.fit(X[train], targets[train], metrics, seed=seed)
        raw[test] = head.predict(X[test])
    index = np.flatnonzero(plan.evaluated)
    raw = raw[index]
    snapped = snap(raw, metrics)
    result = None
    if plan.n_splits:
        result = {
            "per_metric": score_metrics(targets[index], snapped, metrics),
            "cv": plan.describe(),
        }
    return ScoreCV(plan, index, raw, snapped, result)
