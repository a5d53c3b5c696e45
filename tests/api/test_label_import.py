"""Importing labels from CSV: the dry run changes nothing, every row says what
happens to it, human labels stay unless ``overwrite``, and the audit trail
records imports."""

from __future__ import annotations

import io
from typing import Any

import pandas as pd
import pytest
from sqlalchemy import func, select, text

from loupe.db.models import Annotation, AnnotationEvent, ModelVersion, Prediction


def _state(db: Any) -> tuple[Any, ...]:
    db.rollback()
    rows = db.execute(
        text("SELECT item_id, kind, label, origin, version FROM annotations ORDER BY item_id")
    ).all()
    events = db.scalar(select(func.count(AnnotationEvent.id)))
    db.rollback()
    return tuple(rows), events


@pytest.fixture
def world(settings: Any, db: Any, make_user: Any, make_project: Any, make_item: Any) -> Any:
    """Six items: a human label, a model-origin label, an unlabelled pair sharing a
    file name, and two plain unlabelled ones."""
    from loupe.services.labels.core import LabelValue, set_label

    owner = make_user()
    project = make_project(owner)
    items = {n: make_item(project, name=f"{n}.png") for n in ("a", "b", "c", "e", "f")}
    twin = make_item(project, name="twin.png")
    other = make_item(project, name="e.png")  # the same name, other pixels
    assert other.sha256 != items["e"].sha256
    human = LabelValue(kind="class", label="neutrophil")
    set_label(db, project, items["a"].id, human, user_id=owner.id)
    set_label(
        db, project, items["b"].id, LabelValue(kind="class", label="monocyte"),
        user_id=None, origin="model", source="model",
    )  # fmt: skip
    db.commit()
    return {"owner": owner, "project": project, "items": items, "twin": twin, "other": other}


CSV = (
    "file_name,label,note\n"
    "a.png,lymphocyte,differs from the human label\n"  # conflict
    "b.png,lymphocyte,\n"  # replaces a model-origin label
    "c.png,Neutrophil,\n"  # set (class names match case-insensitively)
    "f.png,unsure,\n"  # set unsure
    "e.png,monocyte,\n"  # two items are named e.png
    "nothing.png,monocyte,\n"  # unknown
    "twin.png,eosinophil,\n"  # not a class
    "twin.png,,\n"  # empty label
    "c.png,monocyte,\n"  # c again: duplicate
)


def test_dry_run_reports_every_row_and_changes_nothing(settings: Any, db: Any, world: Any) -> None:
    from loupe.services.labels.import_csv import import_labels

    before = _state(db)
    report = import_labels(settings, world["project"].id, CSV.encode(), dry_run=True)
    assert _state(db) == before
    assert report.dry_run and report.key_column == "file_name"
    status = {r.row: r.status for r in report.rows}
    assert status == {
        2: "conflict", 3: "set", 4: "set", 5: "set", 6: "ambiguous", 7: "unknown_item",
        8: "invalid", 9: "no_label", 10: "duplicate",
    }  # fmt: skip
    assert report.changed == 3
    conflict = report.rows[0]
    assert conflict.before == {"kind": "class", "origin": "human", "label": "neutrophil"}
    assert conflict.after == {"kind": "class", "label": "lymphocyte"}
    assert "kept" in conflict.message and "would replace" in conflict.message
    assert "would set" in report.rows[2].message
    assert "was the model's 'monocyte'" in report.rows[1].message
    assert "eosinophil" in report.rows[6].message and "neutrophil" in report.rows[6].message
    again = import_labels(settings, world["project"].id, CSV.encode(), dry_run=True, overwrite=True)
    assert again.rows[0].status == "overwrite" and "would replace" in again.rows[0].message
    assert _state(db) == before


def test_import_writes_audited_labels_and_keeps_human_ones(
    settings: Any, db: Any, world: Any
) -> None:
    from loupe.services.labels.import_csv import import_labels

    pid, items = world["project"].id, world["items"]
    report = import_labels(settings, pid, CSV.encode(), user_id=world["owner"].id)
    assert not report.dry_run and report.counts["set"] == 3 and report.counts["conflict"] == 1
    db.rollback()
    labels = {a.item_id: a for a in db.scalars(select(Annotation))}
    assert labels[items["a"].id].label == "neutrophil"  # the human label stays
    assert labels[items["b"].id].label == "lymphocyte" and labels[items["b"].id].origin == "human"
    assert labels[items["c"].id].label == "neutrophil"
    assert labels[items["f"].id].kind == "unsure"
    imported = select(AnnotationEvent).where(AnnotationEvent.source == "import")
    events = db.scalars(imported.order_by(AnnotationEvent.id)).all()
    assert {e.item_id for e in events} == {items["b"].id, items["c"].id, items["f"].id}
    assert all(e.user_id == world["owner"].id for e in events)
    assert events[0].before == {"kind": "class", "origin": "model", "label": "monocyte"}
    db.rollback()
    # the same file again changes nothing more
    again = import_labels(settings, pid, CSV.encode())
    assert again.changed == 0 and again.counts["unchanged"] == 3
    # overwrite replaces the differing human label, and says so
    forced = import_labels(settings, pid, CSV.encode(), overwrite=True)
    assert forced.counts["overwrite"] == 1 and forced.rows[0].status == "overwrite"
    db.rollback()
    label = db.scalar(select(Annotation.label).where(Annotation.item_id == items["a"].id))
    assert label == "lymphocyte"


