"""3-D retraining: the threshold (409), a tiny UNet training with val Dice per class,
activation only when better, admin activation (rollback), a failed training.

Real data: crops of nilearn's MNI152 T1 with grey/white-matter masks (see
test_volume_masks); the UNet is tiny (2 levels, 16^3 patches, 2 iterations) so a
training takes seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("monai")

from tests.api.test_volume_masks import SCHEMA, decode, mask_body, mni_crop  # noqa: E402

TINY = {
    "patch": 16,
    "epochs": 2,
    "iterations": 2,
    "batch_size": 1,
    "channels": [4, 8],
    "roi": 16,
    "seed": 3,
}


@pytest.fixture
def corrected_project(settings: Any, make_user: Any, make_project: Any, tmp_path: Path) -> Any:
    """A volume project with three MNI crops ingested; no masks yet."""
    from loupe.services.items.ingest import ingest_paths

    owner = make_user()
    project = make_project(
        owner, task="volume", schema=SCHEMA, settings_={"retrain_min_corrections": 3}
    )
    crops = [mni_crop(tmp_path / "v", f"c{i}", offset=70 + 10 * i) for i in range(3)]
    report = ingest_paths(settings, project.id, [path for path, _ in crops])
    assert report.failed == [] and len(report.items) == 3
    return owner, project, list(zip(report.items, [labels for _, labels in crops], strict=True))


def _correct(c: Any, project: Any, item: int, labels: Any) -> None:
    base = f"/api/projects/{project.id}/volume/items/{item}"
    served = decode(c.get(f"{base}/image.nii.gz").content)
    assert c.put(f"{base}/mask", content=mask_body(labels, served)).status_code == 200


def test_retrain_threshold_training_and_activation(
    corrected_project: Any, login: Any, make_user: Any
) -> None:
    owner, project, items = corrected_project
    c = login(owner)
    url = f"/api/projects/{project.id}/volume/train"
    _correct(c, project, *items[0])
    r = c.post(url, json=TINY)
    assert r.status_code == 409 and r.json()["detail"]["code"] == "conflict"
    assert "at least 3" in r.json()["detail"]["message"]
    assert "has 1" in r.json()["detail"]["message"]
    for item, labels in items[1:]:
        _correct(c, project, item, labels)

    annotator = make_user()
    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.settings import get_settings

    with session_scope(get_settings().db_url) as s:
        from loupe.services.projects.core import add_member

        add_member(s, s.get(Project, project.id), email=annotator.email, role="annotator")
    assert login(annotator).post(url, json=TINY).status_code == 403  # owners / admins only

    r = c.post(url, json=TINY)
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["kind"] == "volume_train" and job["status"] == "done", job
    assert len(job["result"]["loss"]) == TINY["epochs"]
    # a live validation Dice per epoch (fixed held-out patches), besides the final one
    assert len(job["result"]["epoch_dice"]) == TINY["epochs"]
    assert all(0.0 <= d <= 1.0 for d in job["result"]["epoch_dice"])
    assert set(job["result"]["val_dice"]) == {"grey", "white"}
    assert job["result"]["activated"] is True

    dash = c.get(f"/api/projects/{project.id}/volume/dashboard").json()
    (first,) = dash["versions"]
    assert first["status"] == "ready" and first["active"] is True and first["kind"] == "unet3d"
    assert set(first["metrics"]["val_dice"]) == {"grey", "white"}
    assert all(0.0 <= d <= 1.0 for d in first["metrics"]["val_dice"].values())
    assert dash["job"]["id"] == job["id"]

    # the same training again gives the same Dice: not better, so it stays inactive
    second_job = c.get(f"/api/jobs/{c.post(url, json=TINY).json()['id']}").json()
    assert second_job["status"] == "done" and second_job["result"]["activated"] is False
    dash = c.get(f"/api/projects/{project.id}/volume/dashboard").json()
    assert [(v["number"], v["active"]) for v in dash["versions"]] == [(1, True), (2, False)]

    # an admin activates it anyway, then rolls back
    second_id = dash["versions"][1]["id"]
    activate = f"/api/projects/{project.id}/versions/{{}}/activate"
    assert c.post(activate.format(second_id)).status_code == 200
    assert c.post(activate.format(first["id"])).status_code == 200

    # predictions of the active UNet, served as the model mask
    r = c.post(f"/api/projects/{project.id}/volume/predict", json={"item_ids": [items[0][0]]})
    assert r.status_code == 202
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done" and job["result"]["model_version_id"] == first["id"]
    r = c.get(
        f"/api/projects/{project.id}/volume/items/{items[0][0]}/mask.nii.gz",
        params={"source": "model"},
    )
    assert r.status_code == 200 and r.headers["x-model-version"] == str(first["id"])
    assert decode(r.content).shape == items[0][1].shape

    # a failing training (patch not a multiple of the UNet's stride) keeps the active one
    r = c.post(url, json={**TINY, "patch": 17})
    failed = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert failed["status"] == "failed" and "patch" in failed["error"]
    dash = c.get(f"/api/projects/{project.id}/volume/dashboard").json()
    assert [(v["status"], v["active"]) for v in dash["versions"]] == [
        ("ready", True),
        ("ready", False),
        ("failed", False),
    ]

    # while a training runs, a second one is refused and the button is disabled
    from loupe.db.models import Job

    with session_scope(get_settings().db_url) as s:
        s.add(Job(project_id=project.id, kind="volume_train", status="running", params={}))
    r = c.post(url, json=TINY)
    assert r.status_code == 409 and r.json()["detail"]["code"] == "conflict"
    assert "already" in r.json()["detail"]["message"]
    dash = c.get(f"/api/projects/{project.id}/volume/dashboard").json()
    assert dash["can_retrain"] is False and dash["job"]["status"] == "running"


def test_predict_without_a_model_is_409(corrected_project: Any, login: Any) -> None:
    owner, project, _ = corrected_project
    c = login(owner)
    url = f"/api/projects/{project.id}/volume/predict"
    r = c.post(url, json={"segmenter": "unet3d"})
    assert r.status_code == 409 and "train" in r.json()["detail"]["message"]
    r = c.post(url, json={"segmenter": "voxel"})
    assert r.status_code == 409 and "corrected" in r.json()["detail"]["message"]
    assert c.post(url, json={"segmenter": "nnunet"}).status_code == 409
    assert c.post(url, json={"segmenter": "bogus"}).status_code == 422
