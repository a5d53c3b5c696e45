"""Reading model drafts and accepting them as a person's labels (``model_accepted``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, ModelVersion, Prediction, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.items.query import active_version_id
from loupe.services.labels import core as labels
from loupe.tasks import kind_of
from loupe.tasks.base import Draft


def item_predictions(db: Session, project: Project, item_id: int) -> list[Prediction]:
    """Every version's prediction for an item, newest version first."""
    labels.get_item(db, project, item_id)
    return list(
        db.scalars(
            select(Prediction)
            .where(Prediction.item_id == item_id)
            .order_by(Prediction.model_version_id.desc())
        )
    )


def _value_of(project: Project, pred: Prediction) -> labels.LabelValue:
    draft = Draft(label=pred.label, output=pred.output or {})
    return kind_of(project.task).label_from_draft(draft, item_id=pred.item_id)


def version_of(db: Session, project: Project, version_id: int | None) -> ModelVersion:
    """The project's model version ``version_id`` (default: the active one): 409 when
    there is none, 404 when it is not this project's."""
    vid = version_id or active_version_id(db, project.id)
    if vid is None:
        raise LoupeError(ErrorCode.CONFLICT, "no active model version: train one first")
    version = db.get(ModelVersion, vid)
    if version is None or version.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"model version {vid} not found")
    return version


def accept(
    db: Session,
    project: Project,
    item_ids: Sequence[int],
    *,
    user_id: int,
    version_id: int | None = None,
    expected_versions: dict[int, int] | None = None,
    group_id: str | None = None,
    include_novel: bool = False,
) -> labels.BatchResult:
    """Make the drafts of ``version_id`` (default: the active one) the items' labels.

    A person confirms the draft, so the label is theirs (protected from model
    writes, trains the next model) but keeps its provenance: origin
    ``model_accepted`` with the model version, audit source 'accept'. Items
    without a draft are reported as conflicts. The events share ``group_id``.

    A draft of an item unlike every labelled image (``output.novel``) is never
    accepted in bulk: it is reported as a ``novel`` conflict; a person accepts
    it one at a time after looking at it (``include_novel=True``).
    """
    version = version_of(db, project, version_id)
    vid = version.id
    preds = {
        p.item_id: p
        for p in db.scalars(
            select(Prediction).where(
                Prediction.model_version_id == vid, Prediction.item_id.in_(list(item_ids))
            )
        )
    }
    result = labels.BatchResult()
    expected_versions = expected_versions or {}
    for item_id in dict.fromkeys(item_ids):
        labels.get_item(db, project, item_id)
        pred = preds.get(item_id)
        if pred is None:
            result.conflicts.append(
                {"item_id": item_id, "code": "no_draft", "message": "no draft for this item"}
            )
            continue
        if not include_novel and (pred.output or {}).get("novel"):
            result.conflicts.append(
                {
                    "item_id": item_id,
                    "code": "novel",
                    "message": "unlike the labelled images: review it and accept it on its own",
                }
            )
            continue
        try:
            with db.begin_nested():
                before_version = ann_version(db, item_id)
                ann = labels.set_label(
                    db,
                    project,
                    item_id,
                    _value_of(project, pred),
                    user_id=user_id,
                    expected_version=expected_versions.get(item_id),
                    source="accept",
                    origin=labels.MODEL_ACCEPTED,
                    group_id=group_id,
                    model_version_id=vid,
                )
        except LoupeError as exc:
            if exc.code not in (ErrorCode.STALE_VERSION, ErrorCode.CONFLICT):
                raise
            result.conflicts.append(
                {"item_id": item_id, "code": exc.code.value, "message": exc.message}
            )
            continue
        (result.applied if ann.version != before_version else result.unchanged).append(item_id)
        result.versions[item_id] = ann.version
    if result.applied:
        result.change_id = group_id
    return result


def ann_version(db: Session, item_id: int) -> int:
    return db.scalar(select(Annotation.version).where(Annotation.item_id == item_id)) or 0


def prediction_dict(pred: Prediction) -> dict[str, Any]:
    return {
        "model_version_id": pred.model_version_id,
        "label": pred.label,
        "confidence": pred.confidence,
        "uncertainty": pred.uncertainty,
        "flagged": pred.flagged,
        "flag_reason": pred.flag_reason,
        "output": pred.output,
        "members": pred.members,
    }
