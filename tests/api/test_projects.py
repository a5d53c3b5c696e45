"""Projects, schemas per task, members and roles, cases."""

from __future__ import annotations

from typing import Any

import pytest


def _classify(name: str = "cells") -> dict[str, Any]:
    return {
        "name": name,
        "task": "classify",
        "schema": {
            "classes": [
                {"name": "neutrophil", "color": "#ff0000", "hotkey": "1"},
                {"name": "lymphocyte"},
            ]
        },
    }


@pytest.mark.parametrize(
    ("task", "schema"),
    [
        ("classify", {"classes": [{"name": "pos"}, {"name": "neg"}]}),
        (
            "score",
            {
                "metrics": [
                    {"name": "fibrosis", "min": 0, "max": 4, "step": 1},
                    {"name": "atrophy", "min": 0, "max": 4, "step": 0.5},
                ]
            },
        ),
        ("segment", {"classes": [{"name": "nucleus"}, {"name": "cytoplasm"}]}),
        ("volume", {"classes": [{"name": "liver", "value": 1}, {"name": "tumour", "value": 2}]}),
    ],
)
def test_create_each_task(login: Any, make_user: Any, task: str, schema: dict[str, Any]) -> None:
    c = login(make_user())
    r = c.post("/api/projects", json={"name": f"p-{task}", "task": task, "schema": schema})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["task"] == task and body["role"] == "owner"
    if task in ("classify", "segment", "volume"):
        assert all(cl["color"].startswith("#") for cl in body["schema"]["classes"])
    if task == "classify":
        assert [cl["hotkey"] for cl in body["schema"]["classes"]] == ["1", "2"]
    listed = c.get("/api/projects").json()
    assert listed["count"] == 1 and listed["data"][0]["name"] == f"p-{task}"


@pytest.mark.parametrize(
    ("task", "schema", "needle"),
    [
        ("classify", {"classes": [{"name": "only-one"}]}, "at least 2"),
        ("classify", {"classes": [{"name": "a"}, {"name": "A"}]}, "duplicate class name"),
        ("classify", {"classes": [{"name": "a"}, {"name": "unsure"}]}, "reserved"),
        ("classify", {"classes": [{"name": "a", "hotkey": "0"}, {"name": "b"}]}, "reserved"),
        ("classify", {"classes": [{"name": "a", "color": "red"}, {"name": "b"}]}, "#rrggbb"),
        ("score", {"metrics": [{"name": "f", "min": 4, "max": 0}]}, "must exceed"),
        ("score", {"metrics": [{"name": "f", "step": 0}]}, "step"),
        ("score", {"classes": [{"name": "a"}, {"name": "b"}]}, "metrics"),
        (
            "segment",
            {"classes": [{"name": "a", "value": 1}, {"name": "b", "value": 1}]},
            "duplicate label value",
        ),
    ],
)
def test_invalid_schemas_get_a_clear_422(
    login: Any, make_user: Any, task: str, schema: dict[str, Any], needle: str
) -> None:
    c = login(make_user())
    r = c.post("/api/projects", json={"name": "bad", "task": task, "schema": schema})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]["code"] == "invalid"
    assert needle in r.json()["detail"]["message"]


def test_unknown_task_is_rejected(login: Any, make_user: Any) -> None:
    c = login(make_user())
    r = c.post("/api/projects", json={"name": "x", "task": "detect", "schema": {}})
    assert r.status_code == 422


def test_members_and_roles(login: Any, make_user: Any) -> None:
    owner, other = make_user(), make_user()
    c = login(owner)
    pid = c.post("/api/projects", json=_classify()).json()["id"]
    c_other = login(other)
    assert c_other.get(f"/api/projects/{pid}").status_code == 404
    r = c.post(f"/api/projects/{pid}/members", json={"email": other.email, "role": "viewer"})
    assert r.status_code == 201
    assert c_other.get(f"/api/projects/{pid}").json()["role"] == "viewer"
    assert c_other.patch(f"/api/projects/{pid}", json={"name": "hijack"}).status_code == 403
    r = c.patch(f"/api/projects/{pid}/members/{other.id}", json={"role": "owner"})
    assert r.json()["role"] == "owner"
    assert c_other.patch(f"/api/projects/{pid}", json={"name": "renamed"}).status_code == 200
    members = c.get(f"/api/projects/{pid}/members").json()
    assert {m["email"] for m in members["data"]} == {owner.email, other.email}
    # the last owner cannot leave
    c.delete(f"/api/projects/{pid}/members/{other.id}")
    last = c.delete(f"/api/projects/{pid}/members/{owner.id}")
    assert last.status_code == 409


def test_schema_change_cannot_orphan_labels(
    login: Any, make_user: Any, make_project: Any, db: Any
) -> None:
    from loupe.db.models import Item
    from loupe.services.labels.core import LabelValue, set_label

    owner = make_user()
    project = make_project(owner)
    item = Item(
        project_id=project.id, sha256="a" * 64, uri="/x.png", filename="x.png", format="png"
    )
    db.add(item)
    db.flush()
    set_label(db, project, item.id, LabelValue(kind="class", label="monocyte"), user_id=owner.id)
    db.commit()
    c = login(owner)
    r = c.patch(
        f"/api/projects/{project.id}",
        json={"schema": {"classes": [{"name": "neutrophil"}, {"name": "lymphocyte"}]}},
    )
    assert r.status_code == 409
    assert "monocyte" in r.json()["detail"]["message"]


def test_cases_crud_and_finish(login: Any, make_user: Any, make_project: Any) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    r = c.post(f"/api/projects/{project.id}/cases", json={"name": "S-3602"})
    assert r.status_code == 201
    cid = r.json()["id"]
    assert c.post(f"/api/projects/{project.id}/cases", json={"name": "S-3602"}).status_code == 409
    fin = c.patch(f"/api/projects/{project.id}/cases/{cid}", json={"status": "finished"})
    assert fin.json()["status"] == "finished" and fin.json()["finished_at"]
    assert c.get(f"/api/projects/{project.id}/cases").json()["count"] == 1
