"""Case PDF reports, read back as a user would: text with pypdf, pages rendered
to PNG with pdftoppm (the chart and the thumbnails must be on them), the
history page and downloads with their access rules."""

from __future__ import annotations

import datetime as dt
import io
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pypdf import PdfReader
from sqlalchemy import update

from loupe.db.models import ModelVersion, Prediction

FAST = ["classic", "mobilenet_v2"]
SOURCES = {"neutrophil": "immunohistochemistry", "lymphocyte": "retina", "monocyte": "gravel"}
COLORS = {"neutrophil": (0xE6, 0x9F, 0x00), "lymphocyte": (0x56, 0xB4, 0xE9)}
COLORS["monocyte"] = (0x00, 0x9E, 0x73)


def _tiles(root: Path, per_class: int = 8) -> None:
    from skimage import data

    for cls, name in SOURCES.items():
        image = np.asarray(getattr(data, name)())
        if name == "retina":
            image = image[300:1100, 300:1100]
        for k in range(per_class):
            r, c = divmod(k, 4)
            tile = image[r * 96 : r * 96 + 96, c * 96 : c * 96 + 96]
            Image.fromarray(np.ascontiguousarray(tile)).save(root / f"{cls}_{k:02d}.png")


def pdf_text(content: bytes) -> str:
    """The text of every page, whitespace collapsed (table cells wrap lines)."""
    pages = PdfReader(io.BytesIO(content)).pages
    return " ".join(" ".join((page.extract_text() or "").split()) for page in pages)


def render(content: bytes, tmp_path: Path, dpi: int = 60) -> list[np.ndarray]:
    """Every page as an RGB array, rendered by poppler's pdftoppm."""
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm (poppler-utils) is not installed")
    src = tmp_path / "render.pdf"
    src.write_bytes(content)
    subprocess.run(
        ["pdftoppm", "-png", "-r", str(dpi), str(src), str(tmp_path / "page")], check=True
    )
    pages = sorted(tmp_path.glob("page*.png"))
    return [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in pages]


def near(page: np.ndarray, rgb: tuple[int, int, int], tol: int = 24) -> int:
    """How many pixels are within ``tol`` of a colour (per channel)."""
    return int((np.abs(page - np.array(rgb)).max(axis=2) <= tol).sum())


def photo_pixels(page: np.ndarray) -> int:
    """Pixels that belong to photographs: neither paper white nor flat ink, and with
    texture (they differ from their right-hand neighbour)."""
    grey = page.mean(axis=2)
    textured = np.abs(np.diff(grey, axis=1)) > 6
    not_paper = grey[:, 1:] < 235
    return int((textured & not_paper).sum())


