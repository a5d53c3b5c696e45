"""Uploads (streamed multipart, size limit, report) and admin server-side imports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from loupe.db.models import Case, Item

PATTERN = r"(?P<case>S-\d+)-(?P<magnification>\d+X)_Image(?P<serial>\d+)_ch(?P<channel>\d+)"


def jpeg_bytes(seed: int) -> bytes:
    data = np.random.default_rng(seed).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(data).save(buf, format="JPEG")
    return buf.getvalue()


def media_files(settings: Any) -> list[Path]:
    return [p for p in settings.media_dir.rglob("*") if p.is_file()]


@pytest.fixture
def reader(settings: Any) -> Any:
    """A read-only session; SQLite readers never block the request's writers."""
    from loupe.db.session import session_factory

    session = session_factory(settings.db_url)()
    yield session
    session.close()


def items_of(reader: Any, project_id: int) -> list[Item]:
    reader.rollback()
    return list(reader.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id)))


def test_upload_imports_good_files_and_lists_bad_ones(
    login: Any, make_user: Any, make_project: Any, settings: Any, reader: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    good = jpeg_bytes(1)
    files = [
        ("files", ("cell one.jpg", good, "image/jpeg")),
        ("files", ("S-3602-10X_Image001_ch00.jpg", jpeg_bytes(2), "image/jpeg")),
        ("files", ("empty.png", b"", "image/png")),
        ("files", ("notes.tif", b"hello, not a TIFF", "image/tiff")),
        ("files", ("half.jpg", good[: len(good) // 2], "image/jpeg")),
    ]
    r = c.post(f"/api/projects/{project.id}/uploads", files=files, data={"case_pattern": PATTERN})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["imported"] == 2 and body["existing"] == 0
    failed = {f["path"]: f["reason"] for f in body["failed"]}
    assert set(failed) == {"empty.png", "notes.tif", "half.jpg"}
    assert failed["empty.png"] == "empty file (0 bytes)"
    assert failed["notes.tif"] == "not an image (unrecognised format)"
    assert "truncated" in failed["half.jpg"]

    items = items_of(reader, project.id)
    assert [i.filename for i in items] == ["cell one.jpg", "S-3602-10X_Image001_ch00.jpg"]
    assert [i.id for i in items] == body["item_ids"]
    for item in items:
        assert Path(item.uri).parent.parent == settings.media_dir
        assert item.created_by == owner.id
    assert reader.get(Case, items[1].case_id).name == "S-3602"
    assert items[1].meta["serial"] == "001" and items[1].meta["magnification"] == "10X"
    # Failed uploads are not kept; the two good files are.
    assert sorted(media_files(settings)) == sorted(Path(i.uri) for i in items)
    thumb = c.get(f"/api/projects/{project.id}/items/{items[0].id}/thumbnail")
    assert thumb.status_code == 200 and thumb.content[:3] == b"\xff\xd8\xff"

    again = c.post(
        f"/api/projects/{project.id}/uploads",
        files=[("files", ("renamed.jpg", good, "image/jpeg"))],
        data={"case": "Patient 1"},
    )
    assert again.status_code == 200, again.text
    assert again.json() == {
        "imported": 0,
        "existing": 1,
        "failed": [],
        "item_ids": [items[0].id],
    }
    assert len(media_files(settings)) == 2


def test_upload_over_the_limit_is_413_and_leaves_nothing(
    login: Any, make_user: Any, make_project: Any, settings: Any, reader: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    settings.max_upload_bytes = 50_000
    big = np.random.default_rng(0).integers(0, 256, 80_000, dtype=np.uint8).tobytes()
    r = c.post(
        f"/api/projects/{project.id}/uploads",
        files=[
            ("files", ("small.jpg", jpeg_bytes(3), "image/jpeg")),
            ("files", ("huge.tif", big, "image/tiff")),
        ],
    )
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert detail["code"] == "too_large" and "huge.tif" in detail["message"]
    assert media_files(settings) == []
    assert items_of(reader, project.id) == []


def test_upload_needs_annotator_and_files(
    client: Any, login: Any, make_user: Any, make_project: Any, settings: Any
) -> None:
    from loupe.db.session import session_scope
    from loupe.services.projects import core as projects

    owner, viewer = make_user(), make_user()
    project = make_project(owner)
    with session_scope(settings.db_url) as s:
        p = projects.find_project(s, project.id)
        projects.add_member(s, p, email=viewer.email, role="viewer")
    url = f"/api/projects/{project.id}/uploads"
    files = [("files", ("a.jpg", jpeg_bytes(4), "image/jpeg"))]
    assert client.post(url, files=files).status_code == 401
    assert login(viewer).post(url, files=files).status_code == 403
    c = login(owner)
    assert c.post(url, data={"case": "x"}).status_code == 422
    bad = c.post(url, files=files, data={"case_pattern": "(?P<nocase>x)"})
    assert bad.status_code == 422 and "case" in bad.json()["detail"]["message"]
    assert media_files(settings) == []


def test_openapi_documents_the_multipart_body(client: Any) -> None:
    spec = client.get("/api/openapi.json").json()
    op = spec["paths"]["/api/projects/{project_id}/uploads"]["post"]
    schema = op["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["files"]["type"] == "array"
    assert (
        "IngestReportPublic"
        in op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    )


def test_admin_imports_a_server_folder_as_a_job(
    login: Any, make_user: Any, make_project: Any, settings: Any, reader: Any, tmp_path: Path
) -> None:
    admin, member = make_user(admin=True), make_user()
    project = make_project(member)
    folder = tmp_path / "server" / "case-A"
    folder.mkdir(parents=True)
    (folder / "x.jpg").write_bytes(jpeg_bytes(5))
    (folder / "y.jpg").write_bytes(b"")
    url = f"/api/projects/{project.id}/imports"
    body = {"paths": [str(tmp_path / "server")]}
    assert login(member).post(url, json=body).status_code == 403
    c = login(admin)
    assert c.post(url, json={"paths": ["relative/path"]}).status_code == 422
    r = c.post(url, json=body)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    reader.rollback()
    from loupe.db.models import Job

    job = reader.get(Job, job_id)
    assert job.kind == "ingest" and job.status == "done", job.error
    assert job.result["imported"] == 1 and job.result["failed"][0]["reason"]
    (item,) = items_of(reader, project.id)
    assert item.uri == str(folder / "x.jpg")
    assert reader.get(Case, item.case_id).name == "case-A"


def test_malformed_bodies_are_422_and_leave_nothing(
    login: Any, make_user: Any, make_project: Any, settings: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    url = f"/api/projects/{project.id}/uploads"
    multipart = {"content-type": "multipart/form-data; boundary=zz"}
    cases = [
        c.post(url, files=[("other", ("a.jpg", jpeg_bytes(6), "image/jpeg"))]),
        c.post(
            url,
            content=b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"'
            b"\r\n\r\nno closing boundary",
            headers=multipart,
        ),
        c.post(url, content=b"garbage", headers=multipart),
        c.post(url, json={"files": []}),
    ]
    for r in cases:
        assert r.status_code == 422, r.text
        assert r.json()["detail"]["code"] == "invalid"
    assert media_files(settings) == []
