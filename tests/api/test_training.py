"""Training as a job on real images: versions, drafts, triage, rollback, accept.

Jobs run inline here (LOUPE_JOBS_IMMEDIATE); tests/integration runs a real worker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, func, select

from loupe.db.models import AnnotationEvent, Item, ModelVersion, Prediction, Project

FAST = ["classic", "mobilenet_v2"]
SOURCES = {"neutrophil": "immunohistochemistry", "lymphocyte": "retina", "monocyte": "gravel"}


def _tiles(root: Path, per_class: int = 8) -> dict[str, list[Path]]:
    from skimage import data

    out: dict[str, list[Path]] = {}
    for cls, name in SOURCES.items():
        image = np.asarray(getattr(data, name)())
        if name == "retina":
            image = image[300:1100, 300:1100]
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(per_class):
            r, c = divmod(k, 4)
            tile = image[r * 96 : r * 96 + 96, c * 96 : c * 96 + 96]
            path = folder / f"{cls}_{k:02d}.png"
            Image.fromarray(np.ascontiguousarray(tile)).save(path)
            paths.append(path)
        out[cls] = paths
    return out


@pytest.fixture
def trained_setup(
    settings: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> Any:
    from loupe.services.items.ingest import ingest_paths

    def _make(members: list[str] = FAST, task: str = "classify", **project_settings: Any) -> Any:
        owner = make_user()
        project = make_project(
            owner, task=task, settings_={"ensemble": members, **project_settings}
        )
        tiles = _tiles(tmp_path / f"tiles{project.id}")
        report = ingest_paths(settings, project.id, [tmp_path / f"tiles{project.id}"])
        assert report.imported == 24, report.to_json()
        c = login(owner)
        items = c.get(f"/api/projects/{project.id}/items?limit=100").json()["data"]
        truth = {i["id"]: Path(i["filename"]).name.split("_")[0] for i in items}
        return owner, project, c, truth, tiles

    return _make


def _label(c: Any, pid: int, truth: dict[int, str], per_class: int) -> list[int]:
    done: dict[str, int] = {}
    chosen = []
    for item_id, cls in sorted(truth.items()):
        if done.get(cls, 0) < per_class:
            r = c.put(
                f"/api/projects/{pid}/items/{item_id}/label", json={"kind": "class", "label": cls}
            )
            assert r.status_code == 200, r.text
            done[cls] = done.get(cls, 0) + 1
            chosen.append(item_id)
    return chosen


def test_train_drafts_every_item_and_never_touches_labels(trained_setup: Any, db: Any) -> None:
    owner, project, c, truth, _ = trained_setup()
    labelled = _label(c, project.id, truth, per_class=3)
    events_before = db.scalar(select(func.count(AnnotationEvent.id)))
    db.rollback()
    r = c.post(f"/api/projects/{project.id}/train", json={})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    assert job["progress"] == 1.0
    versions = c.get(f"/api/projects/{project.id}/versions").json()
    assert versions["count"] == 1
    v = versions["data"][0]
    assert v["status"] == "ready" and v["active"] and v["members"] == FAST
    ens = v["metrics"]["ensemble"]
    assert 0.0 <= ens["accuracy"] <= 1.0 and "confusion" in ens and "ece" in ens
    assert set(v["metrics"]["members"]) == set(FAST)
    assert v["calibration"]["temperatures"]
    items = c.get(f"/api/projects/{project.id}/items?limit=100").json()["data"]
    assert all(i["draft"] is not None for i in items)
    unlabelled = [i for i in items if i["id"] not in labelled]
    correct = sum(i["draft"]["label"] == truth[i["id"]] for i in unlabelled)
    assert correct / len(unlabelled) >= 0.8, [(i["draft"], truth[i["id"]]) for i in unlabelled]
    for i in items:
        if i["draft"]["flagged"]:
            assert i["draft"]["flag_reason"] in ("disagreement", "low_confidence", "ambiguous_set")
    # human labels untouched; training wrote no label events
    assert db.scalar(select(func.count(AnnotationEvent.id))) == events_before
    for i in items:
        if i["id"] in labelled:
            assert i["annotation"]["origin"] == "human"
            assert i["annotation"]["label"] == truth[i["id"]]
    preds = c.get(f"/api/projects/{project.id}/items/{items[0]['id']}/predictions").json()
    assert preds["data"][0]["members"].keys() == set(FAST)
    assert abs(sum(preds["data"][0]["output"]["probs"].values()) - 1.0) < 1e-3


def test_training_needs_labels_and_one_at_a_time(trained_setup: Any, db: Any) -> None:
    from loupe.db.models import Job

    _, project, c, truth, _ = trained_setup()
    r = c.post(f"/api/projects/{project.id}/train", json={})
    assert r.status_code == 422 and "at least" in r.json()["detail"]["message"]
    _label(c, project.id, truth, per_class=2)
    db.add(Job(project_id=project.id, kind="train", status="running"))
    db.commit()
    busy = c.post(f"/api/projects/{project.id}/train", json={})
    assert busy.status_code == 409 and busy.json()["detail"]["code"] == "busy"


def test_failed_training_keeps_the_previous_model(trained_setup: Any, db: Any) -> None:
    _, project, c, truth, _ = trained_setup()
    _label(c, project.id, truth, per_class=2)
    assert c.post(f"/api/projects/{project.id}/train", json={}).status_code == 202
    good = db.scalar(select(ModelVersion.id).where(ModelVersion.active.is_(True)))
    # a backbone that went missing since (the API rejects unknown ones up front)
    row = db.get(Project, project.id)
    row.settings = {**row.settings, "ensemble": ["classic", "no-such-backbone"]}
    db.commit()
    job = c.post(f"/api/projects/{project.id}/train", json={}).json()
    job = c.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "failed" and "no-such-backbone" in job["error"]
    versions = c.get(f"/api/projects/{project.id}/versions").json()["data"]
    assert [v["status"] for v in versions] == ["failed", "ready"]
    assert [v["id"] for v in versions if v["active"]] == [good]
    item = c.get(f"/api/projects/{project.id}/items?limit=1").json()["data"][0]
    assert item["draft"]["model_version_id"] == good


def test_rollback_and_accept_drafts(trained_setup: Any, db: Any) -> None:
    _, project, c, truth, _ = trained_setup()
    labelled = _label(c, project.id, truth, per_class=2)
    c.post(f"/api/projects/{project.id}/train", json={})
    labelled += _label(c, project.id, truth, per_class=4)
    c.post(f"/api/projects/{project.id}/train", json={})
    versions = c.get(f"/api/projects/{project.id}/versions").json()["data"]
    assert [v["number"] for v in versions] == [2, 1] and versions[0]["active"]
    v1 = versions[1]["id"]
    r = c.post(f"/api/projects/{project.id}/versions/{v1}/activate")
    assert r.status_code == 200 and r.json()["active"]
    item = c.get(f"/api/projects/{project.id}/items?status=unlabelled&limit=3").json()["data"]
    assert all(i["draft"]["model_version_id"] == v1 for i in item)
    one = item[0]
    r = c.post(f"/api/projects/{project.id}/items/{one['id']}/accept", json={"version": 0})
    assert r.status_code == 200, r.text
    assert r.json()["annotation"]["label"] == one["draft"]["label"]
    assert r.json()["annotation"]["origin"] == "model_accepted"
    assert r.json()["annotation"]["model_version_id"] == v1
    hist = c.get(f"/api/projects/{project.id}/items/{one['id']}/history").json()["data"]
    assert hist[-1]["source"] == "accept"
    batch = c.post(
        f"/api/projects/{project.id}/predictions/accept",
        json={"item_ids": [i["id"] for i in item[1:]]},
    )
    assert batch.json()["applied"] == [i["id"] for i in item[1:]]


def test_unreadable_item_is_left_out_and_the_job_finishes(trained_setup: Any, db: Any) -> None:
    _, project, c, truth, tiles = trained_setup()
    _label(c, project.id, truth, per_class=2)
    victim = tiles["monocyte"][-1]
    victim.write_bytes(victim.read_bytes()[:60])  # truncated after import
    job = c.post(f"/api/projects/{project.id}/train", json={}).json()
    job = c.get(f"/api/jobs/{job['id']}").json()
    assert job["status"] == "done" and job["result"]["unreadable"] == 1
    bad = db.scalar(select(Item).where(Item.filename == victim.name))
    assert bad.status == "error" and bad.error
    assert db.scalar(select(Prediction.id).where(Prediction.item_id == bad.id)) is None
    errors = c.get(f"/api/projects/{project.id}/items?status=error").json()
    assert [i["id"] for i in errors["data"]] == [bad.id]


def test_automatic_retrain_after_n_labels(trained_setup: Any, settings: Any) -> None:
    from loupe.jobs.registry import PERIODIC
    from loupe.services.training.train import autotrain_sweep

    assert PERIODIC["autotrain"].fn is autotrain_sweep  # every worker runs it
    _, project, c, truth, _ = trained_setup(retrain_every=6)
    done: dict[str, int] = {}
    for item_id, cls in sorted(truth.items()):
        if done.get(cls, 0) < 2:
            r = c.put(
                f"/api/projects/{project.id}/items/{item_id}/label",
                json={"kind": "class", "label": cls},
            )
            assert r.status_code == 200
            done[cls] = done.get(cls, 0) + 1
            # the label path never trains; the worker's sweep does once six are in
            started = autotrain_sweep(settings)
            assert bool(started) == (sum(done.values()) == 6), (done, started)
    assert autotrain_sweep(settings) == []  # nothing new since: no second training
    jobs = c.get(f"/api/projects/{project.id}/jobs?kind=train").json()
    assert jobs["count"] == 1 and jobs["data"][0]["status"] == "done"
    assert c.get(f"/api/projects/{project.id}/versions").json()["count"] == 1


def test_score_project_drafts_are_snapped_to_the_step(trained_setup: Any, settings: Any) -> None:
    _, project, c, truth, _ = trained_setup(task="score")
    grade = {"neutrophil": 0, "lymphocyte": 2, "monocyte": 4}
    n = 0
    for item_id, cls in sorted(truth.items()):
        if n >= 12:
            break
        r = c.put(
            f"/api/projects/{project.id}/items/{item_id}/label",
            json={"kind": "scores", "scores": {"fibrosis": grade[cls], "atrophy": 1}},
        )
        assert r.status_code == 200
        n += 1
    r = c.post(f"/api/projects/{project.id}/train", json={})
    assert c.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"
    v = c.get(f"/api/projects/{project.id}/versions").json()["data"][0]
    assert "fibrosis" in v["metrics"]["ensemble"]["per_metric"]
    items = c.get(f"/api/projects/{project.id}/items?limit=100").json()["data"]
    for i in items:
        scores = i["draft"]["output"]["scores"]
        assert set(scores) == {"fibrosis", "atrophy"}
        assert all(0 <= s <= 4 and float(s).is_integer() for s in scores.values())


def test_finetune_mode_compares_with_the_frozen_version_on_the_same_folds(
    trained_setup: Any, settings: Any
) -> None:
    _, project, c, truth, _ = trained_setup(members=["mobilenet_v2", "classic"], finetune_epochs=1)
    _label(c, project.id, truth, per_class=3)
    r = c.post(f"/api/projects/{project.id}/train", json={"mode": "finetune"})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    v = c.get(f"/api/projects/{project.id}/versions").json()["data"][0]
    assert v["kind"] == "finetune" and v["active"]
    ft = v["metrics"]["finetune"]
    assert ft["member"] == "mobilenet_v2" and ft["device"] in ("cpu", "cuda")
    assert ft["compare"]["same_folds"] is True
    assert "accuracy" in v["metrics"]["frozen_ensemble"]
    items = c.get(f"/api/projects/{project.id}/items?limit=100").json()["data"]
    assert all(i["draft"]["model_version_id"] == v["id"] for i in items)
    assert all(i["draft"]["label"] in SOURCES for i in items)
    pred = c.get(f"/api/projects/{project.id}/items/{items[0]['id']}/predictions").json()
    assert "mobilenet_v2-finetuned" in pred["data"][0]["members"]
    _redrafts_match(settings, c, project.id, v["id"], items[::3])


def _redrafts_match(settings: Any, c: Any, pid: int, vid: int, items: list[dict[str, Any]]) -> None:
    """Forget the drafts of ``items``; the stored version's ``predict`` job writes them
    again as the training did (heads, calibration, fine-tuned weights, novelty)."""
    from loupe.db.session import session_scope

    ids = [i["id"] for i in items]
    before = {i["id"]: i["draft"] for i in items}
    with session_scope(settings.db_url) as db:
        db.execute(
            delete(Prediction).where(
                Prediction.model_version_id == vid, Prediction.item_id.in_(ids)
            )
        )
    r = c.post(f"/api/projects/{pid}/predict", json={})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done" and job["result"]["drafted"] == len(ids), job
    for item_id in ids:
        after = c.get(f"/api/projects/{pid}/items/{item_id}").json()["draft"]
        assert after["model_version_id"] == vid
        assert after["label"] == before[item_id]["label"]
        assert after["flagged"] == before[item_id]["flagged"]
        assert after["confidence"] == pytest.approx(before[item_id]["confidence"], abs=1e-3)


def test_the_project_setting_chooses_the_head(
    trained_setup: Any, login: Any, settings: Any
) -> None:
    _, project, c, truth, _ = trained_setup(class_head="mlp", review_budget=0.25)
    bad = c.patch(f"/api/projects/{project.id}", json={"settings": {"class_head": "forest"}})
    assert bad.status_code == 422 and "mlp" in bad.text and "softmax" in bad.text
    bad = c.patch(f"/api/projects/{project.id}", json={"settings": {"review_budget": 1.5}})
    assert bad.status_code == 422
    _label(c, project.id, truth, per_class=3)
    r = c.post(f"/api/projects/{project.id}/train", json={})
    assert c.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"
    version = c.get(f"/api/projects/{project.id}/versions").json()["data"][0]
    assert version["params"]["class_head"] == "mlp"
    items = c.get(f"/api/projects/{project.id}/items?limit=100").json()["data"]
    flagged = sum(1 for i in items if i["draft"]["flagged"])
    assert flagged <= int(0.25 * len(items))  # the review budget caps the flags
    _redrafts_match(
        settings, c, project.id, version["id"], [i for i in items if not i["draft"]["flagged"]]
    )


def test_novel_drafts_are_never_accepted_in_bulk(trained_setup: Any, db: Any) -> None:
    _, project, c, truth, _ = trained_setup()
    _label(c, project.id, truth, per_class=2)
    c.post(f"/api/projects/{project.id}/train", json={})
    items = c.get(f"/api/projects/{project.id}/items?status=unlabelled&limit=3").json()["data"]
    odd, plain = items[0]["id"], items[1]["id"]
    pred = db.scalar(select(Prediction).where(Prediction.item_id == odd))
    pred.output = {**pred.output, "novel": True}
    pred.flagged, pred.flag_reason = True, "novel"
    db.commit()
    r = c.post(f"/api/projects/{project.id}/predictions/accept", json={"item_ids": [odd, plain]})
    assert r.status_code == 200, r.text
    assert r.json()["applied"] == [plain]
    assert [(x["item_id"], x["code"]) for x in r.json()["conflicts"]] == [(odd, "novel")]
    # a person looking at the one item may still accept its draft
    r = c.post(f"/api/projects/{project.id}/items/{odd}/accept", json={"version": 0})
    assert r.status_code == 200 and r.json()["annotation"]["origin"] == "model_accepted"
