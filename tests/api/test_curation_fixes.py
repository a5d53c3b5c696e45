"""Smaller fixes from the first real use (issue 10, item 9): class names with '/',
ensemble validation, the demo's answer key, a secret key kept in LOUPE_HOME."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

CLASSES = [{"name": "T-shirt/top"}, {"name": "Trouser"}, {"name": "a\\b"}]


def test_class_names_may_hold_slashes_but_not_control_characters(
    login: Any, make_user: Any, make_item: Any, make_project: Any
) -> None:
    owner = make_user()
    c = login(owner)
    r = c.post(
        "/api/projects",
        json={"name": "Fashion", "task": "classify", "schema": {"classes": CLASSES}},
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    assert [k["name"] for k in r.json()["schema"]["classes"]] == ["T-shirt/top", "Trouser", "a\\b"]
    bad = c.post(
        "/api/projects",
        json={"name": "Bad", "task": "classify", "schema": {"classes": [{"name": "tab\there"}]}},
    )
    assert bad.status_code == 422
    message = bad.json()["detail"]["message"]
    assert "control characters" in message and "pattern" not in message

    # The dataset ZIP's ImageFolder still gets one safe folder per class.
    project = make_project(owner, schema={"classes": CLASSES}, name="Fashion 2")
    item = make_item(project)
    label = {"kind": "class", "label": "T-shirt/top"}
    assert c.put(f"/api/projects/{project.id}/items/{item.id}/label", json=label).status_code == 200
    archive = c.get(f"/api/projects/{project.id}/export.zip?include_images=true")
    assert archive.status_code == 200
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zf:
        images = [n for n in zf.namelist() if n.startswith("images/")]
    assert images == [f"images/T-shirt_top/{item.filename}"]
    assert pid != project.id


def test_ensemble_members_must_be_known_backbones(
    login: Any, make_user: Any, make_project: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    url = f"/api/projects/{project.id}"
    unknown = c.patch(url, json={"settings": {"ensemble": ["classic", "resnet-9000"]}})
    assert unknown.status_code == 422
    message = unknown.json()["detail"]["message"]
    assert "resnet-9000" in message and "classic" in message and "mobilenet_v2" in message
    empty = c.patch(url, json={"settings": {"ensemble": []}})
    assert empty.status_code == 422 and "at least one" in empty.json()["detail"]["message"]
    ok = c.patch(url, json={"settings": {"ensemble": ["classic"]}})
    assert ok.status_code == 200 and ok.json()["settings"]["ensemble"] == ["classic"]


def test_the_demo_imports_its_images_not_its_answer_key(tmp_path: Path) -> None:
    from loupe.demo import TRUTH_FILE, build_demo_images, image_folders
    from loupe.services.items.ingest import collect_sources

    root = build_demo_images(tmp_path / "demo", per_class=2)
    assert (root / TRUTH_FILE).exists()
    sources, missing = collect_sources(image_folders(root))
    names = [s.path.name for s in sources]
    truth = json.loads((root / TRUTH_FILE).read_text())
    assert missing == [] and sorted(names) == sorted(truth)  # every tile, nothing else


def test_no_environment_needed_the_secret_key_is_kept_in_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loupe.cli import app
    from loupe.settings import Settings, get_settings

    for key in list(os.environ):
        if key.startswith("LOUPE_"):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("LOUPE_HOME", str(home))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        monkeypatch.setenv("LOUPE_PASSWORD", "a long password")
        r = runner.invoke(app, ["user", "create", "boss@lab.org", "--admin"])
        assert r.exit_code == 0, r.output
        r = runner.invoke(
            app, ["project", "create", "Plain", "--task", "classify", "--classes", "a,b"]
        )
        assert r.exit_code == 0, r.output
        key_file = home / ".secret_key"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert len(key) >= 32
        assert Settings().secret_key == key  # kept: the same key next time
        monkeypatch.setenv("LOUPE_SECRET_KEY", "short")
        with pytest.raises(ValueError, match="at least 32"):
            Settings()
    finally:
        get_settings.cache_clear()
