"""CSV and dataset-ZIP exports, read back with the tools a user would use:
pandas for the CSV, zipfile + json for the ZIP; a ZIP re-imported into a new
project exports the same labels again."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sqlalchemy import select, update

from loupe.db.models import Annotation, AnnotationEvent, Case, Item, ModelVersion, Prediction

PATTERN = r"(?P<case>S-\d+)_(?P<stain>[A-Za-z]+)_(?P<serial>\d+)"
SOURCES = {"neutrophil": "immunohistochemistry", "lymphocyte": "retina", "monocyte": "gravel"}


def write_tiles(root: Path, names: dict[str, str]) -> None:
    """Real image tiles (scikit-image sample data) saved under the given file names."""
    from skimage import data

    root.mkdir(parents=True, exist_ok=True)
    for k, (filename, cls) in enumerate(sorted(names.items())):
        image = np.asarray(getattr(data, SOURCES[cls])())
        r, c = divmod(k % 8, 4)
        top, left = 256 + r * 64, 256 + c * 64  # inside the image: no blank corners
        tile = image[top : top + 64, left : left + 64]
        Image.fromarray(np.ascontiguousarray(tile)).save(root / filename)


def build_world(
    settings: Any, db: Any, make_user: Any, make_project: Any, tmp_path: Path
) -> dict[str, Any]:
    """A classify project: 2 cases (one with a non-ASCII name), 9 items with file-name
    metadata, 6 human labels by two users, one unsure, and a model's drafts."""
    from loupe.services.items.ingest import ingest_paths
    from loupe.services.labels.core import LabelValue, set_label

    owner = make_user("owner@lab.org")
    helper = make_user("helper@lab.org")
    project = make_project(owner, name="Hémato study", settings_={"case_pattern": PATTERN})
    names = {}
    truth = {}
    for k in range(9):
        case = "S-01" if k < 5 else "S-02"
        cls = list(SOURCES)[k % 3]
        filename = f"{case}_HE_{k:03d}.png"
        names[filename] = cls
        truth[filename] = cls
    folder = tmp_path / f"tiles-{project.id}"
    write_tiles(folder, names)
    report = ingest_paths(settings, project.id, [folder])
    assert report.imported == 9, report.to_json()
    db.execute(update(Case).where(Case.name == "S-02").values(name="S-02 Müller"))
    db.commit()
    items = {i.filename: i for i in db.scalars(select(Item).where(Item.project_id == project.id))}
    labelled = sorted(items)[:6]
    for n, filename in enumerate(labelled):
        who = owner if n % 2 == 0 else helper
        set_label(
            db,
            project,
            items[filename].id,
            LabelValue(kind="class", label=truth[filename], note="looks clear" if n == 0 else None),
            user_id=who.id,
        )
    unsure = sorted(items)[6]
    set_label(db, project, items[unsure].id, LabelValue(kind="unsure"), user_id=owner.id)
    version = ModelVersion(
        project_id=project.id,
        number=1,
        status="ready",
        active=True,
        members=["classic", "mobilenet_v2"],
        metrics={"ensemble": {"accuracy": 0.9, "ece": 0.05}},
        calibration={"temperatures": {"classic": 1.2}},
        finished_at=dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC),
    )
    db.add(version)
    db.flush()
    for k, filename in enumerate(sorted(items)):
        wrong = k == 1
        drafted = "monocyte" if wrong and truth[filename] != "monocyte" else truth[filename]
        db.add(
            Prediction(
                project_id=project.id,
                item_id=items[filename].id,
                model_version_id=version.id,
                label=drafted,
                confidence=0.55 if wrong else 0.93,
                flagged=wrong,
                flag_reason="low_confidence" if wrong else None,
                output={"probs": {drafted: 0.93}},
            )
        )
    db.commit()
    return {
        "owner": owner,
        "helper": helper,
        "project": project,
        "items": items,
        "truth": truth,
        "labelled": labelled,
        "unsure": unsure,
        "version": version,
    }


def read_csv(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), keep_default_na=False, na_values=[""])