def test_report_of_a_finished_case_shows_everything_and_regenerates_identically(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    from loupe.services.items.ingest import ingest_paths

    owner = make_user("curator@lab.org")
    project = make_project(owner, name="Marrow ward", settings_={"ensemble": FAST})
    folder = tmp_path / "tiles"
    folder.mkdir()
    _tiles(folder)
    assert ingest_paths(settings, project.id, [folder], case_name="S-3602").imported == 24
    c = login(owner)
    pid = project.id
    case = c.get(f"/api/projects/{pid}/cases").json()["data"][0]
    items = c.get(f"/api/projects/{pid}/items?limit=100").json()["data"]
    truth = {i["id"]: i["filename"].split("_")[0] for i in items}
    done: dict[str, int] = {}
    for item_id, cls in sorted(truth.items()):
        if done.get(cls, 0) < 3:
            body = {"kind": "class", "label": cls}
            r = c.put(f"/api/projects/{pid}/items/{item_id}/label", json=body)
            assert r.status_code == 200
            done[cls] = done.get(cls, 0) + 1
    job = c.post(f"/api/projects/{pid}/train", json={}).json()
    assert c.get(f"/api/jobs/{job['id']}").json()["status"] == "done"
    open_items = c.get(f"/api/projects/{pid}/items?status=unlabelled&limit=100").json()["data"]
    accept, correct = open_items[0], open_items[1]
    # make sure the review list has something in it whatever the model did
    db.execute(
        update(Prediction)
        .where(Prediction.item_id.in_([accept["id"], correct["id"]]))
        .values(flagged=True, flag_reason="low_confidence")
    )
    db.commit()
    r = c.post(f"/api/projects/{pid}/items/{accept['id']}/accept", json={})
    assert r.status_code == 200, r.text
    drafted = correct["draft"]["label"]
    other = next(cls for cls in SOURCES if cls != drafted)
    body = {"kind": "class", "label": other}
    c.put(f"/api/projects/{pid}/items/{correct['id']}/label", json=body)
    r = c.patch(f"/api/projects/{pid}/cases/{case['id']}", json={"status": "finished"})
    assert r.status_code == 200 and r.json()["status"] == "finished"
    finished_at = dt.datetime.fromisoformat(r.json()["finished_at"])

    r = c.post(f"/api/projects/{pid}/cases/{case['id']}/report")
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["case_name"] == "S-3602" and first["project_name"] == "Marrow ward"
    pdf = c.get(first["download_url"])
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    text = pdf_text(pdf.content)
    for expected in (
        "Case report: S-3602",
        "Marrow ward",
        "curator@lab.org",
        "Finished",
        "version 1 (classic + mobilenet_v2)",
        "cross-validated accuracy",
        "Counts per class",
        "neutrophil",
        "lymphocyte",
        "monocyte",
        "Flagged items",
        "accepted draft",
        f"corrected: {drafted} → {other}",
        "Thumbnails per class",
        "Page 1 of",
    ):
        assert expected in text, f"{expected!r} missing from the PDF text:\n{text}"
    reader = PdfReader(io.BytesIO(pdf.content))
    assert reader.metadata is not None and reader.metadata.creation_date is not None
    assert abs(reader.metadata.creation_date - finished_at) < dt.timedelta(seconds=1)
    n_pages = len(reader.pages)
    assert f"Page {n_pages} of {n_pages}" in text
    images = sum(len(p.images) for p in reader.pages)
    assert images >= 1 + 11  # the chart and one thumbnail per labelled item
    pages = render(pdf.content, tmp_path)
    counts = {cls: sum(near(p, rgb) for p in pages) for cls, rgb in COLORS.items()}
    assert all(n > 150 for n in counts.values()), counts  # the bars of the chart
    assert max(photo_pixels(p) for p in pages) > 20_000  # the thumbnail grid

    time.sleep(1.1)  # an open-ended clock would now give another date
    again = c.post(f"/api/projects/{pid}/cases/{case['id']}/report").json()
    assert again["id"] != first["id"] and again["sha256"] == first["sha256"]
    assert c.get(again["download_url"]).content == pdf.content
    listed = c.get(f"/api/projects/{pid}/reports").json()
    assert listed["count"] == 2 and [x["id"] for x in listed["data"]] == [again["id"], first["id"]]


def test_empty_case_reports_say_so_instead_of_failing(
    settings: Any, make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    pid = project.id
    with_items = c.post(f"/api/projects/{pid}/cases", json={"name": "C-unlabelled"}).json()
    for _ in range(3):
        make_item(project, case_id=with_items["id"])
    empty = c.post(f"/api/projects/{pid}/cases", json={"name": "C-empty"}).json()
    for case, what in ((with_items, "3 items but no labels"), (empty, "no items")):
        r = c.post(f"/api/projects/{pid}/cases/{case['id']}/report")
        assert r.status_code == 201, r.text
        text = pdf_text(c.get(r.json()["download_url"]).content)
        assert "no labels" in text and what in text, text
        assert "Open: this is a draft report" in text and "no model trained" in text
    assert c.post(f"/api/projects/{pid}/cases/999999/report").status_code == 404


def test_score_report_has_summaries_and_a_distribution_chart(
    settings: Any, db: Any, make_user: Any, make_project: Any, make_item: Any, login: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    from loupe.services.labels.core import LabelValue, set_label
    from loupe.services.projects.core import get_or_create_case

    owner = make_user()
    project = make_project(owner, task="score")
    case = get_or_create_case(db, project.id, "Biopsy 12")
    db.commit()
    items = [make_item(project, case_id=case.id) for _ in range(6)]
    grades = [0, 1, 1, 2, 3, 4]
    for item, g in zip(items, grades, strict=True):
        set_label(
            db, project, item.id, LabelValue(kind="scores", scores={"fibrosis": g, "atrophy": 1}),
            user_id=owner.id,
        )  # fmt: skip
    version = ModelVersion(project_id=project.id, number=1, status="ready", active=True,
                           members=["classic"])  # fmt: skip
    db.add(version)
    db.flush()
    for item, g in zip(items, grades, strict=True):
        off = item is items[3]
        db.add(
            Prediction(
                project_id=project.id, item_id=item.id, model_version_id=version.id,
                output={"scores": {"fibrosis": g + 1 if off else g, "atrophy": 1}},
                flagged=off, flag_reason="disagreement" if off else None,
            )
        )  # fmt: skip
    db.commit()
    c = login(owner)
    r = c.post(f"/api/projects/{project.id}/cases/{case.id}/report")
    assert r.status_code == 201, r.text
    content = c.get(r.json()["download_url"]).content
    text = pdf_text(content)
    for expected in ("Score summary", "fibrosis", "atrophy", "1.83", "Model mean",
                     "corrected: atrophy 1, fibrosis 3 → atrophy 1, fibrosis 2",
                     "fibrosis = 0", "fibrosis = 4"):  # fmt: skip
        assert expected in text, f"{expected!r} missing:\n{text}"
    assert sum(len(p.images) for p in PdfReader(io.BytesIO(content)).pages) >= 1 + 6
    pages = render(content, tmp_path)
    assert sum(near(p, (0x4E, 0x79, 0xA7)) for p in pages) > 150  # histogram bars


def test_history_lists_my_reports_and_downloads_need_membership(
    app: Any, db: Any, make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    from loupe.services.projects.core import add_member, remove_member

    owner, annotator, viewer, stranger = make_user(), make_user(), make_user(), make_user()
    project = make_project(owner)
    other = make_project(owner)
    for user, role in ((annotator, "annotator"), (viewer, "viewer")):
        add_member(db, project, email=user.email, role=role)
    db.commit()
    case = login(owner).post(f"/api/projects/{project.id}/cases", json={"name": "K1"}).json()
    make_item(project, case_id=case["id"])
    other_case = login(owner).post(f"/api/projects/{other.id}/cases", json={"name": "K2"}).json()
    ac, vc, sc, oc = login(annotator), login(viewer), login(stranger), login(owner)
    mine = ac.post(f"/api/projects/{project.id}/cases/{case['id']}/report").json()
    oc.post(f"/api/projects/{other.id}/cases/{other_case['id']}/report")
    assert vc.post(f"/api/projects/{project.id}/cases/{case['id']}/report").status_code == 403
    history = ac.get("/api/reports/mine").json()
    assert history["count"] == 1 and history["data"][0]["id"] == mine["id"]
    assert history["data"][0]["download_url"] == f"/api/reports/{mine['id']}/download"
    assert oc.get("/api/reports/mine").json()["count"] == 1  # the owner's own only
    assert vc.get("/api/reports/mine").json()["count"] == 0
    assert vc.get(f"/api/projects/{project.id}/reports").json()["count"] == 1
    assert vc.get(mine["download_url"]).status_code == 200  # members may read it
    assert sc.get(mine["download_url"]).status_code == 404
    assert sc.get(f"/api/projects/{project.id}/reports").status_code == 404
    assert sc.get("/api/reports/999999/download").status_code == 404
    # a user who left the project no longer sees the report, even their own
    db.rollback()
    remove_member(db, db.get(type(project), project.id), annotator.id)
    db.commit()
    assert ac.get("/api/reports/mine").json()["count"] == 0
    assert ac.get(mine["download_url"]).status_code == 404
    with TestClient(app) as anonymous:
        assert anonymous.get("/api/reports/mine").status_code == 401
        assert anonymous.get(mine["download_url"]).status_code == 401
