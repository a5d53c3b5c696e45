"""Projects, memberships and cases."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from loupe.db.models import (
    Annotation,
    Case,
    Item,
    Membership,
    Project,
    ProjectRole,
    User,
)
from loupe.db.types import utcnow
from loupe.errors import ErrorCode, LoupeError
from loupe.services.projects.case_pattern import compile_case_pattern
from loupe.services.projects.schema import validate_schema
from loupe.tasks import kind_of

DEFAULT_SETTINGS: dict[str, Any] = {
    "ensemble": ["effnet-lite0", "mobilenet_v2"],
    "confidence_threshold": 0.8,
    "retrain_every": 20,
    "case_pattern": None,
}
_SETTING_TYPES: dict[str, tuple[type, ...]] = {
    "ensemble": (list,),
    "confidence_threshold": (float, int),
    "retrain_every": (int,),
    "case_pattern": (str, type(None)),
}


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    out = dict(DEFAULT_SETTINGS)
    for key, value in settings.items():
        types = _SETTING_TYPES.get(key)
        if types is None:
            out[key] = value  # settings added by later capabilities pass through
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise LoupeError(ErrorCode.INVALID, f"setting {key!r}={value!r} has the wrong type")
        out[key] = value
    if not 0.0 <= float(out["confidence_threshold"]) <= 1.0:
        raise LoupeError(ErrorCode.INVALID, "confidence_threshold must be within [0, 1]")
    if int(out["retrain_every"]) < 0:
        raise LoupeError(ErrorCode.INVALID, "retrain_every must be >= 0 (0 turns it off)")
    _check_review_budget(out.get("review_budget"))
    _check_ensemble(out["ensemble"])
    _check_head("class_head", out.get("class_head"))
    if out["case_pattern"]:
        compile_case_pattern(out["case_pattern"])  # RE2: no catastrophic backtracking
    return out


def _check_ensemble(members: list[Any]) -> None:
    """INVALID for an empty member list or a backbone that is not registered."""
    from loupe.features import BACKBONES  # the package registers the built-in ones

    known = sorted(BACKBONES)
    if not members:
        raise LoupeError(
            ErrorCode.INVALID, f"the ensemble needs at least one backbone; known: {known}"
        )
    unknown = [m for m in members if not isinstance(m, str) or m not in BACKBONES]
    if unknown:
        raise LoupeError(
            ErrorCode.INVALID,
            f"unknown backbone(s) {unknown} in the ensemble; known: {known}",
        )


def _check_review_budget(value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
        raise LoupeError(
            ErrorCode.INVALID,
            f"review_budget {value!r}: give the most items to flag as a fraction in (0, 1], "
            "e.g. 0.2 for 'flag at most 20%'",
        )


def _check_head(key: str, value: Any) -> None:
    if value is None:
        return
    from loupe.learn import CLASS_HEADS

    if value not in CLASS_HEADS:
        raise LoupeError(
            ErrorCode.INVALID, f"unknown {key} {value!r}; use one of {sorted(CLASS_HEADS)}"
        )


def create_project(
    db: Session,
    *,
    name: str,
    task: str,
    schema: dict[str, Any],
    owner_id: int,
    description: str = "",
    settings: dict[str, Any] | None = None,
) -> Project:
    name = name.strip()
    if not name:
        raise LoupeError(ErrorCode.INVALID, "project name must not be empty")
    kind_of(task)  # INVALID naming the known kinds
    if db.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"a project named {name!r} already exists")
    project = Project(
        name=name,
        task=task,
        schema=validate_schema(task, schema),
        settings=validate_settings(settings or {}),
        description=description,
        created_by=owner_id,
    )
    db.add(project)
    db.flush()
    db.add(Membership(project_id=project.id, user_id=owner_id, role=ProjectRole.owner.value))
    db.flush()
    return project


def find_project(db: Session, ref: str | int) -> Project:
    """A project by id or by exact name (for the CLI)."""
    project = None
    if isinstance(ref, int) or str(ref).isdigit():
        project = db.get(Project, int(ref))
    if project is None:
        project = db.scalar(select(Project).where(Project.name == str(ref)))
    if project is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"no project with id or name {ref!r}")
    return project


def update_project(
    db: Session,
    project: Project,
    *,
    name: str | None = None,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> Project:
    if name is not None and name.strip() != project.name:
        name = name.strip()
        if not name:
            raise LoupeError(ErrorCode.INVALID, "project name must not be empty")
        taken = db.scalar(select(Project.id).where(Project.name == name))
        if taken is not None:
            raise LoupeError(ErrorCode.CONFLICT, f"a project named {name!r} already exists")
        project.name = name
    if description is not None:
        project.description = description
    if schema is not None:
        new = validate_schema(project.task, schema)
        _check_schema_keeps_used_labels(db, project, new)
        project.schema = new
    if settings is not None:
        project.settings = validate_settings({**project.settings, **settings})
    project.updated_at = utcnow()
    db.flush()
    return project


def _check_schema_keeps_used_labels(
    db: Session, project: Project, new_schema: dict[str, Any]
) -> None:
    """Refuse a schema change that would orphan existing labels."""
    keep = kind_of(project.task).kept_labels(new_schema)
    if keep is not None:
        used: set[str] = set(
            db.scalars(
                select(func.coalesce(Annotation.label, ""))
                .where(Annotation.project_id == project.id, Annotation.label.is_not(None))
                .distinct()
            )
        )
        lost = sorted(used - keep)
        if lost:
            raise LoupeError(
                ErrorCode.CONFLICT,
                f"classes {lost} are in use by labels; relabel those items before removing them",
            )


def list_projects_for(db: Session, user: User) -> list[tuple[Project, str]]:
    if user.is_admin:
        rows = db.scalars(select(Project).order_by(Project.id)).all()
        return [(p, ProjectRole.owner.value) for p in rows]
    pairs = db.execute(
        select(Project, Membership.role)
        .join(Membership, Membership.project_id == Project.id)
        .where(Membership.user_id == user.id)
        .order_by(Project.id)
    ).all()
    return [(p, r) for p, r in pairs]


def project_counts(db: Session, project_ids: list[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {pid: {"items": 0, "labelled": 0} for pid in project_ids}
    if not project_ids:
        return counts
    for pid, n in db.execute(
        select(Item.project_id, func.count(Item.id))
        .where(Item.project_id.in_(project_ids))
        .group_by(Item.project_id)
    ):
        counts[pid]["items"] = n
    for pid, n in db.execute(
        select(Annotation.project_id, func.count(Annotation.id))
        .where(Annotation.project_id.in_(project_ids), Annotation.kind.not_in(("none", "skip")))
        .group_by(Annotation.project_id)
    ):
        counts[pid]["labelled"] = n
    return counts


# --- Members ----------------------------------------------------------------------


def _check_role(role: str) -> None:
    if role not in {r.value for r in ProjectRole}:
        raise LoupeError(
            ErrorCode.INVALID, f"unknown role {role!r}; use {[r.value for r in ProjectRole]}"
        )


def add_member(db: Session, project: Project, *, email: str, role: str) -> Membership:
    _check_role(role)
    user = db.scalar(select(User).where(User.email == email.strip().lower()))
    if user is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"no user with e-mail {email!r}")
    existing = db.scalar(
        select(Membership).where(Membership.project_id == project.id, Membership.user_id == user.id)
    )
    if existing is not None:
        raise LoupeError(ErrorCode.CONFLICT, f"{email} is already a member ({existing.role})")
    m = Membership(project_id=project.id, user_id=user.id, role=role)
    db.add(m)
    db.flush()
    return m


def get_membership(db: Session, project: Project, user_id: int) -> Membership:
    m = db.scalar(
        select(Membership).where(Membership.project_id == project.id, Membership.user_id == user_id)
    )
    if m is None:
        raise LoupeError(ErrorCode.NOT_FOUND, f"user {user_id} is not a member of this project")
    return m


def _owners(db: Session, project: Project) -> int:
    return (
        db.scalar(
            select(func.count(Membership.id)).where(
                Membership.project_id == project.id, Membership.role == ProjectRole.owner.value
            )
        )
        or 0
    )


def set_member_role(db: Session, project: Project, user_id: int, role: str) -> Membership:
    _check_role(role)
    m = get_membership(db, project, user_id)
    if m.role == ProjectRole.owner.value and role != m.role and _owners(db, project) <= 1:
        raise LoupeError(ErrorCode.CONFLICT, "a project needs at least one owner")
    m.role = role
    db.flush()
    return m


def remove_member(db: Session, project: Project, user_id: int) -> None:
    m = get_membership(db, project, user_id)
    if m.role == ProjectRole.owner.value and _owners(db, project) <= 1:
        raise LoupeError(ErrorCode.CONFLICT, "cannot remove the last owner of a project")
    db.delete(m)
    db.flush()


# --- Cases ------------------------------------------------------------------------


def get_or_create_case(db: Session, project_id: int, name: str) -> Case:
    name = name.strip()
    if not name:
        raise LoupeError(ErrorCode.INVALID, "case name must not be empty")
    case = db.scalar(select(Case).where(Case.project_id == project_id, Case.name == name))
    if case is None:
        case = Case(project_id=project_id, name=name)
        db.add(case)
        db.flush()
    return case


def get_case(db: Session, project: Project, case_id: int) -> Case:
    case = db.get(Case, case_id)
    if case is None or case.project_id != project.id:
        raise LoupeError(ErrorCode.NOT_FOUND, f"case {case_id} not found in project {project.id}")
    return case
