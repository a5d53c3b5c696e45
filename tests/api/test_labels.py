"""Labels: set/clear, schema checks, optimistic locking, batch, audit, model guard."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from loupe.db.models import AnnotationEvent


def _setup(login: Any, make_user: Any, make_project: Any, make_item: Any, **kw: Any) -> Any:
    owner = make_user()
    project = make_project(owner, **kw)
    items = [make_item(project) for _ in range(5)]
    return owner, project, items, login(owner)


def test_set_change_clear_with_versions_and_audit(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    owner, project, items, c = _setup(login, make_user, make_project, make_item)
    url = f"/api/projects/{project.id}/items/{items[0].id}/label"
    r = c.put(url, json={"kind": "class", "label": "neutrophil", "version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1 and r.json()["annotation"]["label"] == "neutrophil"
    r = c.put(url, json={"kind": "class", "label": "monocyte", "version": 1})
    assert r.json()["version"] == 2
    stale = c.put(url, json={"kind": "class", "label": "lymphocyte", "version": 1})
    assert stale.status_code == 409
    detail = stale.json()["detail"]
    assert detail["code"] == "stale_version" and detail["current_version"] == 2
    assert detail["current"]["label"] == "monocyte"
    cleared = c.delete(url + "?version=2")
    assert cleared.status_code == 200 and cleared.json()["annotation"] is None
    assert cleared.json()["version"] == 3
    events = db.scalars(
        select(AnnotationEvent)
        .where(AnnotationEvent.item_id == items[0].id)
        .order_by(AnnotationEvent.id)
    ).all()
    assert [(e.action, e.version) for e in events] == [("set", 1), ("set", 2), ("clear", 3)]
    assert events[1].before["label"] == "neutrophil" and events[1].after["label"] == "monocyte"
    assert all(e.user_id == owner.id for e in events)
    hist = c.get(f"/api/projects/{project.id}/items/{items[0].id}/history").json()
    assert hist["count"] == 3 and hist["data"][0]["user_email"] == owner.email


def test_unsure_and_skip_always_available(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    _, project, items, c = _setup(login, make_user, make_project, make_item)
    for item, kind in zip(items, ["unsure", "skip"], strict=False):
        r = c.put(f"/api/projects/{project.id}/items/{item.id}/label", json={"kind": kind})
        assert r.status_code == 200 and r.json()["annotation"]["kind"] == kind
    listed = c.get(f"/api/projects/{project.id}/items?label=unsure").json()
    assert [i["id"] for i in listed["data"]] == [items[0].id]


def test_labels_that_do_not_fit_the_schema_get_422(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    _, project, items, c = _setup(login, make_user, make_project, make_item)
    url = f"/api/projects/{project.id}/items/{items[0].id}/label"
    r = c.put(url, json={"kind": "class", "label": "platelet"})
    assert r.status_code == 422 and "platelet" in r.json()["detail"]["message"]
    r = c.put(url, json={"kind": "scores", "scores": {"fibrosis": 1}})
    assert r.status_code == 422
    r = c.put(url, json={"kind": "banana"})
    assert r.status_code == 422


def test_scores_are_checked_against_range_and_step(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    _, project, items, c = _setup(login, make_user, make_project, make_item, task="score")
    url = f"/api/projects/{project.id}/items/{items[0].id}/label"
    ok = c.put(url, json={"kind": "scores", "scores": {"fibrosis": 3, "atrophy": 0}})
    assert ok.status_code == 200 and ok.json()["annotation"]["scores"] == {
        "fibrosis": 3.0,
        "atrophy": 0.0,
    }
    for bad in ({"fibrosis": 5}, {"fibrosis": 1.5}, {"nope": 1}, {"fibrosis": "high"}):
        r = c.put(url, json={"kind": "scores", "scores": bad})
        assert r.status_code == 422, bad


def test_batch_apply_reports_conflicts_and_applies_the_rest(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    _, project, items, c = _setup(login, make_user, make_project, make_item)
    ids = [i.id for i in items]
    c.put(
        f"/api/projects/{project.id}/items/{ids[0]}/label",
        json={"kind": "class", "label": "monocyte"},
    )
    r = c.post(
        f"/api/projects/{project.id}/labels/batch",
        json={
            "item_ids": ids,
            "kind": "class",
            "label": "lymphocyte",
            "versions": {str(ids[0]): 0},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [x["item_id"] for x in body["conflicts"]] == [ids[0]]
    assert body["applied"] == ids[1:]
    listed = c.get(f"/api/projects/{project.id}/items?label=lymphocyte").json()
    assert listed["count"] == 4
    again = c.post(
        f"/api/projects/{project.id}/labels/batch",
        json={"item_ids": ids[1:], "kind": "class", "label": "lymphocyte"},
    )
    assert again.json()["unchanged"] == ids[1:] and again.json()["applied"] == []
    bad = c.post(
        f"/api/projects/{project.id}/labels/batch",
        json={"item_ids": ids, "kind": "class", "label": "nope"},
    )
    assert bad.status_code == 422
    cleared = c.post(f"/api/projects/{project.id}/labels/batch", json={"item_ids": ids[1:3]})
    assert cleared.json()["applied"] == ids[1:3]
    assert c.get(f"/api/projects/{project.id}/items?status=unlabelled").json()["count"] == 2


def test_a_model_can_never_replace_a_human_label(
    make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    import pytest

    from loupe.errors import LoupeError
    from loupe.services.labels.core import LabelValue, batch_apply, set_label

    owner = make_user()
    project = make_project(owner)
    a, b = make_item(project), make_item(project)
    set_label(db, project, a.id, LabelValue(kind="class", label="neutrophil"), user_id=owner.id)
    with pytest.raises(LoupeError) as exc:
        set_label(
            db,
            project,
            a.id,
            LabelValue(kind="class", label="monocyte"),
            user_id=None,
            origin="model",
            source="model",
        )
    assert exc.value.code == "human_label_protected"
    result = batch_apply(
        db,
        project,
        [a.id, b.id],
        LabelValue(kind="class", label="monocyte"),
        user_id=None,
        origin="model",
        source="model",
    )
    assert result.applied == [b.id]
    assert result.conflicts[0]["item_id"] == a.id
    # a human may replace a model-origin label
    ann = set_label(
        db, project, b.id, LabelValue(kind="class", label="lymphocyte"), user_id=owner.id
    )
    assert ann.origin == "human" and ann.label == "lymphocyte"


def test_item_listing_filters_and_keyset_paging(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    from loupe.services.projects.core import get_or_create_case

    owner = make_user()
    project = make_project(owner)
    case = get_or_create_case(db, project.id, "S-1")
    db.commit()
    in_case = [make_item(project, case_id=case.id) for _ in range(3)]
    rest = [make_item(project) for _ in range(4)]
    c = login(owner)
    base = f"/api/projects/{project.id}/items"
    r = c.get(f"{base}?case_id={case.id}").json()
    assert [i["id"] for i in r["data"]] == [i.id for i in in_case] and r["count"] == 3
    page1 = c.get(f"{base}?limit=4").json()
    assert len(page1["data"]) == 4 and page1["next_after_id"] == page1["data"][-1]["id"]
    page2 = c.get(f"{base}?limit=4&after_id={page1['next_after_id']}").json()
    got = [i["id"] for i in page1["data"] + page2["data"]]
    assert got == sorted(i.id for i in in_case + rest)
    assert c.get(f"{base}?status=bogus").status_code == 422
    one = c.get(f"{base}/{rest[0].id}").json()
    assert one["filename"] == rest[0].filename and one["draft"] is None
