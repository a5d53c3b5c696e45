"""Item leases: an item a queue served to one annotator is nobody else's for a while.

One row per item (``item_leases.item_id`` is unique). A lease is taken with one
``INSERT ... ON CONFLICT (item_id) DO UPDATE ... WHERE`` the existing lease is
the caller's or has expired, ``RETURNING`` the items won: on PostgreSQL the
unique index makes a concurrent request wait for the other's commit and then
see its lease, so two annotators never win the same item; on SQLite write
transactions are serialised (BEGIN IMMEDIATE) anyway.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from loupe.db.models import Annotation, ItemLease, Project
from loupe.db.types import utcnow
from loupe.services.labels.core import person_labelled

DEFAULT_LEASE_MINUTES = 10.0
MAX_LEASE_MINUTES = 24 * 60.0


def lease_duration(project: Project) -> dt.timedelta:
    """The project's ``lease_minutes`` setting (default 10, at most a day)."""
    value = (project.settings or {}).get("lease_minutes", DEFAULT_LEASE_MINUTES)
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        minutes = DEFAULT_LEASE_MINUTES
    if not 0 < minutes <= MAX_LEASE_MINUTES:
        minutes = DEFAULT_LEASE_MINUTES
    return dt.timedelta(minutes=minutes)


def held_by_others(db: Session, project_id: int, user_id: int, now: dt.datetime) -> set[int]:
    """Items of the project under an unexpired lease of another user."""
    return set(
        db.scalars(
            select(ItemLease.item_id).where(
                ItemLease.project_id == project_id,
                ItemLease.user_id != user_id,
                ItemLease.expires_at > now,
            )
        )
    )


def drop_expired(db: Session, project_id: int, now: dt.datetime) -> None:
    db.execute(
        delete(ItemLease).where(ItemLease.project_id == project_id, ItemLease.expires_at <= now)
    )


def release(
    db: Session, project: Project, user_id: int, item_ids: Sequence[int] | None = None
) -> int:
    """Drop the caller's leases in the project (only ``item_ids`` if given); returns how many."""
    stmt = delete(ItemLease).where(ItemLease.project_id == project.id, ItemLease.user_id == user_id)
    if item_ids is not None:
        stmt = stmt.where(ItemLease.item_id.in_([int(i) for i in item_ids]))
    result: Any = db.execute(stmt)
    return int(result.rowcount or 0)


def take(
    db: Session,
    project_id: int,
    user_id: int,
    item_ids: Sequence[int],
    *,
    now: dt.datetime,
    expires_at: dt.datetime,
) -> set[int]:
    """Lease ``item_ids`` to the user where free, expired or already theirs; the ids won."""
    if not item_ids:
        return set()
    rows = [
        {
            "project_id": project_id,
            "item_id": int(i),
            "user_id": user_id,
            "expires_at": expires_at,
            "created_at": now,
        }
        for i in item_ids
    ]
    dialect = db.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    base = insert(ItemLease).values(rows)
    stmt = base.on_conflict_do_update(
        index_elements=[ItemLease.item_id],
        set_={
            "project_id": base.excluded.project_id,
            "user_id": base.excluded.user_id,
            "expires_at": base.excluded.expires_at,
            "created_at": base.excluded.created_at,
        },
        where=or_(ItemLease.user_id == user_id, ItemLease.expires_at <= now),
    ).returning(ItemLease.item_id)
    return {int(i) for i in db.scalars(stmt)}


def labelled_among(db: Session, project_id: int, item_ids: Iterable[int]) -> set[int]:
    """Those of ``item_ids`` a person has labelled (read now, in a statement of its own)."""
    ids = [int(i) for i in item_ids]
    if not ids:
        return set()
    return set(
        db.scalars(
            select(Annotation.item_id).where(
                Annotation.project_id == project_id,
                Annotation.item_id.in_(ids),
                person_labelled(),
            )
        )
    )


def now_utc() -> dt.datetime:
    return utcnow()
