"""Dataset and label ZIPs from users (issue 11, item 2): zip bombs are refused
unread, lying headers give 422, and a failed import leaves no project behind."""

from __future__ import annotations

import copy
import io
import json
import threading
import time
import zipfile
from typing import Any

import psutil

from loupe.services.exports.archive import FORMAT

MiB = 1 << 20


def overlapping_bomb(copies: int = 10, member_mib: int = 300) -> bytes:
    """~300 kB whose central directory lists ``copies`` entries sharing one stream of zeros."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("manifest.json", json.dumps({"format": FORMAT, "project": {}}))
        zf.writestr("labels.csv", "filename,image\r\na.png,images/a.png\r\n")
        zeros = bytes(MiB)
        with zf.open("images/a.png", "w", force_zip64=True) as w:
            for _ in range(member_mib):
                w.write(zeros)
        first = zf.getinfo("images/a.png")
        zf.filelist.extend(copy.copy(first) for _ in range(copies - 1))
    return buf.getvalue()


class PeakRss:
    """The highest resident set size of this process while the block runs."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.base = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.base


def _project_count(c: Any) -> int:
    return int(c.get("/api/projects").json()["count"])


def test_zip_bomb_is_refused_unread(
    login: Any, make_user: Any, make_project: Any, settings: Any
) -> None:
    bomb = overlapping_bomb()
    with zipfile.ZipFile(io.BytesIO(bomb)) as zf:
        recorded = sum(m.file_size for m in zf.infolist())
    assert len(bomb) < 400_000 and recorded > 3_000_000_000
    owner = make_user()
    project = make_project(owner)
    c = login(owner)
    before = _project_count(c)
    with PeakRss() as rss:
        t0 = time.perf_counter()
        r = c.post(
            "/api/projects/import-dataset",
            files={"file": ("bomb.zip", bomb, "application/zip")},
        )
        seconds = time.perf_counter() - t0
        labels = c.post(
            f"/api/projects/{project.id}/labels/import",
            files={"file": ("bomb.zip", bomb, "application/zip")},
        )
    assert r.status_code in (413, 422), r.text
    assert labels.status_code in (413, 422), labels.text
    assert "bomb" in r.json()["detail"]["message"] or r.status_code == 413
    assert rss.growth < 100 * MiB, f"RSS grew by {rss.growth / MiB:.0f} MiB"
    assert seconds < 5
    assert _project_count(c) == before
    print(
        f"bomb {len(bomb)} B -> {recorded} B: {r.status_code} in {seconds:.2f}s, "
        f"RSS +{rss.growth / MiB:.1f} MiB"
    )


def _dataset_zip(c: Any, project_id: int) -> bytes:
    r = c.get(f"/api/projects/{project_id}/export.zip?include_images=true")
    assert r.status_code == 200
    return bytes(r.content)


def _lie_about_size(data: bytes, name: str, new_size: int) -> bytes:
    """Rewrite ``name``'s recorded uncompressed size in both its headers."""
    out = bytearray(data)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        info = zf.getinfo(name)
    local = info.header_offset
    assert out[local : local + 4] == b"PK\x03\x04"
    out[local + 22 : local + 26] = new_size.to_bytes(4, "little")
    central = out.find(b"PK\x01\x02")
    while central != -1:
        name_len = int.from_bytes(out[central + 28 : central + 30], "little")
        if out[central + 46 : central + 46 + name_len] == name.encode():
            out[central + 24 : central + 28] = new_size.to_bytes(4, "little")
            break
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_a_member_that_inflates_past_its_header_is_422_and_leaves_no_project(
    login: Any, make_user: Any, make_project: Any, make_item: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    make_item(project)
    c = login(owner)
    good = _dataset_zip(c, project.id)
    with zipfile.ZipFile(io.BytesIO(good)) as zf:
        image = next(n for n in zf.namelist() if n.startswith("images/"))
    lying = _lie_about_size(good, image, 10)
    before = _project_count(c)
    r = c.post(
        "/api/projects/import-dataset",
        files={"file": ("lying.zip", lying, "application/zip")},
    )
    assert r.status_code == 422, r.text
    assert "lies about its size" in r.json()["detail"]["message"]
    assert _project_count(c) == before


def test_unzipped_size_limit_is_a_setting(
    login: Any, make_user: Any, make_project: Any, make_item: Any, settings: Any
) -> None:
    owner = make_user()
    project = make_project(owner)
    make_item(project)
    c = login(owner)
    data = _dataset_zip(c, project.id)
    settings.max_unzipped_bytes = 1000
    before = _project_count(c)
    r = c.post("/api/projects/import-dataset", files={"file": ("d.zip", data, "application/zip")})
    assert r.status_code == 413, r.text
    assert r.json()["detail"]["limit"] == 1000
    assert _project_count(c) == before
    settings.max_unzipped_bytes = 10 << 20
    ok = c.post("/api/projects/import-dataset", files={"file": ("d.zip", data, "application/zip")})
    assert ok.status_code == 201, ok.text
