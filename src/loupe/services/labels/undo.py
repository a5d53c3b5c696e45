"""Undo and redo of a whole change on the server.

A change is what one request wrote (a label, a batch, accepted drafts): its
AnnotationEvents share a ``group_id``. Undo puts back each item's label from
before the change; it works on the item ids in the events, so what the
client's grid shows does not matter. It is optimistic: an item changed since
(its label is no longer what the change left) is reported as a conflict and
kept as it is. An undo is itself a
change (source 'undo', ``reverts`` = the change); redo reverts an undo (source
'redo') and can be undone again. A new change empties the redo stack.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, AnnotationEvent, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.labels.core import new_change_id, snapshot, write_snapshot

UNDO = "undo"
REDO = "redo"
HISTORY_DEPTH = 1000  # the user's latest changes replayed into the stacks (undo depth)


@dataclass
class UndoResult:
    """What an undo or redo did."""

    action: str  # undo | redo
    reverted: str  # the change undone (undo) or the undo reverted (redo)
    what: str  # the source of the original change: api | batch | accept | ...
    change_id: str | None = None  # the group this undo / redo wrote (None: nothing changed)
    applied: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    versions: dict[int, int] = field(default_factory=dict)


@dataclass
class _Stacks:
    done: list[str]  # changes that can be undone, oldest first
    undone: list[str]  # undo changes that can be redone, oldest first
    what: dict[str, str]  # change -> the source of the change it stands for


def _stacks(db: Session, project_id: int, user_id: int) -> _Stacks:
    """Replay the user's changes in this project into an undo and a redo stack."""
    rows = db.execute(
        select(
            AnnotationEvent.group_id,
            func.min(AnnotationEvent.source),
            func.max(AnnotationEvent.reverts),
        )
        .where(
            AnnotationEvent.project_id == project_id,
            AnnotationEvent.user_id == user_id,
            AnnotationEvent.group_id.is_not(None),
        )
        .group_by(AnnotationEvent.group_id)
        .order_by(func.min(AnnotationEvent.id).desc())
        .limit(HISTORY_DEPTH)
    ).all()
    stacks = _Stacks(done=[], undone=[], what={})
    for group, source, reverts in reversed(rows):
        gid = str(group)
        if source == UNDO:
            if reverts in stacks.done:
                stacks.done.remove(reverts)
            stacks.undone.append(gid)
            stacks.what[gid] = stacks.what.get(str(reverts), str(source))
        elif source == REDO:
            if reverts in stacks.undone:
                stacks.undone.remove(reverts)
            stacks.done.append(gid)
            stacks.what[gid] = stacks.what.get(str(reverts), str(source))
        else:
            stacks.done.append(gid)
            stacks.undone.clear()
            stacks.what[gid] = str(source)
    return stacks


def _revert(
    db: Session,
    project: Project,
    group: str,
    *,
    user_id: int,
    source: str,
) -> tuple[str, list[int], list[int], list[dict[str, Any]], dict[int, int]]:
    """Put back every item of ``group`` as it was before it; return what happened."""
    events = list(
        db.scalars(
            select(AnnotationEvent)
            .where(AnnotationEvent.project_id == project.id, AnnotationEvent.group_id == group)
            .order_by(AnnotationEvent.id)
        )
    )
    before: dict[int, dict[str, Any] | None] = {}
    after: dict[int, dict[str, Any] | None] = {}
    for e in events:
        before.setdefault(e.item_id, e.before)
        after[e.item_id] = e.after
    current = {
        a.item_id: a
        for a in db.scalars(select(Annotation).where(Annotation.item_id.in_(list(before))))
    }
    new_group = new_change_id()
    applied: list[int] = []
    unchanged: list[int] = []
    conflicts: list[dict[str, Any]] = []
    versions: dict[int, int] = {}
    for item_id, snap in before.items():
        ann = current.get(item_id)
        expected = ann.version if ann is not None else 0
        if snapshot(ann) != after[item_id]:
            conflicts.append(
                {
                    "item_id": item_id,
                    "code": ErrorCode.STALE_VERSION.value,
                    "message": f"item {item_id} was changed after this change; kept as it is now",
                }
            )
            continue
        try:
            with db.begin_nested():
                ann = write_snapshot(
                    db,
                    project,
                    item_id,
                    snap,
                    user_id=user_id,
                    expected_version=expected,
                    source=source,
                    group_id=new_group,
                    reverts=group,
                )
        except LoupeError as exc:
            if exc.code == ErrorCode.STALE_VERSION:
                message = f"item {item_id} was changed after this change; kept as it is now"
            elif exc.code in (ErrorCode.INVALID, ErrorCode.HUMAN_LABEL_PROTECTED):
                message = f"item {item_id}: {exc.message}"
            else:
                raise
            conflicts.append({"item_id": item_id, "code": exc.code.value, "message": message})
            continue
        version = ann.version if ann is not None else 0
        versions[item_id] = version
        (applied if version != expected else unchanged).append(item_id)
    return new_group, applied, unchanged, conflicts, versions


def undo(
    db: Session, project: Project, *, user_id: int, change_id: str | None = None
) -> UndoResult:
    """Undo ``change_id`` (default: the user's latest change not undone yet).

    CONFLICT when there is nothing to undo or the change is not one of the
    user's changes that can be undone.
    """
    stacks = _stacks(db, project.id, user_id)
    if change_id is None:
        if not stacks.done:
            raise LoupeError(ErrorCode.CONFLICT, "nothing to undo")
        change_id = stacks.done[-1]
    elif change_id not in stacks.done:
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"change {change_id!r} is not one of your changes in project {project.id} "
            "that can be undone (already undone, or not yours)",
        )
    return _result(db, project, change_id, stacks, user_id=user_id, action=UNDO)


def redo(
    db: Session, project: Project, *, user_id: int, change_id: str | None = None
) -> UndoResult:
    """Redo the user's latest undo (or the undo ``change_id``, or the undo of it).

    CONFLICT when there is nothing to redo (a new change empties the redo stack).
    """
    stacks = _stacks(db, project.id, user_id)
    if change_id is None:
        if not stacks.undone:
            raise LoupeError(ErrorCode.CONFLICT, "nothing to redo")
        change_id = stacks.undone[-1]
    elif change_id not in stacks.undone:
        raise LoupeError(
            ErrorCode.CONFLICT,
            f"change {change_id!r} is not one of your undone changes in project "
            f"{project.id} that can be redone",
        )
    return _result(db, project, change_id, stacks, user_id=user_id, action=REDO)


def _result(
    db: Session, project: Project, group: str, stacks: _Stacks, *, user_id: int, action: str
) -> UndoResult:
    new_group, applied, unchanged, conflicts, versions = _revert(
        db, project, group, user_id=user_id, source=action
    )
    return UndoResult(
        action=action,
        reverted=group,
        what=stacks.what.get(group, ""),
        change_id=new_group if applied else None,
        applied=applied,
        unchanged=unchanged,
        conflicts=conflicts,
        versions=versions,
    )
