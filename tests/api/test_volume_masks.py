"""3-D volume API: image and mask round trips (RAS and LAS), 422/409, the audit event,
interactive mode, the memory budget.

Real data: nilearn's MNI152 2009a T1 template and its grey/white-matter probability
maps (in the nilearn wheel), cropped to small cubes so the tests stay fast.
"""

from __future__ import annotations

import gzip
import importlib.util
import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

SIZE = 20
SCHEMA = {"classes": [{"name": "grey", "value": 1}, {"name": "white", "value": 2}]}


def mni_folder() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn (test data: MNI152 template) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def mni_crop(
    folder: Path, name: str, *, offset: int, size: int = SIZE, las: bool = False
) -> tuple[Path, np.ndarray]:
    """A crop of the MNI T1 written as NIfTI (LAS: first axis flipped, affine to match),
    and its reference labels (x, y, z): 1 grey matter, 2 white matter."""
    data = mni_folder()
    t1 = nib.load(data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm = nib.load(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm = nib.load(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    box = tuple(slice(offset, offset + size) for _ in range(3))
    image: Any = t1.slicer[box]
    labels = np.zeros(image.shape, np.uint8)
    labels[np.asarray(gm.slicer[box].dataobj) > 127] = 1
    labels[np.asarray(wm.slicer[box].dataobj) > 127] = 2
    if las:
        image = image.as_reoriented(np.array([[0, -1], [1, 1], [2, 1]]))
        labels = labels[::-1].copy()
        assert "".join(nib.aff2axcodes(image.affine)) == "LAS"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.nii.gz"
    nib.save(image, path)
    return path, labels


def decode(body: bytes) -> Any:
    return nib.Nifti1Image.from_bytes(gzip.decompress(body))


def mask_body(labels_xyz: np.ndarray, like: Any, *, affine: np.ndarray | None = None) -> bytes:
    """A mask as NiiVue's saveImage(isSaveDrawing) makes it: the image header, uint8 data."""
    header = like.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(labels_xyz.astype(np.uint8), like.affine, header=header)
    if affine is not None:
        image.set_sform(affine, code=1)
        image.set_qform(affine, code=1)
    return gzip.compress(image.to_bytes())


@pytest.fixture
def volume_project(settings: Any, make_user: Any, make_project: Any, tmp_path: Path) -> Any:
    """An owner, a volume project and a RAS and an LAS MNI crop ingested as items."""
    from loupe.services.items.ingest import ingest_paths

    owner = make_user()
    project = make_project(
        owner, task="volume", schema=SCHEMA, settings_={"retrain_min_corrections": 2}
    )
    ras, ras_labels = mni_crop(tmp_path / "vols", "ras", offset=80)
    las, las_labels = mni_crop(tmp_path / "vols", "las", offset=80, las=True)
    report = ingest_paths(settings, project.id, [ras, las])
    assert report.failed == [] and len(report.items) == 2, report.failed
    return {
        "owner": owner,
        "project": project,
        "items": dict(zip(["ras", "las"], report.items, strict=True)),
        "paths": {"ras": ras, "las": las},
        "labels": {"ras": ras_labels, "las": las_labels},
    }


def base(project: Any) -> str:
    return f"/api/projects/{project.id}/volume"


@pytest.mark.parametrize("orientation", ["ras", "las"])
def test_image_and_mask_round_trip_is_voxel_exact(
    volume_project: Any, login: Any, orientation: str
) -> None:
    c = login(volume_project["owner"])
    project, item = volume_project["project"], volume_project["items"][orientation]
    original: Any = nib.load(volume_project["paths"][orientation])

    r = c.get(f"{base(project)}/items/{item}/image.nii.gz")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/gzip"
    assert "max-age" in r.headers["cache-control"]
    served = decode(r.content)
    assert served.shape == original.shape
    assert np.allclose(served.affine, original.affine, atol=1e-5)
    assert "".join(nib.aff2axcodes(served.affine)) == orientation.upper()
    assert served.get_data_dtype() in (np.uint8, np.int16)
    assert np.array_equal(np.asanyarray(served.dataobj), np.asanyarray(original.dataobj))

    labels = volume_project["labels"][orientation]
    r = c.put(
        f"{base(project)}/items/{item}/mask",
        content=mask_body(labels, served),
        headers={"Content-Type": "application/gzip"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_id"] == item and body["version"] == 1
    assert body["voxels_changed"] == int(np.count_nonzero(labels))
    assert body["dice_vs_model"] is None and body["model_version_id"] is None

    r = c.get(f"{base(project)}/items/{item}/mask.nii.gz", params={"source": "human"})
    assert r.status_code == 200
    back = decode(r.content)
    assert back.get_data_dtype() == np.uint8
    assert np.allclose(back.affine, served.affine, atol=1e-5)
    assert np.array_equal(np.asanyarray(back.dataobj), labels)  # voxel for voxel


def test_mask_mismatch_is_422_and_stale_version_409(volume_project: Any, login: Any) -> None:
    c = login(volume_project["owner"])
    project, item = volume_project["project"], volume_project["items"]["ras"]
    served = decode(c.get(f"{base(project)}/items/{item}/image.nii.gz").content)
    url = f"{base(project)}/items/{item}/mask"
    labels = volume_project["labels"]["ras"]

    wrong_shape = nib.Nifti1Image(labels[:-1].copy(), served.affine)
    r = c.put(url, content=gzip.compress(wrong_shape.to_bytes()))
    assert r.status_code == 422 and r.json()["detail"]["code"] == "invalid"
    assert "shape" in r.json()["detail"]["message"]

    moved = served.affine.copy()
    moved[:3, 3] += 2.0
    r = c.put(url, content=mask_body(labels, served, affine=moved))
    assert r.status_code == 422 and "affine" in r.json()["detail"]["message"]

    bad_value = labels.copy()
    bad_value[0, 0, 0] = 9
    r = c.put(url, content=mask_body(bad_value, served))
    assert r.status_code == 422 and "9" in r.json()["detail"]["message"]

    assert c.put(url, content=b"not a nifti").status_code == 422
    assert c.put(url, params={"version": 0}, content=mask_body(labels, served)).status_code == 200
    r = c.put(url, params={"version": 0}, content=mask_body(labels * 0, served))
    assert r.status_code == 409 and r.json()["detail"]["code"] == "stale_version"
    r = c.put(url, params={"version": 1}, content=mask_body(labels * 0, served))
    assert r.status_code == 200 and r.json()["version"] == 2
    assert r.json()["voxels_changed"] == int(np.count_nonzero(labels))
    r = c.get(f"{base(project)}/items/{item}/mask.nii.gz", params={"source": "model"})
    assert r.status_code == 404 and r.json()["detail"]["code"] == "not_found"


def test_correction_of_model_mask_records_dice_and_voxels(
    volume_project: Any, login: Any, db: Any
) -> None:
    from sqlalchemy import select

    from loupe.db.models import AnnotationEvent

    c = login(volume_project["owner"])
    project, items = volume_project["project"], volume_project["items"]
    served = decode(c.get(f"{base(project)}/items/{items['ras']}/image.nii.gz").content)
    labels = volume_project["labels"]["ras"]
    r = c.put(f"{base(project)}/items/{items['ras']}/mask", content=mask_body(labels, served))
    assert r.status_code == 200

    # the voxel segmenter learns from the corrected volume and predicts both items
    r = c.post(f"{base(project)}/predict", json={"segmenter": "voxel"})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    version_id = job["result"]["model_version_id"]

    r = c.get(f"{base(project)}/items/{items['las']}/mask.nii.gz", params={"source": "model"})
    assert r.status_code == 200
    assert r.headers["x-model-version"] == str(version_id)
    model = decode(r.content)
    model_labels = np.asanyarray(model.dataobj)
    las_served = decode(c.get(f"{base(project)}/items/{items['las']}/image.nii.gz").content)
    assert np.allclose(model.affine, las_served.affine, atol=1e-5)

    corrected = model_labels.copy()
    corrected[2:6, 2:6, 2:6] = 2  # the radiologist paints a block of white matter
    changed = int(np.count_nonzero(corrected != model_labels))
    r = c.put(
        f"{base(project)}/items/{items['las']}/mask",
        params={"model_version_id": version_id},
        content=mask_body(corrected, las_served),
    )
    assert r.status_code == 200, r.text
    saved = r.json()
    assert saved["voxels_changed"] == changed > 0
    assert saved["model_version_id"] == version_id
    expected = np.mean(
        [
            2
            * np.sum((model_labels == v) & (corrected == v))
            / (np.sum(model_labels == v) + np.sum(corrected == v))
            for v in (1, 2)
            if np.sum(model_labels == v) + np.sum(corrected == v)
        ]
    )
    assert saved["dice_vs_model"] == pytest.approx(expected)

    event = db.scalars(
        select(AnnotationEvent)
        .where(AnnotationEvent.item_id == items["las"])
        .order_by(AnnotationEvent.id.desc())
    ).first()
    assert event.user_id == volume_project["owner"].id and event.at is not None
    data = event.after["data"]
    assert data["model_version_id"] == version_id
    assert data["voxels_changed"] == changed
    assert data["dice_vs_model"] == pytest.approx(expected)

    dash = c.get(f"{base(project)}/dashboard").json()
    assert {"model_version_id": version_id, "number": 1, "count": 1} in dash["feedback_per_version"]
    assert dash["feedback_per_user"] == [{"user": volume_project["owner"].email, "count": 2}]
    assert [d["dice"] for d in dash["dice_over_time"]] == [pytest.approx(expected)]
    assert dash["corrected_volumes"] == 2 and dash["retrain_min_corrections"] == 2
    assert dash["can_retrain"] is True
    assert [v["active"] for v in dash["versions"]] == [True]


def test_interactive_clicks_give_a_mask_on_the_image_grid(
    volume_project: Any, login: Any, settings: Any
) -> None:
    c = login(volume_project["owner"])
    project, item = volume_project["project"], volume_project["items"]["ras"]
    labels = volume_project["labels"]["ras"]  # (x, y, z)
    features = settings.home / "volumes" / "features"
    assert not features.exists()
    served = decode(c.get(f"{base(project)}/items/{item}/image.nii.gz").content)
    # opening the volume computed its filter bank (the volume_features job)
    (cache,) = features.glob("*.npy")
    assert np.load(cache, mmap_mode="r").shape == (SIZE, SIZE, SIZE, 10)
    jobs = c.get(f"/api/projects/{project.id}/jobs").json()["data"]
    assert any(j["kind"] == "volume_features" and j["status"] == "done" for j in jobs)
    rng = np.random.default_rng(0)
    clicks = []
    for value in (0, 1, 2):
        where = np.argwhere(labels == value)
        for x, y, z in where[rng.choice(len(where), 6, replace=False)]:
            clicks.append({"x": int(x), "y": int(y), "z": int(z), "value": value})
    url = f"{base(project)}/items/{item}/interactive"

    r = c.post(url, json={"clicks": clicks, "full": True})
    assert r.status_code == 200, r.text
    assert float(r.headers["x-refit-ms"]) >= 0
    mask = decode(r.content)
    assert mask.shape == served.shape and mask.get_data_dtype() == np.uint8
    assert np.allclose(mask.affine, served.affine, atol=1e-5)
    predicted = np.asanyarray(mask.dataobj)
    assert set(np.unique(predicted)) <= {0, 1, 2}
    assert np.mean(predicted == labels) > 0.6  # far better than chance on real anatomy

    r = c.post(url, json={"clicks": clicks, "focus": {"axis": "z", "index": 10}})
    focused = np.asanyarray(decode(r.content).dataobj)
    assert focused[:, :, :6].max() == 0 and focused[:, :, 15:].max() == 0
    assert focused[:, :, 10].max() > 0

    one_label = [dict(click, value=1) for click in clicks]
    r = c.post(url, json={"clicks": one_label})
    assert r.status_code == 422 and "two" in r.json()["detail"]["message"]
    r = c.post(url, json={"clicks": [{"x": 99, "y": 0, "z": 0, "value": 1}, *clicks]})
    assert r.status_code == 422 and "outside" in r.json()["detail"]["message"]


def test_volume_over_memory_budget_is_refused(volume_project: Any, login: Any) -> None:
    from loupe.media.budget import DEFAULT_CONCURRENT_BIG_DECODES, set_decode_limits

    c = login(volume_project["owner"])
    project, item = volume_project["project"], volume_project["items"]["ras"]
    set_decode_limits(max_bytes=SIZE**3)  # a quarter of the float32 working copy
    try:
        r = c.get(f"{base(project)}/items/{item}/image.nii.gz")
    finally:
        from loupe.settings import get_settings

        set_decode_limits(
            max_bytes=get_settings().max_decode_bytes, concurrent=DEFAULT_CONCURRENT_BIG_DECODES
        )
    assert r.status_code == 413, r.text
    assert r.json()["detail"]["code"] == "too_large"
    assert (
        "20x20x20" in r.json()["detail"]["message"]
        and "memory budget" in r.json()["detail"]["message"]
    )


def test_viewer_cannot_write_masks(
    volume_project: Any, login: Any, make_user: Any, settings: Any
) -> None:
    from loupe.db.models import Project
    from loupe.db.session import session_scope
    from loupe.services.projects.core import add_member

    viewer = make_user()
    project = volume_project["project"]
    with session_scope(settings.db_url) as s:
        add_member(s, s.get(Project, project.id), email=viewer.email, role="viewer")
    c = login(viewer)
    item = volume_project["items"]["ras"]
    assert c.get(f"{base(project)}/items/{item}/image.nii.gz").status_code == 200
    r = c.put(f"{base(project)}/items/{item}/mask", content=io.BytesIO(b"x").getvalue())
    assert r.status_code == 403
