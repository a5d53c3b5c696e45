"""The numeric steps of a training: features, heads, predictions rows.

Split from ``services/train.py`` (which owns versions, jobs and activation).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import insert, update

from loupe.db.models import Item, Prediction
from loupe.db.session import session_scope
from loupe.errors import ErrorCode, LoupeError
from loupe.settings import Settings

if TYPE_CHECKING:
    from loupe.services.training.train import TrainingData

log = logging.getLogger(__name__)
Report = Callable[[float, str], None]
INSERT_CHUNK = 2000
FINETUNE_MAX_ITEMS = 3000  # images held in memory for fine-tuning


@dataclass
class PredictionRow:
    item_id: int
    label: str | None
    confidence: float | None
    uncertainty: float | None
    flagged: bool
    flag_reason: str | None
    output: dict[str, Any]
    members: dict[str, Any]


@dataclass
class FitOutcome:
    predictions: list[PredictionRow]
    metrics: dict[str, Any]
    calibration: dict[str, Any]
    params: dict[str, Any]
    state: dict[str, Any]
    trained_on_ids: list[int]
    label_counts: dict[str, int]
    errors: dict[int, str] = field(default_factory=dict)

    @property
    def trained_on_digest(self) -> str:
        ids = ",".join(str(i) for i in sorted(self.trained_on_ids))
        return hashlib.sha256(ids.encode()).hexdigest()


def compute_features(
    settings: Settings,
    data: TrainingData,
    members: Sequence[str],
    *,
    report: Report,
    span: tuple[float, float] = (0.0, 0.7),
) -> tuple[list[int], dict[str, np.ndarray], dict[int, str]]:
    """Embed every item for every member (cached; only new items are computed).

    Returns the ids that every member could read, the matrices in that order,
    and ``{item_id: reason}`` for unreadable items (marked 'error' in the DB).
    """
    from loupe.features import FeatureStore, compute_missing, get_backbone

    errors: dict[int, str] = {}
    lo, hi = span
    per = (hi - lo) / max(1, len(members))
    for k, name in enumerate(members):
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        start = lo + k * per

        def progress(done: int, total: int, *, _start: float = start, _name: str = name) -> None:
            report(_start + per * done / max(1, total), f"features {_name}: {done}/{total}")

        report(start, f"features {name}")
        errors.update(compute_missing(store, backbone, data.items, progress=progress))
    if errors:
        _mark_unreadable(settings, errors)
    ids = [i for i, _ in data.items if i not in errors]
    matrices = {}
    for name in members:
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        matrices[name] = store.get(ids)
    return ids, matrices, errors


def _mark_unreadable(settings: Settings, errors: dict[int, str]) -> None:
    with session_scope(settings.db_url) as db:
        for item_id, reason in errors.items():
            db.execute(
                update(Item).where(Item.id == item_id).values(status="error", error=reason[:2000])
            )


def fit_and_predict(
    settings: Settings, data: TrainingData, version_id: int, *, mode: str, report: Report
) -> FitOutcome:
    from loupe.services.projects.schema import class_names

    members = list(data.settings.get("ensemble") or ["effnet-lite0", "mobilenet_v2"])
    ids, matrices, errors = compute_features(settings, data, members, report=report)
    labelled = [i for i in ids if i in data.labels]
    row_of = {item_id: r for r, item_id in enumerate(ids)}
    lab_rows = np.array([row_of[i] for i in labelled], dtype=np.int64)
    feats = {m: (x[lab_rows], x) for m, x in matrices.items()}
    report(0.75, f"fitting heads on {len(labelled)} labels")
    if data.task == "classify":
        names = [c for c in class_names(data.schema) if c in set(data.labels.values())]
        outcome = _fit_classes(data, feats, labelled, names, ids)
        if mode == "finetune":
            report(0.8, "fine-tuning")
            _add_finetune(settings, data, outcome, ids, labelled, names, members[0], report)
    else:
        if mode == "finetune":
            raise LoupeError(ErrorCode.INVALID, "fine-tune mode is for class projects")
        outcome = _fit_scores(data, feats, labelled, ids)
    outcome.errors = errors
    outcome.params["members"] = members
    outcome.params["mode"] = mode
    return outcome


def _fit_classes(
    data: TrainingData,
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    labelled: list[int],
    names: list[str],
    ids: list[int],
) -> FitOutcome:
    from loupe.learn.state import state_to_bytes
    from loupe.learn.train import train_classifier_ensemble

    index = {n: k for k, n in enumerate(names)}
    y = np.array([index[data.labels[i]] for i in labelled], dtype=np.int64)
    threshold = float(data.settings.get("confidence_threshold", 0.8))
    alpha = data.settings.get("conformal_alpha", 0.1)
    result = train_classifier_ensemble(feats, y, names, threshold=threshold, conformal_alpha=alpha)
    p = result.predictions
    rows = []
    for r, item_id in enumerate(ids):
        probs = {n: round(float(v), 5) for n, v in zip(names, p.probs[r], strict=True)}
        members = {}
        for m, mp in p.member_probs.items():
            k = int(np.argmax(mp[r]))
            members[m] = {
                "label": names[k],
                "confidence": round(float(mp[r, k]), 5),
                "probs": {n: round(float(v), 5) for n, v in zip(names, mp[r], strict=True)},
            }
        output: dict[str, Any] = {"probs": probs}
        if p.prediction_sets is not None:
            output["prediction_set"] = [
                n for n, s in zip(names, p.prediction_sets[r], strict=True) if s
            ]
        rows.append(
            PredictionRow(
                item_id=item_id,
                label=names[int(p.label[r])],
                confidence=float(p.confidence[r]),
                uncertainty=float(p.uncertainty[r]),
                flagged=bool(p.flagged[r]),
                flag_reason=p.reason[r],
                output=output,
                members=members,
            )
        )
    counts = {n: int((y == k).sum()) for n, k in index.items()}
    state: dict[str, Any] = {
        f"head_{m}": np.frombuffer(state_to_bytes(s), dtype=np.uint8)
        for m, s in result.heads.items()
    }
    state.update({"class_names": names, "members": result.member_names})
    return FitOutcome(
        predictions=rows,
        metrics=result.metrics_json(),
        calibration={
            "temperatures": result.temperatures,
            "ensemble_temperature": result.ensemble_temperature,
            "conformal_alpha": result.conformal_alpha,
            "qhat": result.qhat,
        },
        params={"threshold": threshold, "classes": names},
        state=state,
        trained_on_ids=labelled,
        label_counts=counts,
    )


def _fit_scores(
    data: TrainingData,
    feats: dict[str, tuple[np.ndarray, np.ndarray]],
    labelled: list[int],
    ids: list[int],
) -> FitOutcome:
    from loupe.learn.state import state_to_bytes
    from loupe.learn.train import train_score_ensemble

    metrics = data.schema["metrics"]
    names = [m["name"] for m in metrics]
    # A partly scored item trains the metrics it has; the others take the
    # metric's midpoint would bias them, so train only on complete rows.
    complete = [i for i in labelled if all(n in (data.labels[i] or {}) for n in names)]
    if len(complete) < 3:
        raise LoupeError(
            ErrorCode.INVALID,
            f"training needs at least 3 items scored on every metric; have {len(complete)}",
        )
    keep = np.array([labelled.index(i) for i in complete], dtype=np.int64)
    feats = {m: (xl[keep], xa) for m, (xl, xa) in feats.items()}
    Y = np.array([[float(data.labels[i][n]) for n in names] for i in complete])
    result = train_score_ensemble(feats, Y, metrics)
    p = result.predictions
    rows = []
    for r, item_id in enumerate(ids):
        scores = {n: float(v) for n, v in zip(names, p.values[r], strict=True)}
        members = {
            m: {"scores": {n: float(v) for n, v in zip(names, mv[r], strict=True)}}
            for m, mv in p.member_values.items()
        }
        rows.append(
            PredictionRow(
                item_id=item_id,
                label=None,
                confidence=None,
                uncertainty=float(p.uncertainty[r]),
                flagged=bool(p.flagged[r]),
                flag_reason=p.reason[r],
                output={
                    "scores": scores,
                    "raw": {n: round(float(v), 4) for n, v in zip(names, p.raw[r], strict=True)},
                },
                members=members,
            )
        )
    state: dict[str, Any] = {
        f"head_{m}": np.frombuffer(state_to_bytes(s), dtype=np.uint8)
        for m, s in result.heads.items()
    }
    state.update({"metrics": metrics, "members": result.member_names})
    return FitOutcome(
        predictions=rows,
        metrics=result.metrics_json(),
        calibration={},
        params={"metrics": names},
        state=state,
        trained_on_ids=complete,
        label_counts={"scored": len(complete)},
    )


def _add_finetune(
    settings: Settings,
    data: TrainingData,
    outcome: FitOutcome,
    ids: list[int],
    labelled: list[int],
    names: list[str],
    member: str,
    report: Report,
) -> None:
    """Fine-tune ``member``'s last stage on the labelled images (same folds as the
    frozen heads for the comparison) and replace the drafts with its predictions."""
    from loupe.features import build_torch_model, preprocessing_of, read_rgb
    from loupe.learn.calibration import softmax
    from loupe.learn.ensemble import triage_classes
    from loupe.learn.finetune import compare_metrics, finetune, finetune_cv, predict_finetuned

    if len(labelled) > FINETUNE_MAX_ITEMS:
        raise LoupeError(
            ErrorCode.INVALID,
            f"fine-tuning holds images in memory: at most {FINETUNE_MAX_ITEMS} labels",
        )
    size = preprocessing_of(member).size
    sources = dict(data.items)
    images = np.stack([read_rgb(sources[i], size=size) for i in labelled])
    index = {n: k for k, n in enumerate(names)}
    y = np.array([index[data.labels[i]] for i in labelled], dtype=np.int64)

    def builder() -> Any:
        return build_torch_model(member, weights_dir=settings.weights)

    # Project settings may shorten the schedule (small data, CPU-only machines).
    epochs = int(data.settings.get("finetune_epochs", 20))
    cv = finetune_cv(builder, images, y, class_names=names, epochs=epochs, patience=3)
    report(0.85, "fine-tuning on all labels")
    model = finetune(builder, images, y, n_classes=len(names), epochs=epochs, patience=3)
    logits = []
    for start in range(0, len(ids), 256):
        chunk = np.stack([read_rgb(sources[i], size=size) for i in ids[start : start + 256]])
        logits.append(predict_finetuned(builder, model, chunk))
    probs = softmax(np.concatenate(logits) / max(cv.temperature, 1e-3))
    frozen = outcome.metrics.get("ensemble") or {}
    threshold = float(data.settings.get("confidence_threshold", 0.8))
    flagged, reasons = triage_classes([probs], probs, threshold=threshold)
    for r, row in enumerate(outcome.predictions):
        k = int(np.argmax(probs[r]))
        row.members = {**row.members, f"{member}-finetuned": {"label": names[k]}}
        row.label, row.confidence = names[k], float(probs[r, k])
        row.flagged, row.flag_reason = bool(flagged[r]), reasons[r]
        row.output = {
            "probs": {n: round(float(v), 5) for n, v in zip(names, probs[r], strict=True)}
        }
    outcome.metrics = {
        **outcome.metrics,
        "frozen_ensemble": frozen,
        "ensemble": cv.metrics,
        "finetune": {
            "member": member,
            "best_epoch": model.best_epoch,
            "history": model.history,
            "device": model.device,
            "compare": compare_metrics(frozen, cv.metrics or {}),
        },
    }
    outcome.state["finetuned_state_dict"] = np.frombuffer(model.state_dict, dtype=np.uint8)


def write_predictions(
    settings: Settings, project_id: int, version_id: int, rows: Sequence[PredictionRow]
) -> None:
    """Bulk-insert the version's predictions in chunks (before it becomes active)."""
    for start in range(0, len(rows), INSERT_CHUNK):
        part = rows[start : start + INSERT_CHUNK]
        with session_scope(settings.db_url) as db:
            db.execute(
                insert(Prediction),
                [
                    {
                        "project_id": project_id,
                        "item_id": r.item_id,
                        "model_version_id": version_id,
                        "label": r.label,
                        "confidence": r.confidence,
                        "uncertainty": r.uncertainty,
                        "flagged": r.flagged,
                        "flag_reason": r.flag_reason,
                        "output": r.output,
                        "members": r.members,
                    }
                    for r in part
                ],
            )
