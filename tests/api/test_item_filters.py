"""Item listing: filters by draft (class, flag reason, confidence), label origin, sorts,
and each member's draft."""

from __future__ import annotations

from typing import Any

from loupe.db.models import ModelVersion, Prediction
from loupe.services.labels.core import LabelValue, set_label

DRAFTS = [  # (label, confidence, uncertainty, flag_reason)
    ("neutrophil", 0.95, 0.1, None),
    ("monocyte", 0.40, 0.9, "low_confidence"),
    ("neutrophil", 0.55, 0.7, "disagreement"),
    ("monocyte", 0.80, 0.3, None),
]


def _project_with_drafts(db: Any, make_user: Any, make_project: Any, make_item: Any) -> Any:
    owner = make_user()
    project = make_project(owner)
    items = [make_item(project) for _ in range(len(DRAFTS) + 1)]  # the last has no draft
    version = ModelVersion(
        project_id=project.id, number=1, status="ready", active=True, members=["a", "b"]
    )
    db.add(version)
    db.flush()
    for item, (label, conf, unc, reason) in zip(items, DRAFTS, strict=False):
        db.add(
            Prediction(
                project_id=project.id,
                item_id=item.id,
                model_version_id=version.id,
                label=label,
                confidence=conf,
                uncertainty=unc,
                flagged=reason is not None,
                flag_reason=reason,
                output={"probs": {label: conf}},
                members={"a": {"label": label}, "b": {"label": "monocyte"}},
            )
        )
    db.commit()
    return owner, project, items


def _ids(response: Any) -> list[int]:
    assert response.status_code == 200, response.text
    return [i["id"] for i in response.json()["data"]]


def test_filters_by_draft_and_origin(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    owner, project, items = _project_with_drafts(db, make_user, make_project, make_item)
    ids = [i.id for i in items]
    c = login(owner)
    base = f"/api/projects/{project.id}/items"
    assert _ids(c.get(f"{base}?predicted=monocyte")) == [ids[1], ids[3]]
    assert _ids(c.get(f"{base}?flag_reason=low_confidence")) == [ids[1]]
    assert _ids(c.get(f"{base}?min_confidence=0.5&max_confidence=0.9")) == [ids[2], ids[3]]
    r = c.get(f"{base}?predicted=neutrophil&min_confidence=0.6").json()
    assert [i["id"] for i in r["data"]] == [ids[0]] and r["count"] == 1

    set_label(db, project, ids[0], LabelValue(kind="class", label="neutrophil"), user_id=owner.id)
    set_label(
        db,
        project,
        ids[3],
        LabelValue(kind="class", label="monocyte"),
        user_id=None,
        origin="model_accepted",
        source="accept",
    )
    db.commit()
    assert _ids(c.get(f"{base}?origin=human")) == [ids[0]]
    r = c.get(f"{base}?origin=model_accepted").json()
    assert [i["id"] for i in r["data"]] == [ids[3]] and r["count"] == 1
    assert c.get(f"{base}?origin=robot").status_code == 422
    assert c.get(f"{base}?min_confidence=2").status_code == 422


def test_sorts_page_by_offset_with_undrafted_items_last(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    owner, project, items = _project_with_drafts(db, make_user, make_project, make_item)
    ids = [i.id for i in items]
    c = login(owner)
    base = f"/api/projects/{project.id}/items"
    assert _ids(c.get(f"{base}?sort=confidence")) == [ids[1], ids[2], ids[3], ids[0], ids[4]]
    assert _ids(c.get(f"{base}?sort=-confidence")) == [ids[0], ids[3], ids[2], ids[1], ids[4]]
    assert _ids(c.get(f"{base}?sort=-uncertainty")) == [ids[1], ids[2], ids[3], ids[0], ids[4]]
    page1 = c.get(f"{base}?sort=uncertainty&limit=2").json()
    assert page1["next_after_id"] is None  # keyset paging is for the id order
    page2 = c.get(f"{base}?sort=uncertainty&limit=2&offset=2").json()
    page3 = c.get(f"{base}?sort=uncertainty&limit=2&offset=4").json()
    got = [i["id"] for p in (page1, page2, page3) for i in p["data"]]
    assert got == [ids[0], ids[3], ids[2], ids[1], ids[4]]
    assert c.get(f"{base}?sort=bogus").status_code == 422
    assert c.get(f"{base}?sort=confidence&after_id=1").status_code == 422
    # the id order still pages by keyset
    first = c.get(f"{base}?limit=3").json()
    assert first["next_after_id"] == ids[2]


def test_members_drafts_only_when_asked(
    login: Any, make_user: Any, make_project: Any, make_item: Any, db: Any
) -> None:
    owner, project, items = _project_with_drafts(db, make_user, make_project, make_item)
    c = login(owner)
    base = f"/api/projects/{project.id}/items"
    plain = c.get(base).json()["data"][0]["draft"]
    assert plain["members"] is None
    full = c.get(f"{base}?members=true").json()["data"]
    assert full[1]["draft"]["members"] == {"a": {"label": "monocyte"}, "b": {"label": "monocyte"}}
    assert full[4]["draft"] is None
