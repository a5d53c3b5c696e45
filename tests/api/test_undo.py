"""Undo and redo on the server: one request is one step, recorded in the audit
history, whatever the client's filter shows (issue 10, item 3)."""

from __future__ import annotations

from typing import Any


def _label(c: Any, pid: int, item_id: int) -> dict[str, Any] | None:
    ann: dict[str, Any] | None = c.get(f"/api/projects/{pid}/items/{item_id}").json()["annotation"]
    return ann


def test_a_batch_is_one_step_undone_and_redone_by_item_id(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    pid = project.id
    c = login(owner)
    items = [make_item(project) for _ in range(4)]
    ids = [i.id for i in items]
    first = c.put(f"/api/projects/{pid}/items/{ids[0]}/label", json={"kind": "unsure"})
    assert first.json()["change_id"]
    batch = c.post(
        f"/api/projects/{pid}/labels/batch",
        json={"item_ids": ids[:3], "kind": "class", "label": "monocyte"},
    ).json()
    assert batch["applied"] == ids[:3] and len(batch["change_id"]) == 32
    # the batch's items are hidden by a 'monocyte' filter after... undo needs no filter
    undone = c.post(f"/api/projects/{pid}/undo")
    assert undone.status_code == 200, undone.text
    body = undone.json()
    assert body["action"] == "undo" and body["what"] == "batch"
    assert body["reverted_change_id"] == batch["change_id"]
    assert sorted(body["applied"]) == ids[:3] and body["conflicts"] == []
    assert _label(c, pid, ids[0])["kind"] == "unsure"  # back to what it was
    assert _label(c, pid, ids[1]) is None and _label(c, pid, ids[2]) is None
    hist = c.get(f"/api/projects/{pid}/items/{ids[1]}/history").json()["data"]
    assert [e["source"] for e in hist] == ["batch", "undo"]
    assert hist[0]["change_id"] == batch["change_id"]
    assert hist[1]["reverts"] == batch["change_id"] and hist[1]["change_id"] == body["change_id"]

    redone = c.post(f"/api/projects/{pid}/redo").json()
    assert redone["action"] == "redo" and redone["what"] == "batch"
    assert sorted(redone["applied"]) == ids[:3]
    assert all(_label(c, pid, i)["label"] == "monocyte" for i in ids[:3])
    assert c.post(f"/api/projects/{pid}/redo").status_code == 409  # nothing left to redo

    # undo steps back one change at a time: the redo, then the single 'unsure'
    assert c.post(f"/api/projects/{pid}/undo").json()["what"] == "batch"
    single = c.post(f"/api/projects/{pid}/undo").json()
    assert single["what"] == "api" and single["applied"] == [ids[0]]
    assert _label(c, pid, ids[0]) is None
    nothing = c.post(f"/api/projects/{pid}/undo")
    assert nothing.status_code == 409 and "nothing to undo" in nothing.json()["detail"]["message"]


def test_undo_keeps_what_someone_else_changed_since(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner, helper = make_user(), make_user()
    project = make_project(owner)
    pid = project.id
    c = login(owner)
    c.post(f"/api/projects/{pid}/members", json={"email": helper.email, "role": "annotator"})
    h = login(helper)
    ids = [make_item(project).id for _ in range(2)]
    c.post(f"/api/projects/{pid}/labels/batch", json={"item_ids": ids, "kind": "skip"})
    r = h.put(
        f"/api/projects/{pid}/items/{ids[1]}/label", json={"kind": "class", "label": "monocyte"}
    )
    assert r.status_code == 200
    assert h.post(f"/api/projects/{pid}/undo").json()["applied"] == [ids[1]]  # their own
    h.put(f"/api/projects/{pid}/items/{ids[1]}/label", json={"kind": "class", "label": "monocyte"})
    body = c.post(f"/api/projects/{pid}/undo").json()
    assert body["applied"] == [ids[0]]
    assert [x["item_id"] for x in body["conflicts"]] == [ids[1]]
    assert body["conflicts"][0]["code"] == "stale_version"
    assert _label(c, pid, ids[0]) is None
    assert _label(c, pid, ids[1])["label"] == "monocyte"  # the helper's label is kept


def test_a_new_change_empties_the_redo_stack_and_undo_names_a_change(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    pid = project.id
    c = login(owner)
    ids = [make_item(project).id for _ in range(2)]
    a = c.put(f"/api/projects/{pid}/items/{ids[0]}/label", json={"kind": "unsure"}).json()
    b = c.put(f"/api/projects/{pid}/items/{ids[1]}/label", json={"kind": "unsure"}).json()
    # undo an older change by id; the newer one stays
    r = c.post(f"/api/projects/{pid}/undo", json={"change_id": a["change_id"]}).json()
    assert r["applied"] == [ids[0]] and _label(c, pid, ids[1]) is not None
    again = c.post(f"/api/projects/{pid}/undo", json={"change_id": a["change_id"]})
    assert again.status_code == 409  # already undone
    c.put(f"/api/projects/{pid}/items/{ids[0]}/label", json={"kind": "skip"})
    assert c.post(f"/api/projects/{pid}/redo").status_code == 409
    assert b["change_id"] != a["change_id"]
    bad = c.post(f"/api/projects/{pid}/undo", json={"change_id": "not-an-id"})
    assert bad.status_code == 422
