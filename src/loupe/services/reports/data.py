"""Gather a case's report data from the database: counts, curators, model, drafts.

A finished case's data depends only on what was true when it was finished
(its ``finished_at``, the newest model ready then) and every list is sorted, so
the PDF built from it (:mod:`loupe.services.reports.core`) is byte-identical each time.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

import loupe
from loupe.db.models import (
    Annotation,
    AnnotationEvent,
    Case,
    Item,
    ModelVersion,
    Prediction,
    Project,
    User,
)
from loupe.db.types import utcnow
from loupe.errors import LoupeError
from loupe.reports.case_report import (
    THUMBS_PER_GROUP,
    CaseReportData,
    Curator,
    FlaggedRow,
    ModelInfo,
    Thumb,
    ThumbGroup,
)
from loupe.services.items import files as item_files
from loupe.settings import Settings
from loupe.tasks import kind_of
from loupe.tasks.base import DECISION_KINDS, Draft, LabelValue, TaskKind

RESOLUTION_ORDER = (
    "accepted draft",
    "confirmed draft",
    "corrected",
    "unsure / skip",
    "open",
    "labelled before this model",
)


def _model_for(db: Session, project: Project, case: Case) -> ModelVersion | None:
    """The model a report speaks of: for a finished case the newest version ready
    when it was finished (stable over later trainings), else the active one."""
    if case.status == "finished" and case.finished_at is not None:
        version = db.scalar(
            select(ModelVersion)
            .where(
                ModelVersion.project_id == project.id,
                ModelVersion.status == "ready",
                ModelVersion.finished_at <= case.finished_at,
            )
            .order_by(ModelVersion.finished_at.desc(), ModelVersion.id.desc())
            .limit(1)
        )
        if version is not None:
            return version
    return db.scalar(
        select(ModelVersion).where(
            ModelVersion.project_id == project.id, ModelVersion.active.is_(True)
        )
    )


def _value(ann: Annotation) -> LabelValue:
    return LabelValue(kind=ann.kind, label=ann.label, scores=ann.scores, data=ann.data)


def _draft(pred: Prediction) -> Draft:
    return Draft(label=pred.label, output=pred.output or {})


def _resolution(
    kind: TaskKind,
    ann: Annotation | None,
    pred: Prediction,
    last_source: str | None,
    model_done: dt.datetime | None,
) -> tuple[str, str]:
    """``(summary key, text)`` of how a human resolved a draft."""
    if ann is None or ann.kind == "none":
        return "open", "not resolved yet"
    value = _value(ann)
    if model_done is not None and ann.updated_at < model_done:
        # a training label, not a reaction to this draft
        return "labelled before this model", (
            f"labelled before the model ({kind.label_text(value)})"
        )
    if ann.kind in DECISION_KINDS:
        return "unsure / skip", f"marked {ann.kind}"
    draft = _draft(pred)
    if kind.agrees(value, draft):
        # model_accepted: the provenance the label keeps; 'accept': labels from before it
        if ann.origin == "model_accepted" or last_source == "accept":
            return "accepted draft", "accepted draft"
        return "confirmed draft", "confirmed draft"
    return "corrected", f"corrected: {kind.draft_text(draft)} → {kind.label_text(value)}"


def _thumb(settings: Settings, item: Item) -> Thumb:
    try:
        return Thumb(item.filename, item_files.thumbnail_path(settings, item))
    except LoupeError:
        return Thumb(item.filename, None)


def collect_case_data(
    settings: Settings, db: Session, project: Project, case: Case, *, now: dt.datetime | None = None
) -> CaseReportData:
    """Everything the case report shows, read from the database (sorted, plain data)."""
    task = project.task
    kind = kind_of(task)
    items = list(
        db.scalars(select(Item).where(Item.case_id == case.id).order_by(Item.filename, Item.id))
    )
    anns = {
        a.item_id: a
        for a in db.scalars(
            select(Annotation)
            .join(Item, Item.id == Annotation.item_id)
            .where(Item.case_id == case.id)
        )
    }
    labelled = {i: a for i, a in anns.items() if a.kind != "none"}
    version = _model_for(db, project, case)
    preds: dict[int, Prediction] = {}
    if version is not None:
        preds = {
            p.item_id: p
            for p in db.scalars(
                select(Prediction)
                .join(Item, Item.id == Prediction.item_id)
                .where(Item.case_id == case.id, Prediction.model_version_id == version.id)
            )
        }
    events = db.execute(
        select(AnnotationEvent.item_id, AnnotationEvent.user_id, AnnotationEvent.at,
               AnnotationEvent.source, AnnotationEvent.action)
        .join(Item, Item.id == AnnotationEvent.item_id)
        .where(Item.case_id == case.id)
        .order_by(AnnotationEvent.id)
    ).all()  # fmt: skip
    last_source: dict[int, str] = {}
    span: dict[int, list[dt.datetime]] = {}
    for item_id, user_id, at, source, action in events:
        if action == "set":
            last_source[item_id] = source
        if user_id is not None and source != "model":
            s = span.setdefault(user_id, [at, at])
            s[0], s[1] = min(s[0], at), max(s[1], at)
    user_ids = set(span) | {a.updated_by for a in labelled.values() if a.updated_by is not None}
    if case.finished_by is not None:
        user_ids.add(case.finished_by)
    emails: dict[int, str] = dict(
        db.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all()
    )
    per_user: dict[int, int] = {}
    for a in labelled.values():
        if a.updated_by is not None:
            per_user[a.updated_by] = per_user.get(a.updated_by, 0) + 1
    curators = sorted(
        (
            Curator(emails.get(uid, f"user {uid}"), per_user.get(uid, 0), s[0], s[1])
            for uid, s in span.items()
        ),
        key=lambda c: c.email,
    )
    by_id = {i.id: i for i in items}
    data = CaseReportData(
        project_name=project.name,
        task=task,
        text=kind.report_text(),
        case_name=case.name,
        case_status=case.status,
        generated_at=(case.finished_at if case.status == "finished" and case.finished_at else None)
        or now
        or utcnow(),
        loupe_version=loupe.__version__,
        finished_at=case.finished_at if case.status == "finished" else None,
        finished_by=emails.get(case.finished_by) if case.finished_by is not None else None,
        curators=curators,
        model=ModelInfo(
            number=version.number,
            members=[str(m) for m in version.members or []],
            finished_at=version.finished_at,
            summary=kind.model_summary(version.metrics or {}),
        )
        if version is not None
        else None,
        items_total=len(items),
        labelled=sum(1 for a in labelled.values() if a.kind != "skip"),
    )
    _fill_counts_and_thumbs(settings, project, items, labelled, data)
    resolutions: dict[str, int] = {}
    for item in items:
        pred = preds.get(item.id)
        if pred is None:
            continue
        ann = labelled.get(item.id)
        model_done = version.finished_at if version is not None else None
        key, text = _resolution(kind, ann, pred, last_source.get(item.id), model_done)
        resolutions[key] = resolutions.get(key, 0) + 1
        if pred.flagged:
            by = emails.get(ann.updated_by, "") if ann and ann.updated_by is not None else ""
            data.flagged.append(
                FlaggedRow(
                    filename=by_id[item.id].filename,
                    draft=kind.draft_text(_draft(pred)),
                    confidence=pred.confidence,
                    reason=(pred.flag_reason or "flagged").replace("_", " "),
                    resolution=text,
                    by=by,
                )
            )
    data.resolutions = {k: resolutions[k] for k in RESOLUTION_ORDER if resolutions.get(k)}
    data.metrics = kind.report_metrics(
        project.schema,
        [_value(a) for a in labelled.values()],
        [_draft(p) for p in preds.values()],
    )
    return data


def _fill_counts_and_thumbs(
    settings: Settings,
    project: Project,
    items: list[Item],
    labelled: dict[int, Annotation],
    data: CaseReportData,
) -> None:
    kind = kind_of(project.task)
    pairs = [(item.id, _value(labelled[item.id])) for item in items if item.id in labelled]
    result = kind.report_groups(project.schema, pairs)
    data.counts = result.counts
    by_id = {item.id: item for item in items}
    for name in result.order:
        members = result.groups.get(name)
        if not members:
            continue
        data.thumb_groups.append(
            ThumbGroup(
                title=name,
                total=len(members),
                thumbs=[_thumb(settings, by_id[i]) for i in members[:THUMBS_PER_GROUP]],
                color=result.colors.get(name),
            )
        )
