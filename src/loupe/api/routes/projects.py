"""Projects and their members."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from loupe.api.deps import CurrentUser, OwnerProject, SessionDep, ViewerProject, project_role
from loupe.api.params import Id
from loupe.api.schemas.common import Message
from loupe.api.schemas.projects import (
    MemberCreate,
    MemberPublic,
    MembersPublic,
    MemberUpdate,
    ProjectCreate,
    ProjectPublic,
    ProjectsPublic,
    ProjectUpdate,
)
from loupe.db.models import Membership, Project, User
from loupe.services.projects import core as svc

router = APIRouter(prefix="/projects", tags=["projects"])


def _public(project: Project, role: str, counts: dict[str, int]) -> ProjectPublic:
    return ProjectPublic(
        id=project.id,
        name=project.name,
        task=project.task,
        label_schema=project.schema,
        description=project.description,
        settings=project.settings,
        created_at=project.created_at,
        role=role,
        **counts,
    )


@router.get("", response_model=ProjectsPublic, response_model_by_alias=True)
def list_projects(user: CurrentUser, db: SessionDep) -> ProjectsPublic:
    pairs = svc.list_projects_for(db, user)
    counts = svc.project_counts(db, [p.id for p, _ in pairs])
    data = [_public(p, role, counts[p.id]) for p, role in pairs]
    return ProjectsPublic(data=data, count=len(data))


@router.post("", response_model=ProjectPublic, status_code=201)
def create_project(body: ProjectCreate, user: CurrentUser, db: SessionDep) -> ProjectPublic:
    project = svc.create_project(
        db,
        name=body.name,
        task=body.task,
        schema=body.label_schema,
        owner_id=user.id,
        description=body.description,
        settings=body.settings,
    )
    return _public(project, "owner", {"items": 0, "labelled": 0})


@router.get("/{project_id}", response_model=ProjectPublic)
def get_project(project: ViewerProject, user: CurrentUser, db: SessionDep) -> ProjectPublic:
    role = project_role(db, project, user) or "viewer"
    return _public(project, role, svc.project_counts(db, [project.id])[project.id])


@router.patch("/{project_id}", response_model=ProjectPublic)
def update_project(body: ProjectUpdate, project: OwnerProject, db: SessionDep) -> ProjectPublic:
    svc.update_project(
        db,
        project,
        name=body.name,
        description=body.description,
        schema=body.label_schema,
        settings=body.settings,
    )
    return _public(project, "owner", svc.project_counts(db, [project.id])[project.id])


@router.delete("/{project_id}", response_model=Message)
def delete_project(project: OwnerProject, db: SessionDep) -> Message:
    name = project.name
    db.delete(project)
    return Message(message=f"project {name!r} deleted (files imported in place are untouched)")


@router.get("/{project_id}/members", response_model=MembersPublic)
def list_members(project: ViewerProject, db: SessionDep) -> MembersPublic:
    rows = db.execute(
        select(Membership, User)
        .join(User, User.id == Membership.user_id)
        .where(Membership.project_id == project.id)
        .order_by(Membership.id)
    ).all()
    data = [MemberPublic(user_id=u.id, email=u.email, name=u.name, role=m.role) for m, u in rows]
    return MembersPublic(data=data, count=len(data))


@router.post("/{project_id}/members", response_model=MemberPublic, status_code=201)
def add_member(body: MemberCreate, project: OwnerProject, db: SessionDep) -> MemberPublic:
    m = svc.add_member(db, project, email=body.email, role=body.role)
    return MemberPublic(user_id=m.user.id, email=m.user.email, name=m.user.name, role=m.role)


@router.patch("/{project_id}/members/{user_id}", response_model=MemberPublic)
def update_member(
    user_id: Id, body: MemberUpdate, project: OwnerProject, db: SessionDep
) -> MemberPublic:
    m = svc.set_member_role(db, project, user_id, body.role)
    return MemberPublic(user_id=m.user.id, email=m.user.email, name=m.user.name, role=m.role)


@router.delete("/{project_id}/members/{user_id}", response_model=Message)
def remove_member(user_id: Id, project: OwnerProject, db: SessionDep) -> Message:
    svc.remove_member(db, project, user_id)
    return Message(message="member removed")
