"""Ingest service: real files of every format, failures, dedupe, cases, uploads, jobs."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from loupe.db.models import Annotation, Case, Item, Job
from loupe.errors import ErrorCode, LoupeError
from loupe.services.items import ingest
from loupe.services.items.files import item_file_path, thumbnail_file, thumbnail_path

PATTERN = r"(?P<case>S-\d+)-(?P<magnification>\d+X)_Image(?P<serial>\d+)_ch(?P<channel>\d+)"


# --- real test files ---------------------------------------------------------------


def rgb(seed: int, shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def save_pil(path: Path, seed: int, fmt: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb(seed)).save(path, format=fmt)
    return path


def jpeg(path: Path, seed: int = 0) -> Path:
    return save_pil(path, seed, "JPEG")


def tiff16(path: Path, seed: int = 0) -> Path:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(0, 65535, (40, 50), dtype=np.uint16)
    tifffile.imwrite(path, data)
    return path


def tiff_multipage(path: Path) -> Path:
    import tifffile

    data = np.random.default_rng(3).integers(0, 255, (4, 32, 32), dtype=np.uint8)
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def fits(path: Path) -> Path:
    from astropy.io import fits as afits

    data = np.random.default_rng(4).normal(size=(30, 40)).astype(np.float32)
    afits.PrimaryHDU(data).writeto(path)
    return path


def nifti(path: Path) -> Path:
    import nibabel as nib

    data = np.random.default_rng(5).integers(0, 1000, (10, 12, 8), dtype=np.int16)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def dicom_series(folder: Path, n: int = 3) -> list[Path]:
    """``n`` slices of one series: copies of pydicom's CT_small.dcm at new positions."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    template = get_testdata_file("CT_small.dcm")
    assert template is not None
    series_uid = generate_uid()
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(template)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.5 * i]
        ds.SliceLocation = z + 2.5 * i
        path = folder / f"slice_{i:03d}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def good_and_bad_folder(root: Path) -> tuple[set[str], dict[str, str]]:
    """A folder of every format plus broken files; returns (good names, bad name -> hint)."""
    root.mkdir(parents=True, exist_ok=True)
    jpeg(root / "a.jpg", 1)
    save_pil(root / "b.png", 2, "PNG")
    save_pil(root / "c.bmp", 3, "BMP")
    tiff16(root / "d16.tif")
    tiff_multipage(root / "e_pages.tiff")
    fits(root / "f.fits")
    nifti(root / "g.nii.gz")
    dicom_series(root / "ct")
    good = {"a.jpg", "b.png", "c.bmp", "d16.tif", "e_pages.tiff", "f.fits", "g.nii.gz", "ct"}
    (root / "zero.jpg").write_bytes(b"")
    whole = (root / "a.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (root / "notes.png").write_text("this is text, not a PNG\n" * 20)
    (root / "readme.txt").write_text("hello")
    (root / "garbage.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    bad = {
        "zero.jpg": "empty",
        "truncated.jpg": "",
        "notes.png": ingest.NOT_MEDIA,
        "readme.txt": ingest.NOT_MEDIA,
        "garbage.tif": "",
    }
    return good, bad


@pytest.fixture
def owner(make_user: Any) -> Any:
    return make_user()


@pytest.fixture
def project(make_project: Any, owner: Any) -> Any:
    return make_project(owner)


@pytest.fixture
def db(settings: Any) -> Any:
    """A read-only session (SQLite readers never block the import's writers).

    Call ``db.rollback()`` to see what was written since its last read.
    """
    from loupe.db.session import session_factory

    session = session_factory(settings.db_url)()
    yield session
    session.close()


def items_of(db: Any, project_id: int) -> list[Item]:
    db.rollback()  # a fresh snapshot
    return list(db.scalars(select(Item).where(Item.project_id == project_id).order_by(Item.id)))


# --- tests ---------------------------------------------------------------------------


def test_folder_of_every_format_imports_good_and_reports_bad(
    settings: Any, project: Any, db: Any, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    good, bad = good_and_bad_folder(root)
    calls: list[tuple[int, int, str]] = []

    report = ingest.ingest_paths(
        settings, project.id, [root], progress=lambda d, t, p: calls.append((d, t, p))
    )

    assert report.imported == len(good)
    assert report.existing == 0
    failed = {Path(f["path"]).name: f["reason"] for f in report.failed}
    assert set(failed) == set(bad)
    for name, hint in bad.items():
        assert failed[name], name
        assert hint in failed[name], (name, failed[name])
    assert calls[-1][0] == calls[-1][1] == len(list(root.rglob("*.*")))
    out = report.to_json()
    assert set(out) == {"imported", "existing", "failed"}
    assert all(set(f) == {"path", "reason"} for f in out["failed"])

    items = {Path(i.uri).name if i.format != "dicom" else "ct": i for i in items_of(db, project.id)}
    assert set(items) == good
    assert sorted(report.items) == sorted(i.id for i in items.values())
    assert items["d16.tif"].dtype == "uint16"
    assert items["d16.tif"].shape[:2] == [40, 50]
    assert items["e_pages.tiff"].meta["media"]["pages"] == 4 or items["e_pages.tiff"].shape[0] == 4
    assert items["f.fits"].format == "fits"
    assert items["g.nii.gz"].format == "nifti" and items["g.nii.gz"].kind == "volume"
    ct = items["ct"]
    assert ct.kind == "volume" and ct.format == "dicom"
    assert ct.shape[0] == 3 and len(ct.files or []) == 3
    assert ct.files == sorted(ct.files or [])
    assert ct.uri == ct.files[0]
    assert ct.spacing is not None and ct.spacing[0] == pytest.approx(2.5)
    for item in items.values():
        assert Path(item.uri).is_absolute() and Path(item.uri).is_file()
        # Files directly in the folder given have no case; the series is in folder 'ct'.
        assert (item.case_id is not None) == (item.format == "dicom")
        thumb = thumbnail_file(settings, item.sha256)
        assert thumb.is_file()
        assert Image.open(thumb).format == "JPEG"
    # Referenced in place: nothing copied into the media folder.
    assert not any(p.is_file() for p in settings.media_dir.rglob("*"))


def test_dicom_series_in_subfolder_gets_folder_case(
    settings: Any, project: Any, db: Any, tmp_path: Path
) -> None:
    root = tmp_path / "scans"
    dicom_series(root / "patient-7" / "ct", n=4)
    jpeg(root / "patient-7" / "photo.jpg")
    jpeg(root / "top.jpg", seed=9)
    report = ingest.ingest_paths(settings, project.id, [root])
    assert (report.imported, report.failed) == (3, [])
    items = items_of(db, project.id)
    cases = {c.id: c.name for c in db.scalars(select(Case).where(Case.project_id == project.id))}
    by_name = {i.filename: cases.get(i.case_id) if i.case_id else None for i in items}
    assert by_name["photo.jpg"] == "patient-7"
    assert by_name["top.jpg"] is None
    (series,) = [i for i in items if i.format == "dicom"]
    assert cases[series.case_id] == "patient-7" and series.shape[0] == 4


def test_reimport_of_renamed_copy_returns_existing_and_keeps_label(
    settings: Any, project: Any, owner: Any, db: Any, tmp_path: Path
) -> None:
    from loupe.services.labels.core import LabelValue, set_label

    first = jpeg(tmp_path / "one" / "cell.jpg", seed=11)
    report = ingest.ingest_paths(settings, project.id, [first])
    (item_id,) = report.items
    from loupe.db.session import session_scope

    with session_scope(settings.db_url) as w:
        value = LabelValue(kind="class", label="neutrophil")
        set_label(w, project, item_id, value, user_id=owner.id)

    copy = tmp_path / "two" / "renamed_cell.jpg"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    again = ingest.ingest_paths(settings, project.id, [copy.parent], case_name="late case")

    assert (again.imported, again.existing, again.failed) == (0, 1, [])
    assert again.items == [item_id]
    db.rollback()
    ann = db.scalar(select(Annotation).where(Annotation.item_id == item_id))
    assert ann is not None and ann.label == "neutrophil" and ann.origin == "human"
    item = db.get(Item, item_id)
    assert item.uri == str(first)  # the original is still there: not re-linked
    assert item.case_id is not None  # it had no case: it gains the one asked for
    assert len(items_of(db, project.id)) == 1


def test_moved_file_is_relinked(settings: Any, project: Any, db: Any, tmp_path: Path) -> None:
    original = jpeg(tmp_path / "old" / "x.jpg", seed=12)
    (item_id,) = ingest.ingest_paths(settings, project.id, [original]).items
    moved = tmp_path / "new" / "y.jpg"
    moved.parent.mkdir()
    original.rename(moved)
    with pytest.raises(LoupeError) as err:
        item_file_path(db.get(Item, item_id))
    assert err.value.code == ErrorCode.NOT_FOUND
    db.rollback()
    report = ingest.ingest_paths(settings, project.id, [moved])
    assert report.existing == 1 and report.items == [item_id]
    db.rollback()
    assert item_file_path(db.get(Item, item_id)) == moved


def test_same_bytes_twice_in_one_import(settings: Any, project: Any, tmp_path: Path) -> None:
    a = jpeg(tmp_path / "d" / "a.jpg", seed=13)
    shutil.copy(a, tmp_path / "d" / "b.jpg")
    report = ingest.ingest_paths(settings, project.id, [tmp_path / "d"])
    assert (report.imported, report.existing) == (1, 1)
    assert report.items[0] == report.items[1]


def test_case_pattern_parses_case_and_fields(
    settings: Any, project: Any, db: Any, tmp_path: Path
) -> None:
    root = tmp_path / "slides"
    for i, name in enumerate(
        [
            "S-3602-10X_Image001_ch00.tif",
            "S-3602-10X_Image002_ch01.tif",
            "S-1234-40X_Image007_ch00.tif",
            "unrelated.tif",
        ]
    ):
        tiff16(root / name, seed=i)
    report = ingest.ingest_paths(settings, project.id, [root], case_pattern=PATTERN)
    assert report.imported == 4
    cases = {c.id: c.name for c in db.scalars(select(Case).where(Case.project_id == project.id))}
    assert sorted(cases.values()) == ["S-1234", "S-3602"]
    items = {i.filename: i for i in items_of(db, project.id)}
    first = items["S-3602-10X_Image001_ch00.tif"]
    assert cases[first.case_id] == "S-3602"
    assert first.meta["serial"] == "001"
    assert first.meta["magnification"] == "10X"
    assert first.meta["channel"] == "00"
    assert cases[items["S-1234-40X_Image007_ch00.tif"].case_id] == "S-1234"
    assert items["unrelated.tif"].case_id is None
    assert items["unrelated.tif"].meta["case_pattern"] == ingest.NO_MATCH


def test_project_setting_pattern_is_the_default(
    settings: Any, make_project: Any, owner: Any, db: Any, tmp_path: Path
) -> None:
    project = make_project(owner, settings_={"case_pattern": PATTERN})
    path = jpeg(tmp_path / "S-77-20X_Image003_ch02.jpg")
    ingest.ingest_paths(settings, project.id, [path])
    (item,) = items_of(db, project.id)
    assert db.get(Case, item.case_id).name == "S-77" and item.meta["serial"] == "003"
    # An explicit case name wins over every pattern.
    other = jpeg(tmp_path / "S-78-20X_Image003_ch02.jpg", seed=5)
    ingest.ingest_paths(settings, project.id, [other], case_name="manual")
    assert db.get(Case, items_of(db, project.id)[1].case_id).name == "manual"


@pytest.mark.parametrize("pattern", [r"(?P<patient>\d+)", r"(?P<case>[", r"no groups"])
def test_invalid_case_pattern_is_rejected_up_front(
    settings: Any, project: Any, tmp_path: Path, pattern: str
) -> None:
    path = jpeg(tmp_path / "a.jpg")
    with pytest.raises(LoupeError) as err:
        ingest.ingest_paths(settings, project.id, [path], case_pattern=pattern)
    assert err.value.code == ErrorCode.INVALID
    assert not any(settings.thumbs_dir.rglob("*.jpg"))


def test_unknown_project_and_missing_path(settings: Any, project: Any, tmp_path: Path) -> None:
    with pytest.raises(LoupeError) as err:
        ingest.ingest_paths(settings, 999_999, [tmp_path])
    assert err.value.code == ErrorCode.NOT_FOUND
    report = ingest.ingest_paths(settings, project.id, [tmp_path / "nope"])
    assert report.failed == [{"path": str(tmp_path / "nope"), "reason": "file not found"}]


def test_decompression_bomb_is_reported(settings: Any, project: Any, tmp_path: Path) -> None:
    small = settings.model_copy(update={"max_pixels": 1000})
    path = jpeg(tmp_path / "big.jpg")  # 48 x 64 = 3072 pixels > 1000
    report = ingest.ingest_paths(small, project.id, [path])
    assert report.imported == 0
    assert "decompression bomb" in report.failed[0]["reason"]


def test_unexpected_error_fails_only_that_file(
    settings: Any, project: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loupe.services.items import ingest_files

    real = ingest_files.make_thumbnail

    def flaky(path: Any, **kwargs: Any) -> bytes:
        if Path(path).name == "b.jpg":
            raise RuntimeError("disk on fire")
        return real(path, **kwargs)

    monkeypatch.setattr(ingest_files, "make_thumbnail", flaky)
    for i, name in enumerate("abc"):
        jpeg(tmp_path / "d" / f"{name}.jpg", seed=20 + i)
    report = ingest.ingest_paths(settings, project.id, [tmp_path / "d"])
    assert report.imported == 2
    assert report.failed == [{"path": str(tmp_path / "d" / "b.jpg"), "reason": "disk on fire"}]


def test_copy_puts_files_in_media(settings: Any, project: Any, db: Any, tmp_path: Path) -> None:
    path = jpeg(tmp_path / "a.JPG", seed=30)
    ingest.ingest_paths(settings, project.id, [path], copy=True)
    (item,) = items_of(db, project.id)
    uri = Path(item.uri)
    assert uri.parent.parent == settings.media_dir and uri.name == f"{item.sha256}.jpg"
    assert uri.read_bytes() == path.read_bytes() and item.filename == "a.JPG"


def test_many_files_span_several_batches(settings: Any, project: Any, tmp_path: Path) -> None:
    n = ingest.BATCH + 7
    for i in range(n):
        jpeg(tmp_path / "many" / f"case{i % 3}" / f"{i:04d}.jpg", seed=1000 + i)
    report = ingest.ingest_paths(settings, project.id, [tmp_path / "many"])
    assert (report.imported, report.existing, report.failed) == (n, 0, [])
    assert len(set(report.items)) == n
    again = ingest.ingest_paths(settings, project.id, [tmp_path / "many"])
    assert (again.imported, again.existing) == (0, n) and again.items == report.items


# --- thumbnails and files of items ----------------------------------------------------


def test_thumbnail_is_rebuilt_when_missing(
    settings: Any, project: Any, db: Any, tmp_path: Path
) -> None:
    dicom_series(tmp_path / "ct")
    jpeg(tmp_path / "a.jpg")
    ingest.ingest_paths(settings, project.id, [tmp_path])
    for item in items_of(db, project.id):
        thumb = thumbnail_file(settings, item.sha256)
        thumb.unlink()
        assert thumbnail_path(settings, item) == thumb and thumb.is_file()
        assert max(Image.open(thumb).size) <= settings.thumbnail_size


# --- uploads ---------------------------------------------------------------------------


def test_save_upload_is_content_addressed(settings: Any, tmp_path: Path) -> None:
    data = jpeg(tmp_path / "x.jpg").read_bytes()
    path = ingest.save_upload(settings, io.BytesIO(data), "My Photo.JPG", max_bytes=10**6)
    assert path.read_bytes() == data
    assert path.parent.parent == settings.media_dir and path.suffix == ".jpg"
    chunks = [data[:100], data[100:]]
    assert ingest.save_upload(settings, iter(chunks), "again.jpg", max_bytes=10**6) == path


def test_save_upload_over_limit_leaves_nothing(settings: Any) -> None:
    with pytest.raises(LoupeError) as err:
        ingest.save_upload(settings, io.BytesIO(b"x" * 5000), "big.tif", max_bytes=4096)
    assert err.value.code == ErrorCode.TOO_LARGE and "big.tif" in err.value.message
    assert [p for p in settings.media_dir.rglob("*") if p.is_file()] == []


def test_ingest_uploaded_keeps_original_names(
    settings: Any, project: Any, db: Any, tmp_path: Path
) -> None:
    good = jpeg(tmp_path / "x.jpg", seed=40).read_bytes()
    saved = [
        ingest.save_upload_info(
            settings, io.BytesIO(good), "S-9-10X_Image004_ch00.jpg", max_bytes=10**6
        ),
        ingest.save_upload_info(
            settings, io.BytesIO(b"not an image"), "broken.png", max_bytes=10**6
        ),
    ]
    report = ingest.ingest_uploaded(settings, project.id, saved, case_pattern=PATTERN)
    assert report.imported == 1
    assert report.failed == [{"path": "broken.png", "reason": ingest.NOT_MEDIA}]
    (item,) = items_of(db, project.id)
    assert item.filename == "S-9-10X_Image004_ch00.jpg" and item.uri == str(saved[0].path)
    assert db.get(Case, item.case_id).name == "S-9"
    assert not saved[1].path.exists()  # a failed upload is not kept


# --- job --------------------------------------------------------------------------------


def test_ingest_job_runs_and_records_the_report(
    settings: Any, project: Any, owner: Any, db: Any, tmp_path: Path
) -> None:
    from loupe.jobs import core as jobs

    jpeg(tmp_path / "in" / "a.jpg")
    (tmp_path / "in" / "z.jpg").write_bytes(b"")
    job = jobs.submit(
        settings,
        kind="ingest",
        project_id=project.id,
        params={"project_id": project.id, "paths": [str(tmp_path / "in")]},
        user_id=owner.id,
    )
    db.rollback()
    row = db.get(Job, job.id)
    assert row.status == "done", row.error
    assert row.result["imported"] == 1 and row.result["failed"][0]["path"].endswith("z.jpg")
    assert row.progress == 1.0
