"""Heads, calibration, cross-validation, ensembles, novelty, triage and fine-tuning: arrays in,
results out.

Knows nothing of HTTP, the database or jobs. Inputs are float32 ``(n, dim)``
feature matrices (L2-normalised backbone embeddings). torch is imported only
inside :mod:`loupe.learn.finetune`'s functions.

Registries (by name, for ``/api/info`` and the service layer):

- ``CLASS_HEADS``: class-project heads, ``name -> class`` with ``fit/logits/to_state/from_state``
  (``softmax``: calibrated logistic regression, the default; ``mlp``: one hidden layer);
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
from loupe.learn.ensemble import (
    apply_review_budget,
    combine_members,
    triage_classes,
    triage_scores,
)
from loupe.learn.metrics import (
    classification_metrics,
    format_rate,
    score_metrics,
    wilson_interval,
)
from loupe.learn.mlp_head import MLPClassifierHead
from loupe.learn.novelty import Novelty, knn_distance, novelty_scores
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

CLASS_HEADS: dict[str, type[ClassifierHead] | type[MLPClassifierHead]] = {
    ClassifierHead.kind: ClassifierHead,
    MLPClassifierHead.kind: MLPClassifierHead,
}
SCORE_HEADS: dict[str, type[ScoreHead]] = {ScoreHead.kind: ScoreHead}

__all__ = [
    "CLASS_HEADS",
    "SCORE_HEADS",
    "ClassPredictions",
    "ClassifierEnsembleResult",
    "ClassifierHead",
    "FoldPlan",
    "Novelty",
    "ScoreEnsembleResult",
    "ScoreHead",
    "ScorePredictions",
    "apply_review_budget",
    "classification_metrics",
    "combine_members",
    "conformal_threshold",
    "expected_calibration_error",
    "fit_temperature",
    "format_rate",
    "kfold",
    "knn_distance",
    "novelty_scores",
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
    "wilson_interval",
]