def test_csv_export_opens_in_pandas_with_every_field(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    c = login(w["owner"])
    r = c.get(f"/api/projects/{pid}/export.csv")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="H-mato-study-')
    assert r.content.startswith(b"\xef\xbb\xbfitem_id,filename,sha256,case,")  # BOM for Excel
    df = read_csv(r.content)
    assert list(df.columns[:6]) == [
        "item_id",
        "filename",
        "sha256",
        "case",
        "meta_serial",
        "meta_stain",
    ]
    expected = "label label_kind note labelled_by labelled_at label_origin model_version "
    expected += "draft_label draft_confidence flagged flag_reason"
    assert set(expected.split()) <= set(df.columns)
    assert len(df) == 9 and df["item_id"].is_monotonic_increasing
    by_name = df.set_index("filename")
    for filename in w["labelled"]:
        row = by_name.loc[filename]
        assert row["label"] == w["truth"][filename]
        assert row["label_kind"] == "class" and row["label_origin"] == "human"
        assert row["labelled_by"] in ("owner@lab.org", "helper@lab.org")
    assert by_name.loc[w["unsure"], "label"] == "unsure"
    assert set(by_name["case"]) == {"S-01", "S-02 Müller"}  # UTF-8 survives
    assert set(by_name["meta_stain"]) == {"HE"}
    assert by_name.loc[w["labelled"][0], "note"] == "looks clear"
    labelled_at = pd.to_datetime(df["labelled_at"].dropna(), format="ISO8601", utc=True)
    assert len(labelled_at) == 7 and (labelled_at.dt.year >= 2025).all()
    assert str(df["flagged"].dtype) == "bool" and df["flagged"].sum() == 1
    assert df["draft_confidence"].dtype == float and (df["model_version"] == 1).all()
    unlabelled = df[df["label_kind"].isna()]
    assert len(unlabelled) == 2 and unlabelled["labelled_by"].isna().all()


def test_csv_filters_case_dates_and_labelled_only(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    c = login(w["owner"])
    case_id = db.scalar(select(Case.id).where(Case.project_id == pid, Case.name == "S-01"))
    df = read_csv(c.get(f"/api/projects/{pid}/export.csv?case_id={case_id}").content)
    assert set(df["case"]) == {"S-01"} and len(df) == 5
    df = read_csv(c.get(f"/api/projects/{pid}/export.csv?labelled_only=true").content)
    assert len(df) == 7 and df["label"].notna().all()
    # move two labels into early 2024: a date range keeps the labels inside it only
    old = [w["items"][n].id for n in w["labelled"][:2]]
    db.execute(
        update(Annotation)
        .where(Annotation.item_id.in_(old))
        .values(updated_at=dt.datetime(2024, 1, 15, 12, tzinfo=dt.UTC))
    )
    db.commit()
    df = read_csv(
        c.get(f"/api/projects/{pid}/export.csv?since=2024-01-01&until=2024-01-15").content
    )
    assert sorted(df["item_id"]) == sorted(old)  # 'until' as a date includes that day
    df = read_csv(c.get(f"/api/projects/{pid}/export.csv?since=2024-02-01").content)
    assert len(df) == 5
    bad = c.get(f"/api/projects/{pid}/export.csv?since=yesterday")
    assert bad.status_code == 422 and "ISO date" in bad.json()["detail"]["message"]
    other = c.post(f"/api/projects/{pid}/cases", json={"name": "S-99"}).json()["id"]
    assert c.get(f"/api/projects/{pid}/export.csv?case_id={other}").status_code == 200
    assert c.get(f"/api/projects/{pid}/export.csv?case_id=999999").status_code == 404


def test_empty_project_exports_are_valid_empty_files(
    settings: Any, make_user: Any, make_project: Any, login: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    r = c.get(f"/api/projects/{project.id}/export.csv")
    assert r.status_code == 200
    df = read_csv(r.content)
    assert len(df) == 0 and list(df.columns[:4]) == ["item_id", "filename", "sha256", "case"]
    assert r.content.decode("utf-8-sig").count("\r\n") == 1  # just the header
    r = c.get(f"/api/projects/{project.id}/export.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert sorted(zf.namelist()) == ["classes.json", "labels.csv", "manifest.json"]
        assert len(read_csv(zf.read("labels.csv"))) == 0
        manifest = json.loads(zf.read("manifest.json"))
    assert manifest["counts"]["items"] == 0 and manifest["model"] is None


def test_score_project_csv_has_a_column_per_metric(
    settings: Any, db: Any, make_user: Any, make_project: Any, make_item: Any, login: Any
) -> None:
    from loupe.services.labels.core import LabelValue, set_label

    owner = make_user()
    project = make_project(owner, task="score")
    items = [make_item(project) for _ in range(3)]
    set_label(
        db,
        project,
        items[0].id,
        LabelValue(kind="scores", scores={"fibrosis": 3, "atrophy": 1}),
        user_id=owner.id,
    )
    only = LabelValue(kind="scores", scores={"fibrosis": 0})
    set_label(db, project, items[1].id, only, user_id=owner.id)
    version = ModelVersion(project_id=project.id, number=1, status="ready", active=True)
    db.add(version)
    db.flush()
    db.add(
        Prediction(
            project_id=project.id,
            item_id=items[2].id,
            model_version_id=version.id,
            output={"scores": {"fibrosis": 2.0, "atrophy": 4.0}},
        )
    )
    db.commit()
    df = read_csv(login(owner).get(f"/api/projects/{project.id}/export.csv").content)
    assert {"score_fibrosis", "score_atrophy", "draft_fibrosis", "draft_atrophy"} <= set(df.columns)
    assert "label" not in df.columns
    rows = df.set_index("item_id")
    assert (
        rows.loc[items[0].id, "score_fibrosis"] == 3 and rows.loc[items[0].id, "score_atrophy"] == 1
    )
    assert rows.loc[items[1].id, "score_fibrosis"] == 0 and pd.isna(
        rows.loc[items[1].id, "score_atrophy"]
    )
    assert rows.loc[items[2].id, "draft_atrophy"] == 4 and pd.isna(
        rows.loc[items[2].id, "score_fibrosis"]
    )


def test_dataset_zip_has_labels_schema_manifest_split_and_images(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    c = login(w["owner"])
    r = c.get(f"/api/projects/{pid}/export.zip?include_images=true&split_seed=7&split=0.5,0.5,0")
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        labels = read_csv(zf.read("labels.csv"))
        classes = json.loads(zf.read("classes.json"))
        manifest = json.loads(zf.read("manifest.json"))
        for _, row in labels.iterrows():
            assert row["image"] in names
            with Image.open(io.BytesIO(zf.read(row["image"]))) as im:
                assert im.size == (64, 64)
    assert [c_["name"] for c_ in classes["classes"]] == ["neutrophil", "lymphocyte", "monocyte"]
    for _, row in labels.iterrows():
        folder = row["image"].split("/")[1]
        assert folder == (row["label"] if row["label_kind"] == "class" else "_unlabeled")
    # split by case: a case never straddles train and val
    assert labels.groupby("case")["split"].nunique().max() == 1
    assert set(labels["split"]) <= {"train", "val"}
    assert manifest["format"] == "loupe-dataset" and manifest["loupe_version"]
    assert manifest["split"]["seed"] == 7
    assert manifest["split"]["fractions"] == {"train": 0.5, "val": 0.5, "test": 0.0}
    assert manifest["counts"]["items"] == 9 and manifest["counts"]["labelled"] == 7
    assert manifest["counts"]["by_label"] == {
        "lymphocyte": 2, "monocyte": 2, "neutrophil": 2, "unsure": 1
    }  # fmt: skip
    assert manifest["counts"]["images"] == 9
    model = manifest["model"]
    assert model["version"] == 1 and model["metrics"]["ensemble"]["accuracy"] == 0.9
    assert model["calibration"] == {"temperatures": {"classic": 1.2}}
    hashes = {b["name"]: b["weights_sha256"] for b in model["backbones"]}
    assert hashes["classic"] is None and len(hashes["mobilenet_v2"] or "") == 64
    assert dt.datetime.fromisoformat(manifest["exported_at"]).tzinfo is not None
    # deterministic: the same seed gives the same split, another seed may differ
    again = c.get(f"/api/projects/{pid}/export.zip?split_seed=7&split=0.5,0.5,0")
    with zipfile.ZipFile(io.BytesIO(again.content)) as zf:
        again_labels = read_csv(zf.read("labels.csv"))
        assert not any(n.startswith("images/") for n in zf.namelist())
    assert list(again_labels["split"]) == list(labels["split"])


def test_export_job_writes_a_file_to_download(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    from loupe.services.projects.core import add_member

    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    viewer, stranger = make_user(), make_user()
    add_member(db, w["project"], email=viewer.email, role="viewer")
    db.commit()
    owner = login(w["owner"])
    r = owner.post(f"/api/projects/{pid}/exports", json={"format": "zip", "include_images": True})
    assert r.status_code == 202, r.text
    job = owner.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done" and job["progress"] == 1.0, job
    assert job["result"]["rows"] == 9 and job["result"]["images"] == 9
    vc = login(viewer)
    assert vc.post(f"/api/projects/{pid}/exports", json={}).status_code == 403
    dl = vc.get(f"/api/exports/{job['id']}/download")
    assert dl.status_code == 200 and dl.headers["content-type"] == "application/zip"
    assert job["result"]["filename"] in dl.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(dl.content)) as zf:
        assert len(read_csv(zf.read("labels.csv"))) == 9
        assert sum(n.startswith("images/") for n in zf.namelist()) == 9
    assert login(stranger).get(f"/api/exports/{job['id']}/download").status_code == 404
    csv_job = owner.post(
        f"/api/projects/{pid}/exports", json={"format": "csv", "labelled_only": True}
    ).json()
    dl = owner.get(f"/api/exports/{csv_job['id']}/download")
    assert dl.headers["content-type"].startswith("text/csv") and len(read_csv(dl.content)) == 7
    bad = owner.post(f"/api/projects/{pid}/exports", json={"split": [0.5, 0.6, 0]})
    assert bad.status_code == 422
    # formats come from the exporter registry: unknown, or of another kind -> 422 naming them
    bad = owner.post(f"/api/projects/{pid}/exports", json={"format": "parquet"})
    assert bad.status_code == 422 and "'zip'" in bad.json()["detail"]["message"]
    bad = owner.post(f"/api/projects/{pid}/exports", json={"format": "nnunet"})
    assert bad.status_code == 422 and "volume projects" in bad.json()["detail"]["message"]
    info = owner.get("/api/info").json()
    by_name = {e["name"]: e for e in info["exporters"]}
    assert by_name["zip"]["kinds"] == [] and by_name["segment_masks"]["kinds"] == ["segment"]
    assert set(info["registries"]["exporters"]) == set(by_name)


def _label_table(df: pd.DataFrame) -> list[tuple[str, str, str, str]]:
    cols = ["filename", "sha256", "case", "label"]
    return sorted(tuple("" if pd.isna(v) else str(v) for v in row) for row in df[cols].values)


def test_zip_round_trip_export_import_export_gives_the_same_labels(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    from loupe.db.models import Project
    from loupe.services.exports import core as exports
    from loupe.services.exports.archive import DatasetOptions, write_dataset_zip
    from loupe.services.labels.import_zip import import_dataset_zip

    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    path = tmp_path / "dataset.zip"
    write_dataset_zip(settings, pid, path, DatasetOptions(include_images=True, split_seed=3))
    result = import_dataset_zip(settings, path, owner_id=w["helper"].id)
    assert result["created"] and result["items"]["imported"] == 9
    assert (
        result["labels"]["counts"]["set"] == 7 and result["labels"]["counts"]["unknown_item"] == 0
    )
    new_id = result["project_id"]
    assert new_id != pid
    db.rollback()
    new = db.get(Project, new_id)
    assert new.name.startswith("Hémato study") and new.name != "Hémato study"
    assert new.schema["classes"] == w["project"].schema["classes"]
    first = read_csv(b"".join(exports.stream_csv(settings, pid)))
    second = read_csv(b"".join(exports.stream_csv(settings, new_id)))
    assert _label_table(first) == _label_table(second)
    assert list(second["meta_stain"]) == ["HE"] * 9
    # the restored labels are in the audit trail as imports
    sources = set(
        db.scalars(select(AnnotationEvent.source).where(AnnotationEvent.project_id == new_id))
    )
    assert sources == {"import"}
    # and a second export of the new project splits it the same way
    path2 = tmp_path / "again.zip"
    write_dataset_zip(settings, new_id, path2, DatasetOptions(split_seed=3))
    with zipfile.ZipFile(path) as a, zipfile.ZipFile(path2) as b:
        split_a = read_csv(a.read("labels.csv")).set_index("sha256")["split"]
        split_b = read_csv(b.read("labels.csv")).set_index("sha256")["split"]
    assert split_a.sort_index().equals(split_b.sort_index())
    # the new project's owner sees it
    db.rollback()
    projects = login(w["helper"]).get("/api/projects").json()["data"]
    assert new_id in [p["id"] for p in projects]


def test_dataset_zip_reimport_through_the_api(
    settings: Any, db: Any, make_user: Any, make_project: Any, login: Any, tmp_path: Path
) -> None:
    w = build_world(settings, db, make_user, make_project, tmp_path)
    pid = w["project"].id
    c = login(w["owner"])
    exported = c.get(f"/api/projects/{pid}/export.zip?include_images=true")
    assert exported.status_code == 200
    r = c.post(
        "/api/projects/import-dataset",
        files={"file": ("cells.zip", exported.content, "application/zip")},
        data={"name": "Re-imported cells"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] and body["name"] == "Re-imported cells"
    assert body["items"]["imported"] == 9 and body["labels"]["counts"]["set"] == 7
    mine = c.get(f"/api/projects/{body['project_id']}").json()
    assert mine["role"] == "owner" and mine["labelled"] == 7
    bad = c.post(
        "/api/projects/import-dataset",
        files={"file": ("x.zip", b"not a zip", "application/zip")},
    )
    assert bad.status_code == 422 and "ZIP" in bad.json()["detail"]["message"]


def test_cli_export_report_and_import(
    settings: Any, db: Any, make_user: Any, make_project: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from loupe.cli import app as cli_app
    from loupe.cli_exports import register

    names = {cmd.name for cmd in cli_app.registered_commands}
    if "export" not in names:
        register(cli_app)
    runner = CliRunner()
    w = build_world(settings, db, make_user, make_project, tmp_path)
    name = w["project"].name
    out = tmp_path / "out.csv"
    r = runner.invoke(cli_app, ["export", name, "--out", str(out), "--labelled-only"])
    assert r.exit_code == 0, r.output
    assert len(read_csv(out.read_bytes())) == 7
    z = tmp_path / "out.zip"
    r = runner.invoke(cli_app, ["export", name, "--format", "zip", "--out", str(z), "--images"])
    assert r.exit_code == 0, r.output
    with zipfile.ZipFile(z) as zf:
        assert sum(n.startswith("images/") for n in zf.namelist()) == 9
    r = runner.invoke(cli_app, ["export", name, "--out", "-", "--case", "S-01"])
    assert r.exit_code == 0 and r.output.count("S-01_HE_") == 5
    pdf = tmp_path / "s01.pdf"
    r = runner.invoke(
        cli_app, ["report", name, "S-01", "--out", str(pdf), "--user", "helper@lab.org"]
    )
    assert r.exit_code == 0, r.output
    assert pdf.read_bytes().startswith(b"%PDF")
    labels = tmp_path / "labels.csv"
    labels.write_text("file,label\nS-02_HE_007.png,monocyte\nnope.png,monocyte\n")
    r = runner.invoke(cli_app, ["import-labels", name, str(labels), "--dry-run"])
    assert r.exit_code == 3 and "would change" in r.output, r.output
    r = runner.invoke(cli_app, ["import-dataset", str(z), "--owner", "owner@lab.org"])
    assert r.exit_code == 0 and "7 labels set" in r.output, r.output
    for args in (["export"], ["report"], ["import-labels"], ["import-dataset"]):
        assert runner.invoke(cli_app, [*args, "--help"]).exit_code == 0
