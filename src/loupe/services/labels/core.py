"""Set, clear and batch-apply labels with optimistic locking and an audit trail.

Every change writes an AnnotationEvent in the same transaction as the
Annotation. A model-origin write never replaces a person's label (``human``, or
``model_accepted``: a model's draft a person accepted). The events of one
request share a ``group_id`` (the change id undo and redo work on).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, AnnotationEvent, Item, ModelVersion, Project
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.schema import validate_label
from loupe.tasks.base import LabelValue

HUMAN = "human"
MODEL = "model"
MODEL_ACCEPTED = "model_accepted"  # a person accepted a model's draft
PERSON_ORIGINS = (HUMAN, MODEL_ACCEPTED)  # a person's decision: protected, trains models
NONE_KIND = "none"  # a cleared label keeps its row so versions keep counting up


def person_labelled() -> ColumnElement[bool]:
    """SQL condition: the annotation holds a person's label (set or accepted, not cleared)."""
    return and_(Annotation.kind != NONE_KIND, Annotation.origin.in_(PERSON_ORIGINS))


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
    if ann.model_version_id is not None:
        out["model_version_id"] = ann.model_version_id
    return out


def new_change_id() -> str:
    """A fresh change (group) id for the events of one request."""
    return uuid.uuid4().hex


def _current(db: Session, item_id: int) -> Annotation | None:
    stmt = select(Annotation).where(Annotation.item_id == item_id)
    if locks_rows(db):
        # Locked and re-read (populate_existing): a row this session loaded
        # before may be older than the one the lock protects.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    return db.scalar(stmt)


def locks_rows(db: Session) -> bool:
    """Whether writers lock the annotation row (PostgreSQL); SQLite's writers
    take the whole database at BEGIN IMMEDIATE, so what they read is current."""
    return db.get_bind().dialect.name == "postgresql"


class _Unread:
    """Marker: the caller has not read the current annotation."""


UNREAD = _Unread()


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


def write(
    db: Session,
    project: Project,
    item_id: int,
    value: LabelValue | None,
    *,
    user_id: int | None,
    expected_version: int | None,
    source: str,
    origin: str,
    group_id: str | None = None,
    model_version_id: int | None = None,
    restoring: bool = False,
    reverts: str | None = None,
    current: Annotation | None | _Unread = UNREAD,
) -> Annotation | None:
    ann = _current(db, item_id) if isinstance(current, _Unread) else current
    _check_version(ann, expected_version, item_id)
    if (
        origin == MODEL
        and not restoring
        and ann is not None
        and ann.origin in PERSON_ORIGINS
        and ann.kind != NONE_KIND
    ):
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
        ann.model_version_id = None
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
        ann.model_version_id = model_version_id if origin == MODEL_ACCEPTED else None
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
            group_id=group_id,
            reverts=reverts,
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
    group_id: str | None = None,
    model_version_id: int | None = None,
) -> Annotation:
    get_item(db, project, item_id)
    ann = write(
        db,
        project,
        item_id,
        value,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=origin,
        group_id=group_id,
        model_version_id=model_version_id,
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
    group_id: str | None = None,
) -> Annotation | None:
    get_item(db, project, item_id)
    return write(
        db,
        project,
        item_id,
        None,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=HUMAN,
        group_id=group_id,
    )


def write_snapshot(
    db: Session,
    project: Project,
    item_id: int,
    snap: dict[str, Any] | None,
    *,
    user_id: int | None,
    expected_version: int,
    source: str,
    group_id: str,
    reverts: str,
) -> Annotation | None:
    """Put an audit snapshot (an event's ``before`` or ``after``) back as the label.

    Used by undo and redo: the origin and accepted model version come back too.
    STALE_VERSION when the item is no longer at ``expected_version``.
    """
    value = None
    if snap is not None:
        value = LabelValue(
            kind=snap["kind"],
            label=snap.get("label"),
            scores=snap.get("scores"),
            data=snap.get("data"),
            note=snap.get("note"),
        )
    return write(
        db,
        project,
        item_id,
        value,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=str(snap.get("origin") or HUMAN) if snap is not None else HUMAN,
        group_id=group_id,
        model_version_id=_existing_version(db, snap.get("model_version_id") if snap else None),
        restoring=True,
        reverts=reverts,
    )


def _existing_version(db: Session, version_id: Any) -> int | None:
    """``version_id`` if that model version still exists (it may have been deleted)."""
    if version_id is None:
        return None
    return int(version_id) if db.get(ModelVersion, int(version_id)) is not None else None


@dataclass
class BatchResult:
    applied: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)
    change_id: str | None = None  # the events' group when something changed


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
    group_id: str | None = None,
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
                ann = write(
                    db,
                    project,
                    item_id,
                    value,
                    user_id=user_id,
                    expected_version=expected_versions.get(item_id),
                    source=source,
                    origin=origin,
                    group_id=group_id,
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
    if result.applied:
        result.change_id = group_id
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
