"""File-system helpers: walking a folder and hashing files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from loupe.media import iter_media_files, sha256_file


def test_iter_media_files_is_recursive_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for relative in [
        "b.png",
        "a/z.tif",
        "a/notes.txt",
        "a.png",
        "c/d/e.dcm",
        "c/d/NOSUFFIX",
        ".hidden.png",
        ".cache/x.png",
        "a/.DS_Store",
    ]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_media_files(tmp_path)]
    assert found == ["a/notes.txt", "a/z.tif", "a.png", "b.png", "c/d/NOSUFFIX", "c/d/e.dcm"]
    assert found == sorted(found, key=lambda name: Path(name).parts)


def test_iter_media_files_rejects_missing_root(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="root"):
        list(iter_media_files(tmp_path / "missing"))


def test_sha256_file_matches_hashlib_for_any_chunk(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000 + b"tail"
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=7) == expected
    with pytest.raises(ValueError, match="chunk"):
        sha256_file(path, chunk=0)