def test_sha256_keys_paths_and_other_separators(settings: Any, db: Any, world: Any) -> None:
    from loupe.services.labels.import_csv import import_labels

    items, other = world["items"], world["other"]
    csv_text = (
        "\ufeffSHA256;Class\n"  # Excel style: BOM, upper case, semicolons
        f"{other.sha256.upper()};monocyte\n"
        f"{items['e'].sha256};lymphocyte\n"
    )
    report = import_labels(settings, world["project"].id, csv_text.encode())
    assert report.key_column == "sha256" and report.counts["set"] == 2, report.to_json()
    by_path = "path,label\nslides/case 1/twin.png,monocyte\n"
    report = import_labels(settings, world["project"].id, by_path.encode())
    assert report.rows[0].status == "set" and report.rows[0].item_id == world["twin"].id


def test_score_import_and_bad_files(
    settings: Any, db: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    from loupe.errors import LoupeError
    from loupe.services.labels.import_csv import import_labels

    owner = make_user()
    project = make_project(owner, task="score")
    a, b, c = (make_item(project, name=f"{n}.png") for n in "abc")
    csv_text = (
        "filename,score_fibrosis,atrophy\n"
        "a.png,3,1\n"
        "b.png,2.5,\n"  # off the step grid
        "c.png,9,0\n"  # out of range
    )
    report = import_labels(settings, project.id, csv_text.encode(), user_id=owner.id)
    assert [r.status for r in report.rows] == ["set", "invalid", "invalid"]
    assert "step" in report.rows[1].message and "outside" in report.rows[2].message
    db.rollback()
    ann = db.scalar(select(Annotation).where(Annotation.item_id == a.id))
    assert ann.scores == {"fibrosis": 3.0, "atrophy": 1.0}
    db.rollback()
    for bad, why in (
        (b"", "empty"),
        (b"label\nneutrophil\n", "sha256"),
        (b"filename,colour\na.png,red\n", "metrics"),
        (b"\xff\xfe\x00bad", "UTF-8"),
        (b"PK\x03\x04 not a zip", "ZIP"),
    ):
        with pytest.raises(LoupeError) as err:
            import_labels(settings, project.id, bad)
        assert why in err.value.message, err.value.message


def test_api_import_with_dry_run_and_roles(
    settings: Any, db: Any, world: Any, make_user: Any, login: Any
) -> None:
    from loupe.services.projects.core import add_member

    pid = world["project"].id
    viewer = make_user()
    add_member(db, world["project"], email=viewer.email, role="viewer")
    db.commit()
    c = login(world["owner"])
    before = _state(db)
    files = {"file": ("labels.csv", CSV.encode(), "text/csv")}
    r = c.post(f"/api/projects/{pid}/labels/import", files=files, data={"dry_run": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["dry_run"] and body["changed"] == 3 and body["total"] == 9
    assert body["counts"]["conflict"] == 1 and not body["truncated"]
    assert _state(db) == before
    r = login(viewer).post(f"/api/projects/{pid}/labels/import", files=files)
    assert r.status_code == 403
    r = c.post(f"/api/projects/{pid}/labels/import", files=files)
    assert r.status_code == 200 and r.json()["counts"]["set"] == 3
    assert _state(db) != before


def test_export_then_import_round_trip_is_unchanged(
    settings: Any, db: Any, world: Any, login: Any
) -> None:
    """Loupe's own CSV re-imports as is: every labelled row is 'unchanged'."""
    from loupe.services.labels.import_csv import import_labels

    pid = world["project"].id
    version = ModelVersion(project_id=pid, number=1, status="ready", active=True)
    db.add(version)
    db.flush()
    db.add(Prediction(project_id=pid, item_id=world["twin"].id, model_version_id=version.id,
                      label="monocyte", confidence=0.4, flagged=True))  # fmt: skip
    db.commit()
    exported = login(world["owner"]).get(f"/api/projects/{pid}/export.csv").content
    assert len(pd.read_csv(io.BytesIO(exported))) == 7
    report = import_labels(settings, pid, exported, dry_run=True)
    assert report.key_column == "sha256"
    assert report.counts["unchanged"] == 2 and report.counts["no_label"] == 5
    assert report.changed == 0
