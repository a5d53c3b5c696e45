"""The label hot path: one item's human label with the fewest statements.

An expert labels an item every second or two while models train; each submit
is one transaction of, on SQLite: the caller's session, user, project and role
(one statement, :func:`loupe.api.deps.authorize_project`), the item with its
case's status, its current label and the active model's draft (one statement,
here), the annotation upsert and the audit event (one flush), and the commit.
The answer is built from what the transaction holds; nothing is read back.

On PostgreSQL the current annotation is read again with a row lock
(``SELECT ... FOR UPDATE``), so two writers of the same item still queue on it.
"""

from __future__ import annotations

from sqlalchemy import and_, bindparam, select
from sqlalchemy.orm import Session

from loupe.db.models import Annotation as AnnotationRow
from loupe.db.models import Case, Item, ModelVersion, Prediction, Project
from loupe.errors import ErrorCode, LoupeError
from loupe.services.items.query import ItemRow
from loupe.services.labels.core import HUMAN, UNREAD, locks_rows, write
from loupe.services.projects.cases import case_finished
from loupe.tasks.base import LabelValue

# The item, its case's status, its current label and the active model's draft;
# built once (binding values is all that is left per submit).
_ITEM_ROW = (
    select(Item, Case.id, Case.name, Case.status, AnnotationRow, Prediction)
    .outerjoin(Case, Case.id == Item.case_id)
    .outerjoin(AnnotationRow, AnnotationRow.item_id == Item.id)
    .outerjoin(
        ModelVersion,
        and_(ModelVersion.project_id == Item.project_id, ModelVersion.active.is_(True)),
    )
    .outerjoin(
        Prediction,
        and_(Prediction.item_id == Item.id, Prediction.model_version_id == ModelVersion.id),
    )
    .where(Item.id == bindparam("item_id"), Item.project_id == bindparam("project_id"))
    .limit(1)
)


def set_one(
    db: Session,
    project: Project,
    item_id: int,
    value: LabelValue,
    *,
    user_id: int,
    expected_version: int | None,
    group_id: str,
    source: str = "api",
) -> ItemRow:
    """Set a person's label on one item; the item's row as it is after the write.

    Errors as :func:`loupe.services.labels.core.set_label` plus CASE_FINISHED
    (409) when the item's case is finished.
    """
    found = db.execute(_ITEM_ROW, {"item_id": item_id, "project_id": project.id}).first()
    if found is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"item {item_id} not found in project {project.id}")
    item, case_id, case_name, case_status, current, draft = found
    if case_status == "finished":
        raise case_finished(project.id, [(int(case_id), str(case_name))])
    ann = write(
        db,
        project,
        item_id,
        value,
        user_id=user_id,
        expected_version=expected_version,
        source=source,
        origin=HUMAN,
        group_id=group_id,
        current=UNREAD if locks_rows(db) else current,
    )
    assert ann is not None
    return ItemRow(item=item, annotation=ann, prediction=draft)
