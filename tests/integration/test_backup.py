"""``loupe backup`` / ``loupe restore`` on SQLite and PostgreSQL, while a writer labels.

A real project (uploaded PNGs, labels, audit events, a trained model version
with its artifact and features) is backed up while another client keeps
changing labels, then restored into a fresh LOUPE_HOME and an empty database:
the labels, the audit trail and the model versions of the snapshot come back,
every label agrees with its audit trail (the snapshot is consistent), and an
item's file and thumbnail are served by an app on the restored deployment.
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import create_engine, func, select, text
from tests.conftest import PASSWORD, PG_ADMIN_URL, _pg_url

from loupe.db.models import Annotation, AnnotationEvent, ModelVersion
from loupe.db.session import get_engine, session_scope
from loupe.errors import LoupeError
from loupe.services.backup import core as backup_service

CLASSES = ("tumour", "stroma")


def _pngs(n: int) -> list[tuple[str, bytes]]:
    from skimage import data

    sources = [np.asarray(data.immunohistochemistry()), np.asarray(data.retina())[300:800, 300:800]]
    out = []
    for k in range(n):
        img = sources[k % 2]
        r, c = divmod(k // 2, 4)
        tile = np.ascontiguousarray(img[r * 64 : r * 64 + 64, c * 64 : c * 64 + 64])
        buf = io.BytesIO()
        Image.fromarray(tile).save(buf, format="PNG")
        out.append((f"tile{k:02d}.png", buf.getvalue()))
    return out


@pytest.fixture
def target_db(settings: Any, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as the test's, for the restore."""
    if settings.db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored-home' / 'loupe.db'}"
        return
    name = f"loupe_restore_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield _pg_url(name)
    finally:
        get_engine(_pg_url(name)).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _rows(url: str) -> dict[str, Any]:
    with session_scope(url, write=False) as db:
        labels = {a.item_id: (a.label, a.version) for a in db.scalars(select(Annotation))}
        events = [
            (e.id, e.item_id, e.action, e.source, e.version, e.after)
            for e in db.scalars(select(AnnotationEvent).order_by(AnnotationEvent.id))
        ]
        last = dict(
            db.execute(
                select(AnnotationEvent.item_id, func.max(AnnotationEvent.version)).group_by(
                    AnnotationEvent.item_id
                )
            ).all()
        )
        versions = [
            (v.id, v.number, v.status, v.active, v.members, v.metrics, v.artifact_path)
            for v in db.scalars(select(ModelVersion).order_by(ModelVersion.id))
        ]
    return {"labels": labels, "events": events, "last": last, "versions": versions}


