"""Active-learning queues with leases, fallbacks and similar items (issue 12, 1-2).

A real project: skimage tiles of three textures, 'classic' features (no torch),
trained inline (LOUPE_JOBS_IMMEDIATE).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select, update

from loupe.db.models import ItemLease

SOURCES = {"neutrophil": "immunohistochemistry", "lymphocyte": "retina", "monocyte": "gravel"}
STRATEGIES = {"uncertain", "diverse", "hybrid", "oddities", "band", "flagged", "random", "mistakes"}


def _tiles(root: Path, per_class: int = 8, *, start: int = 0) -> dict[str, Path]:
    """Tiles per class, plus near-duplicates of two of them (``dup_*``); ``start``
    cuts tiles further down each image (8: rows 2-3, none of the default tiles)."""
    from skimage import data

    dups: dict[str, Path] = {}
    for cls, name in SOURCES.items():
        image = np.asarray(getattr(data, name)())
        if name == "retina":
            image = image[300:1100, 300:1100]
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(start, start + per_class):
            r, c = divmod(k, 4)
            tile = np.ascontiguousarray(image[r * 96 : r * 96 + 96, c * 96 : c * 96 + 96])
            path = folder / f"{cls}_{k:02d}.png"
            Image.fromarray(tile).save(path)
            if k == 5 and cls != "monocyte":
                twin = np.clip(tile.astype(np.int16) + 3, 0, 255).astype(np.uint8)
                dup = folder / f"{cls}_dup.png"
                Image.fromarray(twin).save(dup)
                dups[path.name] = dup
    return dups


@pytest.fixture
def project_setup(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> Any:
    from loupe.services.items.ingest import ingest_paths

    def _make(*, train: bool = True, **project_settings: Any) -> dict[str, Any]:
        owner = make_user()
        project = make_project(owner, settings_={"ensemble": ["classic"], **project_settings})
        root = tmp_path / f"tiles{project.id}"
        _tiles(root)
        report = ingest_paths(settings, project.id, [root])
        assert report.imported == 26, report.to_json()
        c = login(owner)
        pid = project.id
        items = c.get(f"/api/projects/{pid}/items?limit=100").json()["data"]
        by_name = {Path(i["filename"]).name: i["id"] for i in items}
        annotators = []
        for _ in range(2):
            user = make_user()
            r = c.post(
                f"/api/projects/{pid}/members", json={"email": user.email, "role": "annotator"}
            )
            assert r.status_code in (200, 201), r.text
            annotators.append(login(user))
        labelled: list[int] = []
        if train:
            for cls in SOURCES:
                for k in range(3):
                    item_id = by_name[f"{cls}_{k:02d}.png"]
                    r = c.put(
                        f"/api/projects/{pid}/items/{item_id}/label",
                        json={"kind": "class", "label": cls},
                    )
                    assert r.status_code == 200, r.text
                    labelled.append(item_id)
            r = c.post(f"/api/projects/{pid}/train", json={})
            assert r.status_code == 202, r.text
            assert c.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"
        return {
            "pid": pid,
            "owner": c,
            "annotators": annotators,
            "by_name": by_name,
            "labelled": labelled,
            "all": set(by_name.values()),
        }

    return _make


def _queue(c: Any, pid: int, **params: Any) -> Any:
    return c.post(f"/api/projects/{pid}/queue", params=params)


def test_info_lists_the_strategies(client: Any) -> None:
    r = client.get("/api/info")
    assert r.status_code == 200, r.text
    assert STRATEGIES <= set(r.json()["registries"]["strategies"])


def test_every_strategy_runs_on_a_trained_project(project_setup: Any) -> None:
    s = project_setup()
    c, pid, labelled = s["owner"], s["pid"], set(s["labelled"])
    for strategy in sorted(STRATEGIES - {"mistakes"}):
        extra = {"band_class": "neutrophil", "band_lo": 0.0, "band_hi": 1.0}
        r = _queue(c, pid, strategy=strategy, n=5, **(extra if strategy == "band" else {}))
        assert r.status_code == 200, (strategy, r.text)
        body = r.json()
        assert body["strategy_used"] == strategy and body["fallback_reason"] is None, body
        ids = [i["id"] for i in body["items"]]
        assert not set(ids) & labelled, strategy
        assert len(ids) == len(set(ids)) and (len(ids) == 5 or strategy == "flagged"), body
        assert body["model_version_id"] is not None
    r = _queue(c, pid, strategy="mistakes", n=20)
    assert r.status_code == 200, r.text
    assert {i["id"] for i in r.json()["items"]} <= labelled  # only labelled items
    r = _queue(c, pid, strategy="uncertain", measure="sideways")
    assert r.status_code == 422 and "measure" in r.json()["detail"]["message"]
    r = _queue(c, pid, strategy="band")  # three classes: a band needs its class
    assert r.status_code == 422 and "band_class" in r.json()["detail"]["message"]


def test_unknown_strategy_is_422_listing_the_known_ones(project_setup: Any) -> None:
    s = project_setup(train=False)
    r = _queue(s["owner"], s["pid"], strategy="clairvoyant")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "clairvoyant" in detail["message"]
    assert STRATEGIES <= set(detail["known"])


def test_no_model_falls_back_to_diverse_and_says_so(project_setup: Any, settings: Any) -> None:
    from loupe.features.store import FeatureStore

    s = project_setup(train=False)
    c, pid = s["owner"], s["pid"]
    # no features yet either: random
    body = _queue(c, pid, strategy="uncertain", n=4).json()
    assert body["strategy_used"] == "random" and "no model" in body["fallback_reason"]
    # features (as a training computes them) but no model: diverse
    ids = sorted(s["all"])
    rng = np.random.default_rng(0)
    store = FeatureStore(settings.features_dir, pid, "classic", 16)
    store.add(ids, rng.normal(size=(len(ids), 16)).astype(np.float32))
    for strategy in ("uncertain", "band", "flagged", "hybrid"):
        body = _queue(c, pid, strategy=strategy, n=4).json()
        assert body["strategy_used"] == "diverse", body
        assert strategy in body["fallback_reason"] and "no model" in body["fallback_reason"]
        assert len(body["items"]) == 4 and body["backbone"] == "classic"
    body = _queue(c, pid, strategy="oddities", n=4).json()  # needs no model
    assert body["strategy_used"] == "oddities" and body["fallback_reason"] is None


def test_two_annotators_are_never_served_the_same_item(project_setup: Any) -> None:
    s = project_setup()
    pid, (a, b) = s["pid"], s["annotators"]
    unlabelled = s["all"] - set(s["labelled"])  # 17 items
    first = {i["id"] for i in _queue(a, pid, strategy="uncertain", n=10).json()["items"]}
    second = {i["id"] for i in _queue(b, pid, strategy="uncertain", n=10).json()["items"]}
    assert len(first) == 10 and len(second) == 7
    assert not first & second and first | second == unlabelled
    # asking again keeps your own items yours (the lease is renewed, not lost)
    again = {i["id"] for i in _queue(a, pid, strategy="uncertain", n=10).json()["items"]}
    assert again == first
    # releasing hands them back
    r = a.post(f"/api/projects/{pid}/queue/release", json={})
    assert r.status_code == 200 and r.json()["released"] == 10
    third = {i["id"] for i in _queue(b, pid, strategy="random", n=20).json()["items"]}
    assert third == unlabelled


def test_an_expired_lease_returns_the_item_to_the_queue(project_setup: Any, db: Any) -> None:
    s = project_setup()
    pid, (a, b) = s["pid"], s["annotators"]
    taken = {i["id"] for i in _queue(a, pid, strategy="diverse", n=50).json()["items"]}
    assert taken == s["all"] - set(s["labelled"])
    assert _queue(b, pid, strategy="diverse", n=50).json()["items"] == []
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    db.execute(update(ItemLease).where(ItemLease.project_id == pid).values(expires_at=past))
    db.commit()
    back = {i["id"] for i in _queue(b, pid, strategy="diverse", n=50).json()["items"]}
    assert back == taken


def test_similar_finds_near_duplicates_first(project_setup: Any) -> None:
    s = project_setup()
    c, pid, by_name = s["owner"], s["pid"], s["by_name"]
    a, a_dup = by_name["neutrophil_05.png"], by_name["neutrophil_dup.png"]
    b, b_dup = by_name["lymphocyte_05.png"], by_name["lymphocyte_dup.png"]
    r = c.get(f"/api/projects/{pid}/items/{a}/similar", params={"k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["backbone"] == "classic" and body["query"] == [a]
    assert body["items"][0]["id"] == a_dup and body["items"][0]["similarity"] > 0.99
    assert a not in [i["id"] for i in body["items"]] and len(body["items"]) == 5
    r = c.post(f"/api/projects/{pid}/similar", json={"item_ids": [a, b], "k": 2, "combine": "max"})
    assert r.status_code == 200, r.text
    assert {i["id"] for i in r.json()["items"]} == {a_dup, b_dup}
    r = c.post(f"/api/projects/{pid}/similar", json={"item_ids": [a, b], "k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert c.get(f"/api/projects/{pid}/items/999999/similar").status_code == 404


def test_similar_without_features_is_a_clear_conflict(project_setup: Any) -> None:
    s = project_setup(train=False)
    item = next(iter(s["all"]))
    r = s["owner"].get(f"/api/projects/{s['pid']}/items/{item}/similar")
    assert r.status_code == 409 and "train" in r.json()["detail"]["message"]


def test_concurrent_requests_never_lease_the_same_item(project_setup: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    s = project_setup()
    pid, (a, b) = s["pid"], s["annotators"]

    def ask(c: Any) -> set[int]:
        r = _queue(c, pid, strategy="uncertain", n=12)
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"]}

    for _ in range(3):
        a.post(f"/api/projects/{pid}/queue/release", json={})
        b.post(f"/api/projects/{pid}/queue/release", json={})
        with ThreadPoolExecutor(2) as pool:
            got_a, got_b = pool.map(ask, [a, b])
        assert not got_a & got_b
        assert len(got_a) + len(got_b) == len(s["all"]) - len(s["labelled"])


@pytest.mark.parametrize(
    "db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_an_item_labelled_while_the_queue_ranks_is_not_served(
    project_setup: Any, settings: Any
) -> None:
    """PostgreSQL runs requests side by side (SQLite serialises them): between the read
    of the arrays and the leasing, another annotator labels a pick and lets its lease go
    (their next queue request). The slow request must not serve that item."""
    from sqlalchemy import delete

    from loupe.db.models import Annotation
    from loupe.db.session import session_scope
    from loupe.select import registry
    from loupe.select.simple import Random

    s = project_setup()
    pid, (a, _b) = s["pid"], s["annotators"]
    unlabelled = sorted(s["all"] - set(s["labelled"]))
    target = unlabelled[0]

    class LabelledMeanwhile(Random):
        """Random, but first someone else labels ``target`` and commits (a real write in a
        connection of its own, as another web process would)."""

        name = "test_labelled_meanwhile"

        def __call__(self, req: Any) -> Any:
            with session_scope(settings.db_url) as db:
                db.add(
                    Annotation(
                        project_id=pid,
                        item_id=target,
                        kind="class",
                        label="neutrophil",
                        origin="human",
                        version=1,
                    )
                )
                db.execute(delete(ItemLease).where(ItemLease.item_id == target))
            return super().__call__(req)

    registry.register(LabelledMeanwhile())
    try:
        r = _queue(a, pid, strategy="test_labelled_meanwhile", n=50)
    finally:
        registry.unregister("test_labelled_meanwhile")
    assert r.status_code == 200, r.text
    served = {i["id"] for i in r.json()["items"]}
    assert target not in served
    assert served == set(unlabelled) - {target}  # the rest is still served
    with session_scope(settings.db_url, write=False) as db:
        leased = set(db.scalars(select(ItemLease.item_id).where(ItemLease.project_id == pid)))
    assert target not in leased  # and its lease given back at once
