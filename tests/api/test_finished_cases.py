"""Finished cases refuse label changes until reopened (reports then go stale); items
move between cases; the case pattern is set from the CLI."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from typer.testing import CliRunner

from loupe.cli import app as cli_app


def _project_with_case(make_user: Any, make_project: Any, make_item: Any, login: Any) -> Any:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    case = c.post(f"/api/projects/{project.id}/cases", json={"name": "S-1"}).json()
    items = [make_item(project, case_id=case["id"]) for _ in range(3)]
    return c, project.id, case, [i.id for i in items]


def test_finished_case_refuses_labels_until_reopened_and_its_report_goes_stale(
    make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    c, pid, case, ids = _project_with_case(make_user, make_project, make_item, login)
    label = {"kind": "class", "label": "neutrophil"}
    assert c.put(f"/api/projects/{pid}/items/{ids[0]}/label", json=label).status_code == 200
    r = c.patch(f"/api/projects/{pid}/cases/{case['id']}", json={"status": "finished"})
    assert r.json()["status"] == "finished"
    report = c.post(f"/api/projects/{pid}/cases/{case['id']}/report").json()
    assert report["stale"] is False

    for attempt in (
        c.put(f"/api/projects/{pid}/items/{ids[1]}/label", json=label),
        c.delete(f"/api/projects/{pid}/items/{ids[0]}/label"),
        c.post(f"/api/projects/{pid}/labels/batch", json={"item_ids": ids, **label}),
        c.post(f"/api/projects/{pid}/items/{ids[1]}/accept", json={}),
        c.post(f"/api/projects/{pid}/predictions/accept", json={"item_ids": ids}),
    ):
        assert attempt.status_code == 409, attempt.text
        detail = attempt.json()["detail"]
        assert detail["code"] == "case_finished"
        assert detail["case_ids"] == [case["id"]] and detail["project_id"] == pid
        assert "'S-1' is finished; reopen it" in detail["message"]
    item = c.get(f"/api/projects/{pid}/items/{ids[1]}").json()
    assert item["annotation"] is None  # nothing was written

    r = c.post(f"/api/projects/{pid}/cases/{case['id']}/reopen")
    assert r.status_code == 200 and r.json()["status"] == "open"
    assert r.json()["finished_at"] is None
    reports = c.get(f"/api/projects/{pid}/reports", params={"case_id": case["id"]}).json()
    assert [(x["id"], x["stale"]) for x in reports["data"]] == [(report["id"], True)]

    r = c.put(f"/api/projects/{pid}/items/{ids[1]}/label", json=label)
    assert r.status_code == 200 and r.json()["annotation"]["label"] == "neutrophil"

    c.patch(f"/api/projects/{pid}/cases/{case['id']}", json={"status": "finished"})
    fresh = c.post(f"/api/projects/{pid}/cases/{case['id']}/report").json()
    assert fresh["stale"] is False and fresh["params"]["labelled"] == 2
    latest = c.get(f"/api/projects/{pid}/reports", params={"case_id": case["id"], "limit": 1})
    assert latest.json()["data"][0]["stale"] is False


def test_items_without_case_and_open_cases_label_freely(
    make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    item = make_item(project)
    r = c.put(
        f"/api/projects/{project.id}/items/{item.id}/label",
        json={"kind": "class", "label": "monocyte"},
    )
    assert r.status_code == 200


def test_move_items_between_cases(
    make_user: Any, make_project: Any, make_item: Any, login: Any, caplog: Any
) -> None:
    c, pid, case, ids = _project_with_case(make_user, make_project, make_item, login)
    with caplog.at_level(logging.INFO, logger="loupe.audit"):
        r = c.post(
            f"/api/projects/{pid}/cases/move", json={"item_ids": ids[:2], "case_name": "S-2"}
        )
    assert r.status_code == 200, r.text
    s2 = r.json()
    assert s2["name"] == "S-2" and s2["items"] == 2
    moves = [m for m in caplog.messages if m.startswith("move item=")]
    assert len(moves) == 2 and f"to_case={s2['id']}" in moves[0]
    cases = {x["name"]: x["items"] for x in c.get(f"/api/projects/{pid}/cases").json()["data"]}
    assert cases == {"S-1": 1, "S-2": 2}

    back = c.post(
        f"/api/projects/{pid}/cases/move", json={"item_ids": [ids[0]], "case_id": case["id"]}
    )
    assert back.json()["items"] == 2
    assert c.get(f"/api/projects/{pid}/items/{ids[0]}").json()["case_id"] == case["id"]

    # a finished case neither gives nor takes items until reopened
    c.patch(f"/api/projects/{pid}/cases/{s2['id']}", json={"status": "finished"})
    for body in (
        {"item_ids": [ids[2]], "case_id": s2["id"]},
        {"item_ids": [ids[1]], "case_name": "S-3"},
    ):
        r = c.post(f"/api/projects/{pid}/cases/move", json=body)
        assert r.status_code == 409 and r.json()["detail"]["code"] == "case_finished"

    bad = [
        ({"item_ids": [ids[0]]}, 422),
        ({"item_ids": [ids[0]], "case_id": case["id"], "case_name": "x"}, 422),
        ({"item_ids": [999_999], "case_id": case["id"]}, 404),
        ({"item_ids": [ids[0]], "case_id": 999_999}, 404),
        ({"item_ids": [], "case_id": case["id"]}, 422),
    ]
    for body, status in bad:
        assert c.post(f"/api/projects/{pid}/cases/move", json=body).status_code == status, body


def test_viewer_cannot_move_items(
    make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    c, pid, case, ids = _project_with_case(make_user, make_project, make_item, login)
    viewer = make_user()
    c.post(f"/api/projects/{pid}/members", json={"email": viewer.email, "role": "viewer"})
    r = login(viewer).post(
        f"/api/projects/{pid}/cases/move", json={"item_ids": ids, "case_name": "X"}
    )
    assert r.status_code == 403


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"(?P<case>\w+)_(\1)", "backreferences"),
        (r"^(?P<slide>\w+)", "(?P<case>...)"),
        (r"(?P<case>(a|aa){1000}){1000}", "not a supported regular expression"),
    ],
)
def test_project_settings_reject_bad_case_patterns(
    make_user: Any, make_project: Any, login: Any, pattern: str, message: str
) -> None:
    owner = make_user()
    project = make_project(owner)
    r = login(owner).patch(
        f"/api/projects/{project.id}", json={"settings": {"case_pattern": pattern}}
    )
    assert r.status_code == 422 and message in r.json()["detail"]["message"]


def test_cli_project_set(settings: Any, make_user: Any, make_project: Any) -> None:
    from loupe.db.models import Project
    from loupe.db.session import session_scope

    project = make_project(make_user(), name="Kidney")
    runner = CliRunner()
    r = runner.invoke(
        cli_app,
        [
            "project",
            "set",
            "Kidney",
            "--case-pattern",
            r"^(?P<case>S-\d+)_",
            "--retrain-every",
            "5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == {"case_pattern": r"^(?P<case>S-\d+)_", "retrain_every": 5}
    with session_scope(settings.db_url, write=False) as db:
        stored = dict(db.get(Project, project.id).settings)
    assert stored["case_pattern"] == r"^(?P<case>S-\d+)_" and stored["retrain_every"] == 5

    bad = runner.invoke(cli_app, ["project", "set", str(project.id), "--case-pattern", r"(a)\1"])
    assert bad.exit_code == 1 and "backreferences" in bad.output
    assert runner.invoke(cli_app, ["project", "set", "Kidney"]).exit_code == 2
    r = runner.invoke(cli_app, ["project", "set", "Kidney", "--case-pattern", ""])
    assert r.exit_code == 0 and json.loads(r.output) == {"case_pattern": None}