def test_backup_while_labelling_then_restore_into_a_fresh_home(
    settings: Any,
    make_user: Any,
    make_project: Any,
    login: Any,
    target_db: str,
    tmp_path: Path,
) -> None:
    from loupe.api.app import create_app
    from loupe.api.deps import settings_dep
    from loupe.settings import Settings

    owner = make_user()
    project = make_project(
        owner,
        schema={"classes": [{"name": n} for n in CLASSES]},
        settings_={"ensemble": ["classic"]},
    )
    pid = project.id
    api = login(owner)
    files = [("files", (name, body, "image/png")) for name, body in _pngs(12)]
    r = api.post(f"/api/projects/{pid}/uploads", files=files)
    assert r.status_code in (200, 201), r.text
    item_ids = list(r.json()["item_ids"])
    assert len(item_ids) == 12
    for k, item_id in enumerate(item_ids[:8]):
        r = api.put(
            f"/api/projects/{pid}/items/{item_id}/label",
            json={"kind": "class", "label": CLASSES[k % 2]},
        )
        assert r.status_code == 200, r.text
    r = api.post(f"/api/projects/{pid}/train", json={"mode": "frozen"})
    assert r.status_code == 202, r.text
    assert api.get(f"/api/jobs/{r.json()['id']}").json()["status"] == "done"

    # A second annotator keeps relabelling items 8..11 during the backup.
    writer = login(owner)
    stop = threading.Event()
    writes: list[int] = []
    errors: list[str] = []

    def _write() -> None:
        k = 0
        while not stop.is_set():
            item_id = item_ids[8 + k % 4]
            r = writer.put(
                f"/api/projects/{pid}/items/{item_id}/label",
                json={"kind": "class", "label": CLASSES[(k // 4) % 2]},  # a change each time
            )
            if r.status_code == 200:
                writes.append(item_id)
            else:
                errors.append(r.text)
            k += 1

    thread = threading.Thread(target=_write, daemon=True)
    thread.start()
    try:
        while len(writes) < 5 and thread.is_alive():
            stop.wait(0.01)
        before_backup = len(writes)
        manifest = backup_service.backup(settings, tmp_path / "backup")
        after_backup = len(writes)
        while len(writes) < after_backup + 5 and thread.is_alive():
            stop.wait(0.01)
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors[:3]
    assert before_backup >= 5 and len(writes) > after_backup

    source = _rows(settings.db_url)
    assert manifest.counts["model_versions"] == len(source["versions"]) >= 1
    assert manifest.missing == [] and manifest.external_files == 0
    assert any(rel.startswith("media/") for rel in manifest.files)
    assert any(rel.startswith("features/") for rel in manifest.files)
    assert any(rel.startswith("models/") for rel in manifest.files)

    home2 = tmp_path / "restored-home"
    restored_settings = Settings(home=home2, database_url=target_db)
    report = backup_service.restore(restored_settings, tmp_path / "backup")
    assert report.counts == manifest.counts
    restored = _rows(target_db)

    # The audit trail is the source's up to the snapshot; the labels are
    # exactly what that trail says (a consistent snapshot, taken mid-write).
    n = len(restored["events"])
    assert n == manifest.counts["annotation_events"]
    assert restored["events"] == source["events"][:n]
    assert n < len(source["events"])  # the writer went on after the snapshot
    assert {i: v for i, (_l, v) in restored["labels"].items()} == restored["last"]
    for item_id in item_ids[:8]:  # not touched during the backup
        assert restored["labels"][item_id] == source["labels"][item_id]
    # Model versions: the same rows, artifacts moved into the new home.
    old_home, new_home = str(settings.home.resolve()), str(home2.resolve())
    assert [v[:6] for v in restored["versions"]] == [v[:6] for v in source["versions"]]
    for version in restored["versions"]:
        if version[6]:
            assert version[6].startswith(new_home) and Path(version[6]).exists()
            assert not version[6].startswith(old_home)

    # The restored deployment serves the item's file and thumbnail.
    app2 = create_app(restored_settings, migrate=False)
    app2.dependency_overrides[settings_dep] = lambda: restored_settings
    with TestClient(app2) as c2:
        r = c2.post("/api/auth/login", json={"email": owner.email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        r = c2.get(f"/api/projects/{pid}/items/{item_ids[0]}/file")
        assert r.status_code == 200 and r.content == files[0][1][1]
        r = c2.get(f"/api/projects/{pid}/items/{item_ids[0]}/thumbnail")
        assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"  # a JPEG

    # A second restore into the now-populated target is refused without --force.
    with pytest.raises(LoupeError, match="not empty"):
        backup_service.restore(restored_settings, tmp_path / "backup")
    get_engine(target_db).dispose()


def test_cli_backup_and_restore_refuses_a_non_empty_target(
    settings: Any,
    make_user: Any,
    target_db: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from typer.testing import CliRunner

    from loupe.cli import app
    from loupe.settings import get_settings

    make_user("carol@example.org")
    media = settings.media_dir / "ab" / "ab12.png"  # an unreferenced file is copied too
    media.parent.mkdir(parents=True)
    media.write_bytes(b"\x89PNG not really")
    runner = CliRunner()
    r = runner.invoke(app, ["backup", str(tmp_path / "bk"), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["counts"]["users"] == 1 and summary["files"] == 1
    r = runner.invoke(app, ["backup", str(tmp_path / "bk")])
    assert r.exit_code == 1 and "not empty" in r.output

    home2 = tmp_path / "restored-home"
    monkeypatch.setenv("LOUPE_HOME", str(home2))
    monkeypatch.setenv("LOUPE_DATABASE_URL", target_db)
    get_settings.cache_clear()
    r = runner.invoke(app, ["restore", str(tmp_path / "bk"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"]["users"] == 1
    r = runner.invoke(app, ["restore", str(tmp_path / "bk")])
    assert r.exit_code == 1 and "--force" in r.output
    r = runner.invoke(app, ["restore", str(tmp_path / "bk"), "--force", "--json"])
    assert r.exit_code == 0, r.output
    with session_scope(target_db, write=False) as db:
        from loupe.db.models import User

        assert [u.email for u in db.scalars(select(User))] == ["carol@example.org"]
    # A damaged file is found by its checksum.
    assert (home2 / "media" / "ab" / "ab12.png").read_bytes() == media.read_bytes()
    (tmp_path / "bk" / "files" / "media" / "ab" / "ab12.png").write_bytes(b"tampered")
    r = runner.invoke(app, ["restore", str(tmp_path / "bk"), "--force"])
    assert r.exit_code == 1 and "damaged" in r.output
    get_engine(target_db).dispose()
    get_settings.cache_clear()
