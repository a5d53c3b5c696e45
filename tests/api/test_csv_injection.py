"""Exports escape formula-like cells by default; raw=true / --raw turns it off (item 7)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
from typer.testing import CliRunner

EVIL_NOTE = '=HYPERLINK("http://x","y")'


def _project(login: Any, make_user: Any, make_project: Any, make_item: Any) -> Any:
    owner = make_user()
    project = make_project(owner, name="=evil project", settings_={"retrain_every": 0})
    items = [make_item(project, name=n) for n in ("=1+2.png", "@cmd.png", "plain.png")]
    c = login(owner)
    notes = [EVIL_NOTE, "-1.5", "+cmd|' /C calc'!A0"]
    for item, note in zip(items, notes, strict=True):
        r = c.put(
            f"/api/projects/{project.id}/items/{item.id}/label",
            json={"kind": "class", "label": "neutrophil", "note": note},
        )
        assert r.status_code == 200, r.text
    return project, c


def _frame(content: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(content), encoding="utf-8-sig")


def test_csv_and_zip_exports_escape_formulas_by_default(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    project, c = _project(login, make_user, make_project, make_item)
    r = c.get(f"/api/projects/{project.id}/export.csv")
    assert r.status_code == 200
    frame = _frame(r.content)
    assert list(frame["filename"]) == ["'=1+2.png", "'@cmd.png", "plain.png"]
    assert list(frame["note"]) == ["'" + EVIL_NOTE, "-1.5", "'+cmd|' /C calc'!A0"]
    assert frame["label_version"].dtype.kind == "i"  # numbers stay numbers
    z = c.get(f"/api/projects/{project.id}/export.zip")
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        labels = _frame(zf.read("labels.csv"))
    assert list(labels["filename"])[:2] == ["'=1+2.png", "'@cmd.png"]
    raw = _frame(c.get(f"/api/projects/{project.id}/export.csv?raw=true").content)
    assert list(raw["filename"])[:2] == ["=1+2.png", "@cmd.png"]
    assert raw["note"][0] == EVIL_NOTE
    z = c.get(f"/api/projects/{project.id}/export.zip?raw=true")
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert _frame(zf.read("labels.csv"))["filename"][0] == "=1+2.png"


def test_escaped_export_imports_back_unchanged(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    project, c = _project(login, make_user, make_project, make_item)
    content = c.get(f"/api/projects/{project.id}/export.csv").content
    r = c.post(
        f"/api/projects/{project.id}/labels/import",
        files={"file": ("labels.csv", content, "text/csv")},
        data={"dry_run": "true"},
    )
    assert r.status_code == 200, r.text
    statuses = {row["status"] for row in r.json()["rows"]}
    assert statuses == {"unchanged"}, r.json()["rows"]


def test_cli_export_raw_flag(
    settings: Any, login: Any, make_user: Any, make_project: Any, make_item: Any, tmp_path: Path
) -> None:
    from loupe.cli import app

    project, _ = _project(login, make_user, make_project, make_item)
    runner = CliRunner()
    escaped, raw = tmp_path / "e.csv", tmp_path / "r.csv"
    assert runner.invoke(app, ["export", str(project.id), "--out", str(escaped)]).exit_code == 0
    r = runner.invoke(app, ["export", str(project.id), "--out", str(raw), "--raw"])
    assert r.exit_code == 0, r.output
    assert _frame(escaped.read_bytes())["filename"][0] == "'=1+2.png"
    assert _frame(raw.read_bytes())["filename"][0] == "=1+2.png"
