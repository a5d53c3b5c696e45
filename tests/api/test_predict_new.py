"""Drafting items a stored model version has not seen (the chunked ``predict`` job).

Real images (skimage texture tiles), real 'classic' features, jobs run inline
(LOUPE_JOBS_IMMEDIATE: every chunk job too). The central check: a stored version
drafts an item exactly as its training did (same heads, calibration, novelty
reference and centre), so deleting some drafts and predicting them again gives
the same rows back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, select
from tests.api.test_queues import SOURCES, _tiles

from loupe.db.models import Annotation, Item, Job, Prediction
from loupe.db.session import session_scope


def _drafts(settings: Any, version_id: int) -> dict[int, Prediction]:
    with session_scope(settings.db_url, write=False) as db:
        rows = {
            p.item_id: p
            for p in db.scalars(select(Prediction).where(Prediction.model_version_id == version_id))
        }
        db.expunge_all()
    return rows


def _forget(settings: Any, version_id: int, item_ids: list[int]) -> None:
    with session_scope(settings.db_url) as db:
        db.execute(
            delete(Prediction).where(
                Prediction.model_version_id == version_id, Prediction.item_id.in_(item_ids)
            )
        )


def _children(settings: Any, parent_id: int) -> list[Job]:
    with session_scope(settings.db_url, write=False) as db:
        parent = db.get(Job, parent_id)
        assert parent is not None
        ids = (parent.params or {}).get("_chunks", {}).get("children", [])
        rows = list(db.scalars(select(Job).where(Job.id.in_(ids)).order_by(Job.id)))
        db.expunge_all()
    return rows


def _same_draft(a: Prediction, b: Prediction, keys: tuple[str, ...]) -> None:
    assert a.label == b.label
    assert a.flagged == b.flagged and a.flag_reason == b.flag_reason
    assert a.uncertainty == pytest.approx(b.uncertainty, abs=1e-4)
    if a.confidence is not None or b.confidence is not None:
        assert a.confidence == pytest.approx(b.confidence, abs=1e-4)
    for key in keys:
        left, right = a.output.get(key), b.output.get(key)
        if isinstance(left, dict):
            assert set(left) == set(right)
            for name in left:
                assert np.allclose(left[name], right[name], atol=2e-4), (key, name)
        elif isinstance(left, float):
            assert left == pytest.approx(right, abs=2e-3), key
        else:
            assert left == right, key
    assert set(a.members) == set(b.members)


@pytest.fixture
def classify_project(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> dict[str, Any]:
    from tests.api.texture_helpers import trained_texture_project

    return trained_texture_project(settings, make_user, make_project, login, tmp_path)


def test_a_stored_version_drafts_as_its_training_did(
    settings: Any, classify_project: dict[str, Any]
) -> None:
    c, pid = classify_project["c"], classify_project["pid"]
    vid = classify_project["job"]["result"]["model_version_id"]
    before = _drafts(settings, vid)
    assert len(before) == 26
    labelled = {classify_project["by_name"][f"{cls}_00.png"] for cls in SOURCES}
    forgotten = sorted(before)[::2]  # 13 items, labelled and unlabelled
    assert labelled & set(forgotten) or True
    _forget(settings, vid, forgotten)

    r = c.post(f"/api/projects/{pid}/predict", json={"chunk_size": 5})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    assert job["kind"] == "predict" and job["progress"] == 1.0
    assert job["result"]["drafted"] == 13 and job["result"]["chunks"] == 3
    children = _children(settings, job["id"])
    assert [ch.kind for ch in children] == ["predict.chunk"] * 3
    assert all(ch.status == "done" for ch in children)

    after = _drafts(settings, vid)
    assert set(after) == set(before)
    for item_id in forgotten:
        _same_draft(after[item_id], before[item_id], ("probs", "novel", "novelty"))
        assert after[item_id].id != before[item_id].id  # written again, not kept
    # nothing left to draft: the same request drafts nothing
    r = c.post(f"/api/projects/{pid}/predict", json={})
    assert r.status_code == 202, r.text
    again = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert again["status"] == "done" and again["result"]["drafted"] == 0, again


def test_new_items_are_drafted_and_a_persons_label_is_kept(
    settings: Any, classify_project: dict[str, Any], tmp_path: Path
) -> None:
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.training.predict import draft_sweep

    c, pid = classify_project["c"], classify_project["pid"]
    vid = classify_project["job"]["result"]["model_version_id"]
    assert draft_sweep(settings) == []  # every item has its draft
    new = tmp_path / "new"
    _tiles(new, per_class=6, start=8)
    rng = np.random.default_rng(0)
    noise = new / "noise"
    noise.mkdir()
    Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(noise / "n.png")
    report = ingest_paths(settings, pid, [new])
    assert report.imported > 0, report.to_json()
    with session_scope(settings.db_url, write=False) as db:
        fresh = set(
            db.scalars(select(Item.id).where(Item.project_id == pid, Item.status != "error"))
        ) - set(_drafts(settings, vid))
        noise_id = db.scalar(
            select(Item.id).where(Item.project_id == pid, Item.filename.like("%n.png"))
        )
    assert len(fresh) == 19 and noise_id in fresh

    started = draft_sweep(settings)  # what every worker runs every few seconds
    assert len(started) == 1
    job = c.get(f"/api/jobs/{started[0]}").json()
    assert job["status"] == "done" and job["result"]["drafted"] == len(fresh), job
    drafts = _drafts(settings, vid)
    assert fresh <= set(drafts)
    names = set(SOURCES)
    assert all(drafts[i].label in names for i in fresh)
    # a texture tile of a labelled class is drafted as that class far more often than not
    by_file = {}
    with session_scope(settings.db_url, write=False) as db:
        for item_id, uri in db.execute(select(Item.id, Item.uri).where(Item.id.in_(fresh))):
            by_file[item_id] = Path(uri).parent.name
    tiles = [i for i in fresh if by_file[i] in names]
    right = sum(drafts[i].label == by_file[i] for i in tiles)
    assert right >= 0.7 * len(tiles), (right, len(tiles))
    # random noise is unlike every labelled tile: novel, flagged, never bulk-accepted
    assert drafts[noise_id].output["novel"] is True
    assert drafts[noise_id].flagged and drafts[noise_id].flag_reason == "novel"
    r = c.post(f"/api/projects/{pid}/predictions/accept", json={"item_ids": [noise_id]})
    assert r.status_code == 200, r.text
    assert [x["code"] for x in r.json()["conflicts"]] == ["novel"]

    # a person's label is never touched by a draft
    labelled_id = classify_project["by_name"]["neutrophil_00.png"]
    _forget(settings, vid, [labelled_id])
    assert len(draft_sweep(settings)) == 1
    with session_scope(settings.db_url, write=False) as db:
        ann = db.scalar(select(Annotation).where(Annotation.item_id == labelled_id))
        assert ann is not None and ann.label == "neutrophil" and ann.origin == "human"
    assert labelled_id in _drafts(settings, vid)
    assert draft_sweep(settings) == []


def test_drafting_off_unreadable_items_and_no_version(
    settings: Any,
    classify_project: dict[str, Any],
    make_user: Any,
    make_project: Any,
    login: Any,
    tmp_path: Path,
) -> None:
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.training.predict import draft_sweep

    c, pid = classify_project["c"], classify_project["pid"]
    vid = classify_project["job"]["result"]["model_version_id"]
    new = tmp_path / "more"
    _tiles(new, per_class=2, start=8)
    assert ingest_paths(settings, pid, [new]).imported == 6
    r = c.patch(f"/api/projects/{pid}", json={"settings": {"draft_new_items": False}})
    assert r.status_code == 200, r.text
    assert draft_sweep(settings) == []
    # one new file breaks on disk after ingest: reported, the others drafted
    with session_scope(settings.db_url, write=False) as db:
        undrafted = sorted(
            set(db.scalars(select(Item.id).where(Item.project_id == pid)))
            - set(_drafts(settings, vid))
        )
        broken_uri = db.scalar(select(Item.uri).where(Item.id == undrafted[0]))
    Path(str(broken_uri)).write_bytes(b"not an image any more")
    r = c.post(f"/api/projects/{pid}/predict", json={"chunk_size": 2})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    assert job["result"]["unreadable"] == 1 and job["result"]["drafted"] == 5, job
    with session_scope(settings.db_url, write=False) as db:
        item = db.get(Item, undrafted[0])
        assert item is not None and item.status == "error"
    assert set(undrafted[1:]) <= set(_drafts(settings, vid))

    # a project without a model: 409 with the reason
    other = make_project(make_user())
    r = c.post(f"/api/projects/{other.id}/predict", json={})
    assert r.status_code in (403, 404)  # not a member
    owner = login(make_user())
    mine = owner.post(
        "/api/projects",
        json={
            "name": "empty",
            "task": "classify",
            "schema": {"classes": [{"name": "a"}, {"name": "b"}]},
        },
    )
    assert mine.status_code == 201, mine.text
    r = owner.post(f"/api/projects/{mine.json()['id']}/predict", json={})
    assert r.status_code == 409 and "train one first" in r.text, r.text


def test_a_score_version_drafts_as_its_training_did(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    from tests.api.texture_helpers import texture_project, train_inline

    p = texture_project(settings, make_user, make_project, login, tmp_path, task="score")
    c, pid, by_name = p["c"], p["pid"], p["by_name"]
    level = {cls: k for k, cls in enumerate(SOURCES)}
    for cls in SOURCES:
        for k in range(4):
            r = c.put(
                f"/api/projects/{pid}/items/{by_name[f'{cls}_{k:02d}.png']}/label",
                json={
                    "kind": "scores",
                    "scores": {"fibrosis": level[cls], "atrophy": 2 - level[cls]},
                },
            )
            assert r.status_code == 200, r.text
    vid = train_inline(c, pid)["result"]["model_version_id"]
    before = _drafts(settings, vid)
    forgotten = sorted(before)[1::2]
    _forget(settings, vid, forgotten)
    r = c.post(f"/api/projects/{pid}/predict", json={"chunk_size": 4})
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done" and job["result"]["drafted"] == len(forgotten), job
    after = _drafts(settings, vid)
    for item_id in forgotten:
        _same_draft(after[item_id], before[item_id], ("scores", "raw", "novel", "interval"))
