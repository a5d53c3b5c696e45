"""Gather a case's report data from the database: counts, curators, model, drafts.

A finished case's data depends only on what was true when it was finished
(its ``finished_at``, the newest model ready then) and every list is sorted, so
the PDF built from it (:mod:`loupe.services.reports.core`) is byte-identical each time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

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
    MetricSummary,
    ModelInfo,
    Thumb,
    ThumbGroup,
)
from loupe.services.items import files as item_files
from loupe.services.projects.schema import PALETTE
from loupe.settings import Settings

OTHER_COLORS = {"unsure": "#9e9e9e", "skip": "#c8c8c8", "scored": "#4e79a7"}
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


def _model_summary(task: str, metrics: dict[str, Any]) -> str:
    ens = (metrics or {}).get("ensemble") or {}
    if task == "classify":
        parts = []
        if ens.get("accuracy") is not None:
            parts.append(f"cross-validated accuracy {ens['accuracy']:.2f}")
        if ens.get("ece") is not None:
            parts.append(f"ECE {ens['ece']:.3f}")
        return ", ".join(parts)
    per = ens.get("per_metric") or {}
    parts = [f"{k} MAE {v['mae']:.2f}" for k, v in sorted(per.items()) if v.get("mae") is not None]
    return ("cross-validated " + ", ".join(parts)) if parts else ""


def _draft_text(task: str, pred: Prediction) -> str:
    if task == "classify":
        return pred.label or "-"
    scores = (pred.output or {}).get("scores") or {}
    return ", ".join(f"{k} {float(v):g}" for k, v in sorted(scores.items())) or "-"


def _human_scores_text(scores: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {float(v):g}" for k, v in sorted((scores or {}).items()))


def _agrees(task: str, ann: Annotation, pred: Prediction) -> bool:
    if task == "classify":
        return ann.kind == "class" and ann.label == pred.label
    drafted = (pred.output or {}).get("scores") or {}
    mine = ann.scores or {}
    return ann.kind == "scores" and all(
        abs(float(mine[k]) - float(drafted.get(k, float("nan")))) < 1e-9 for k in mine
    )


def _human_text(task: str, ann: Annotation) -> str:
    if ann.kind == "class":
        return str(ann.label)
    if ann.kind == "scores":
        return _human_scores_text(ann.scores)
    return ann.kind


def _resolution(
    task: str,
    ann: Annotation | None,
    pred: Prediction,
    last_source: str | None,
    model_done: dt.datetime | None,
) -> tuple[str, str]:
    """``(summary key, text)`` of how a human resolved a draft."""
    if ann is None or ann.kind == "none":
        return "open", "not resolved yet"
    if model_done is not None and ann.updated_at < model_done:
        # a training label, not a reaction to this draft
        return "labelled before this model", f"labelled before the model ({_human_text(task, ann)})"
    if ann.kind in ("unsure", "skip"):
        return "unsure / skip", f"marked {ann.kind}"
    if _agrees(task, ann, pred):
        if last_source == "accept":
            return "accepted draft", "accepted draft"
        return "confirmed draft", "confirmed draft"
    if task == "classify":
        return "corrected", f"corrected: {pred.label} → {ann.label}"
    return "corrected", f"corrected: {_draft_text(task, pred)} → {_human_scores_text(ann.scores)}"


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
            summary=_model_summary(task, version.metrics),
        )
        if version is not None
        else None,
        items_total=len(items),
        labelled=len(labelled),
    )
    _fill_counts_and_thumbs(settings, project, items, labelled, data)
    resolutions: dict[str, int] = {}
    for item in items:
        pred = preds.get(item.id)
        if pred is None:
            continue
        ann = labelled.get(item.id)
        model_done = version.finished_at if version is not None else None
        key, text = _resolution(task, ann, pred, last_source.get(item.id), model_done)
        resolutions[key] = resolutions.get(key, 0) + 1
        if pred.flagged:
            by = emails.get(ann.updated_by, "") if ann and ann.updated_by is not None else ""
            data.flagged.append(
                FlaggedRow(
                    filename=by_id[item.id].filename,
                    draft=_draft_text(task, pred),
                    confidence=pred.confidence,
                    reason=(pred.flag_reason or "flagged").replace("_", " "),
                    resolution=text,
                    by=by,
                )
            )
    data.resolutions = {k: resolutions[k] for k in RESOLUTION_ORDER if resolutions.get(k)}
    if task == "score":
        data.metrics = _metric_summaries(project, labelled, preds)
    return data


def _fill_counts_and_thumbs(
    settings: Settings,
    project: Project,
    items: list[Item],
    labelled: dict[int, Annotation],
    data: CaseReportData,
) -> None:
    groups: dict[str, list[Item]] = {}
    if project.task == "classify":
        classes = project.schema.get("classes", [])
        counts = dict.fromkeys((c["name"] for c in classes), 0)
        for item in items:
            a = labelled.get(item.id)
            if a is None:
                continue
            key = str(a.label) if a.kind == "class" else a.kind
            counts[key] = counts.get(key, 0) + 1
            if a.kind == "class":
                groups.setdefault(key, []).append(item)
        colors = {
            c["name"]: c.get("color") or PALETTE[k % len(PALETTE)] for k, c in enumerate(classes)
        }
        data.counts = [
            (name, n, colors.get(name) or OTHER_COLORS.get(name, "#9e9e9e"))
            for name, n in counts.items()
            if n or name in colors
        ]
        order = [c["name"] for c in classes]
    else:
        counts = {}
        first = (project.schema.get("metrics") or [{}])[0].get("name")
        for item in items:
            a = labelled.get(item.id)
            if a is None:
                continue
            key = "scored" if a.kind == "scores" else a.kind
            counts[key] = counts.get(key, 0) + 1
            if a.kind == "scores" and first and first in (a.scores or {}):
                groups.setdefault(f"{first} = {float(a.scores[first]):g}", []).append(item)  # type: ignore[index]
        data.counts = [(k, counts[k], OTHER_COLORS.get(k, "#9e9e9e")) for k in sorted(counts)]
        order = sorted(groups, key=lambda g: float(g.rsplit("= ", 1)[1]))
        colors = {}
    for name in order:
        members = groups.get(name)
        if not members:
            continue
        data.thumb_groups.append(
            ThumbGroup(
                title=name,
                total=len(members),
                thumbs=[_thumb(settings, i) for i in members[:THUMBS_PER_GROUP]],
                color=colors.get(name),
            )
        )


def _metric_summaries(
    project: Project, labelled: dict[int, Annotation], preds: dict[int, Prediction]
) -> list[MetricSummary]:
    out = []
    for m in project.schema.get("metrics", []):
        name = m["name"]
        values = sorted(
            float(a.scores[name])
            for a in labelled.values()
            if a.kind == "scores" and a.scores and name in a.scores
        )
        drafted = [
            float(((p.output or {}).get("scores") or {})[name])
            for p in preds.values()
            if name in ((p.output or {}).get("scores") or {})
        ]
        out.append(
            MetricSummary(
                name=name,
                values=values,
                min=float(m["min"]),
                max=float(m["max"]),
                step=float(m["step"]),
                draft_mean=sum(drafted) / len(drafted) if drafted else None,
            )
        )
    return out
