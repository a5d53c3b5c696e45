"""Provenance of accepted drafts in every output; skip is not a label; auto-retrain
counts items (issue 10, item 4)."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import select

from loupe.db.models import Annotation, Case, ModelVersion, Prediction
from loupe.errors import ErrorCode, LoupeError


def _model_with_drafts(db: Any, project: Any, items: list[Any], label: str) -> int:
    """A ready, active model version (finished an hour ago) with a draft per item."""
    version = ModelVersion(
        project_id=project.id,
        number=1,
        status="ready",
        active=True,
        members=["classic"],
        finished_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    db.add(version)
    db.flush()
    for item in items:
        db.add(
            Prediction(
                project_id=project.id,
                item_id=item.id,
                model_version_id=version.id,
                label=label,
                confidence=0.9,
                output={"probs": {label: 0.9}},
            )
        )
    db.commit()
    return version.id


def _csv(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), encoding="utf-8-sig")


def test_an_accepted_draft_is_model_accepted_in_every_output(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any, settings: Any
) -> None:
    from loupe.services.labels import core as labels
    from loupe.services.reports.data import collect_case_data
    from loupe.tasks import kind_of

    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    case_id = c.post(f"/api/projects/{project.id}/cases", json={"name": "S-01"}).json()["id"]
    items = [make_item(project, case_id=case_id) for _ in range(4)]
    vid = _model_with_drafts(db, project, items, "neutrophil")
    pid = project.id
    r = c.put(
        f"/api/projects/{pid}/items/{items[0].id}/label",
        json={"kind": "class", "label": "monocyte"},
    )
    assert r.status_code == 200
    r = c.post(
        f"/api/projects/{pid}/predictions/accept", json={"item_ids": [items[1].id, items[2].id]}
    )
    assert r.status_code == 200 and r.json()["applied"] == [items[1].id, items[2].id]
    assert r.json()["change_id"]

    # the item API
    ann = c.get(f"/api/projects/{pid}/items/{items[1].id}").json()["annotation"]
    assert ann["origin"] == "model_accepted" and ann["model_version_id"] == vid
    assert ann["updated_by"] == owner.id
    assert (
        c.get(f"/api/projects/{pid}/items/{items[0].id}").json()["annotation"]["origin"] == "human"
    )

    # the CSV: who accepted it and which model version
    df = _csv(c.get(f"/api/projects/{pid}/export.csv").content).set_index("item_id")
    assert df.loc[items[1].id, "label_origin"] == "model_accepted"
    assert df.loc[items[1].id, "accepted_model_version"] == 1
    assert df.loc[items[1].id, "labelled_by"] == owner.email
    assert df.loc[items[0].id, "label_origin"] == "human"
    assert pd.isna(df.loc[items[0].id, "accepted_model_version"])

    # the dataset ZIP: the CSV inside and the manifest's counts
    with zipfile.ZipFile(io.BytesIO(c.get(f"/api/projects/{pid}/export.zip").content)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        inner = _csv(zf.read("labels.csv")).set_index("item_id")
    assert manifest["counts"]["labelled"] == 3
    assert manifest["counts"]["by_origin"] == {"human": 1, "model_accepted": 2}
    assert inner.loc[items[2].id, "label_origin"] == "model_accepted"

    # the case report
    case = db.get(Case, case_id)
    data = collect_case_data(settings, db, db.merge(project), case)
    assert data.resolutions.get("accepted draft") == 2
    assert data.resolutions.get("corrected") == 1

    # a person's decision: it trains, and a model write never replaces it
    training = kind_of(project.task).load_training_data(db, db.merge(project))
    assert set(training.labels) == {items[0].id, items[1].id, items[2].id}
    with pytest.raises(LoupeError) as exc:
        labels.set_label(
            db,
            db.merge(project),
            items[1].id,
            labels.LabelValue(kind="class", label="lymphocyte"),
            user_id=None,
            origin=labels.MODEL,
        )
    assert exc.value.code == ErrorCode.HUMAN_LABEL_PROTECTED
    db.rollback()
    assert db.scalar(select(Annotation.label).where(Annotation.item_id == items[1].id)) == (
        "neutrophil"
    )
    db.rollback()

    # accepting drafts is one undo step
    undone = c.post(f"/api/projects/{pid}/undo").json()
    assert undone["what"] == "accept" and sorted(undone["applied"]) == [items[1].id, items[2].id]
    assert c.get(f"/api/projects/{pid}/items/{items[1].id}").json()["annotation"] is None
    redone = c.post(f"/api/projects/{pid}/redo").json()
    assert sorted(redone["applied"]) == [items[1].id, items[2].id]
    ann = c.get(f"/api/projects/{pid}/items/{items[1].id}").json()["annotation"]
    assert ann["origin"] == "model_accepted" and ann["model_version_id"] == vid


def test_skip_is_not_counted_as_labelled(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    case_id = c.post(f"/api/projects/{project.id}/cases", json={"name": "S-01"}).json()["id"]
    items = [make_item(project, case_id=case_id) for _ in range(4)]
    pid = project.id
    for item, body in zip(
        items,
        [{"kind": "class", "label": "monocyte"}, {"kind": "unsure"}, {"kind": "skip"}],
        strict=False,
    ):
        assert c.put(f"/api/projects/{pid}/items/{item.id}/label", json=body).status_code == 200
    listed = c.get(f"/api/projects/{pid}/items?status=labelled").json()
    assert sorted(i["id"] for i in listed["data"]) == [items[0].id, items[1].id]
    assert listed["count"] == 2
    assert c.get(f"/api/projects/{pid}").json()["labelled"] == 2
    assert c.get(f"/api/projects/{pid}/cases/{case_id}").json()["labelled"] == 2
    df = _csv(c.get(f"/api/projects/{pid}/export.csv?labelled_only=true").content)
    assert sorted(df["item_id"]) == [items[0].id, items[1].id]
    skipped = c.get(f"/api/projects/{pid}/items?status=skip").json()["data"]
    assert [i["id"] for i in skipped] == [items[2].id]  # still findable as skipped


def test_auto_retrain_counts_distinct_newly_labelled_items(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    from loupe.services.training.train import labels_since_last_version

    def since() -> int:
        try:
            return labels_since_last_version(db, project.id)
        finally:
            db.rollback()  # end the read: the app writes next

    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    items = [make_item(project) for _ in range(4)]
    url = f"/api/projects/{project.id}/items/{items[0].id}/label"
    for label in ["monocyte", "neutrophil", "lymphocyte", "monocyte", "neutrophil"]:
        assert c.put(url, json={"kind": "class", "label": label}).status_code == 200
    assert since() == 1  # five events, one item
    c.put(f"/api/projects/{project.id}/items/{items[1].id}/label", json={"kind": "skip"})
    assert since() == 1  # a skip is not a label
    c.post(
        f"/api/projects/{project.id}/labels/batch",
        json={"item_ids": [items[2].id, items[3].id], "kind": "class", "label": "monocyte"},
    )
    assert since() == 3
    c.delete(f"/api/projects/{project.id}/items/{items[3].id}/label")
    assert since() == 2  # cleared again
