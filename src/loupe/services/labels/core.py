"""Set, clear and batch-apply labels with optimistic locking and an audit trail.

Every change writes an AnnotationEvent in the same transaction as the
Annotation. A model-origin write never replaces a human label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, AnnotationEvent, Item, Project
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.schema import validate_label
from loupe.tasks.base import LabelValue

HUMAN = "human"
MODEL = "model"
NONE_KIND = "none"  # a cleared label keeps its row so versions keep counting up


def snapshot(ann: Annotation | None) -> dict[str, Any] | None:
    """The audit view of an annotation (None when unlabelled)."""
    if ann is None or ann.kind == NONE_KIND:
        return None
    out: dict[str, Any] = {"kind": ann.kind, "origin": ann.origin}
    if ann.label is not None:
        out["label"] = ann.label
    if ann.scores is not None:
        out["scores"] = ann.scores
    if ann.data is not None:
        out["data"] = ann.data
    if ann.note:
        out["note"] = ann.note
    return out


def _current(db: Session, item_id: int) -> Annotation | None:
    stmt = select(Annotation).where(Annotation.item_id == item_id)
    if db.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return db.scalar(stmt)


def get_item(db: Session, project: Project, item_id: int) -> Item:
    item = db.get(Item, item_id)
    if item is None or item.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} not found in project {project.id}")
    return item


def _check_version(ann: Annotation | None, expected: int | None, item_id: int) -> None:
    current = ann.version if ann is not None else 0
    if expected is not None and expected != current:
        raise LoupeError(
            ErrorCode.STALE_VERSION,
            f"item {item_id} was changed by someone else (your version {expected}, "
            f"current {current}); reload and apply your change again",
            item_id=item_id,
            current_version=current,
            current=snapshot(ann),
        )


def _write(
    db: Session,
    project: Project,
    item_id: int,
    value: LabelValue | None,
    *,
    user_id: int | None,
    expected_version: int | None,
    source: str,
    origin: str,
) -> Annotation | None:
    ann = _current(db, item_id)
    _check_version(ann, expected_version, item_id)
    if origin == MODEL and ann is not None and ann.origin == HUMAN and ann.kind != NONE_KIND:
        raise LoupeError(
            ErrorCode.HUMAN_LABEL_PROTECTED,
            f"item {item_id} has a human label; a model cannot replace it",
            item_id=item_id,
        )
    before = snapshot(ann)
    if value is None:
        if ann is None or ann.kind == NONE_KIND:
            return ann
        ann.kind, ann.label, ann.scores, ann.data, ann.note = NONE_KIND, None, None, None, None
    else:
        label, scores = validate_label(
            project.task,
            project.schema,
            kind=value.kind,
            label=value.label,
            scores=value.scores,
            data=value.data,
        )
        if ann is None:
            ann = Annotation(item_id=item_id, project_id=project.id, version=0)
            db.add(ann)
        ann.kind, ann.label, ann.scores, ann.data = value.kind, label, scores, value.data
        ann.note = value.note
    ann.origin = origin
    after = snapshot(ann)
    if after == before and ann.version > 0:
        return ann  # nothing changed: no new version, no event
    ann.version += 1
    ann.updated_by = user_id
    ann.updated_at = utcnow()
    db.add(
        AnnotationEvent(
            project_id=project.id,
            item_id=item_id,
            user_id=user_id,
            action="clear" if value is None else "set",
            source=source,
            before=before,
            after=after,
            version=ann.version,
        )
    )
    try:
        db.flush()
    except IntegrityError as exc:
        # Two first labels at once: the later insert hits the unique item_id.
        raise LoupeError(
            ErrorCode.STALE_VERSION,
            f"item {item_id} was labelled by someone else at the same moment; "
            "reload and apply your change again",
            item_id=item_id,
        ) from exc
    return ann


def set_label(
    db: Session,
    project: Project,
    item_id: int,
    value: LabelValue,
    *,
    user_id: int | None,
    expected_version: int | None = None,
    source: str = "api",
    origin: str = HUMAN,
) -> Annotation:
    get_item(db, project, item_id)
    ann = _write(
        db,
        project,
        item_id,
        value,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=origin,
    )
    assert ann is not None
    return ann


def clear_label(
    db: Session,
    project: Project,
    item_id: int,
    *,
    user_id: int | None,
    expected_version: int | None = None,
    source: str = "api",
) -> Annotation | None:
    get_item(db, project, item_id)
    return _write(
        db,
        project,
        item_id,
        None,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=HUMAN,
    )


@dataclass
class BatchResult:
    applied: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)


def batch_apply(
    db: Session,
    project: Project,
    item_ids: Sequence[int],
    value: LabelValue | None,
    *,
    user_id: int | None,
    expected_versions: dict[int, int] | None = None,
    source: str = "batch",
    origin: str = HUMAN,
) -> BatchResult:
    """Apply one label (or clear, with ``value=None``) to many items at once.

    The label is validated once up front (a bad label fails the whole batch
    with 422); per-item conflicts (stale version, protected human label) are
    reported and skipped so the rest still goes in.
    """
    if value is not None:
        validate_label(
            project.task,
            project.schema,
            kind=value.kind,
            label=value.label,
            scores=value.scores,
            data=value.data,
        )
    ids = list(dict.fromkeys(item_ids))
    found = set(db.scalars(select(Item.id).where(Item.project_id == project.id, Item.id.in_(ids))))
    missing = [i for i in ids if i not in found]
    if missing:
        raise LoupeError(
            ErrorCode.NOT_FOUND,
            f"{len(missing)} item(s) not in project {project.id}: {missing[:10]}",
        )
    result = BatchResult()
    expected_versions = expected_versions or {}
    for item_id in ids:
        try:
            with db.begin_nested():
                before_version = _version_of(db, item_id)
                ann = _write(
                    db,
                    project,
                    item_id,
                    value,
                    user_id=user_id,
                    expected_version=expected_versions.get(item_id),
                    source=source,
                    origin=origin,
                )
        except LoupeError as exc:
            if exc.code not in (ErrorCode.STALE_VERSION, ErrorCode.HUMAN_LABEL_PROTECTED):
                raise
            result.conflicts.append(
                {"item_id": item_id, "code": exc.code.value, "message": exc.message}
            )
            continue
        version = ann.version if ann is not None else 0
        result.versions[item_id] = version
        (result.applied if version != before_version else result.unchanged).append(item_id)
    return result


def _version_of(db: Session, item_id: int) -> int:
    v = db.scalar(select(Annotation.version).where(Annotation.item_id == item_id))
    return v or 0


def history(db: Session, project: Project, item_id: int) -> list[AnnotationEvent]:
    get_item(db, project, item_id)
    return list(
        db.scalars(
            select(AnnotationEvent)
            .where(AnnotationEvent.item_id == item_id)
            .order_by(AnnotationEvent.id)
        )
    )
