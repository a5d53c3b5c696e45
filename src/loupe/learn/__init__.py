"""Heads, calibration, cross-validation, ensembles and fine-tuning: arrays in, results out.

Knows nothing of HTTP, the database or jobs. Inputs are float32 ``(n, dim)``
feature matrices (L2-normalised backbone embeddings). torch is imported only
inside :mod:`loupe.learn.finetune`'s functions.

Registries (by name, for ``/api/info`` and the service layer):

- ``CLASS_HEADS``: class-project heads, ``name -> class`` with ``fit/logits/to_state/from_state``;
- ``SCORE_HEADS``: score-project heads with ``fit/predict/to_state/from_state``.
"""

from __future__ import annotations

from loupe.learn.calibration import (
    conformal_threshold,
    expected_calibration_error,
    fit_temperature,
    prediction_sets,
)
from loupe.learn.classify import ClassifierHead
from loupe.learn.crossval import FoldPlan, kfold, stratified_folds
from loupe.learn.ensemble import combine_members, triage_classes, triage_scores
from loupe.learn.metrics import classification_metrics, score_metrics
from loupe.learn.regress import ScoreHead, snap
from loupe.learn.state import state_from_bytes, state_to_bytes
from loupe.learn.train import (
    ClassifierEnsembleResult,
    ClassPredictions,
    ScoreEnsembleResult,
    ScorePredictions,
    train_classifier_ensemble,
    train_score_ensemble,
)

CLASS_HEADS: dict[str, type[ClassifierHead]] = {ClassifierHead.kind: ClassifierHead}
SCORE_HEADS: dict[str, type[ScoreHead]] = {ScoreHead.kind: ScoreHead}

__all__ = [
    "CLASS_HEADS",
    "SCORE_HEADS",
    "ClassPredictions",
    "ClassifierEnsembleResult",
    "ClassifierHead",
    "FoldPlan",
    "ScoreEnsembleResult",
    "ScoreHead",
    "ScorePredictions",
    "classification_metrics",
    "combine_members",
    "conformal_threshold",
    "expected_calibration_error",
    "fit_temperature",
    "kfold",
    "prediction_sets",
    "score_metrics",
    "snap",
    "state_from_bytes",
    "state_to_bytes",
    "stratified_folds",
    "train_classifier_ensemble",
    "train_score_ensemble",
    "triage_classes",
    "triage_scores",
]
