"""Pure parts of the response hardening (issue 11, item 6)."""

from __future__ import annotations

from pathlib import Path

from loupe.api.security import safe_media_type, scrub_paths


def test_scrub_paths_keeps_file_names_only() -> None:
    home = Path("/srv/loupe-data")
    text = "cannot read /srv/loupe-data/media/ab/x.png: truncated; also /data/slides/s1.tif"
    assert scrub_paths(text, [home]) == "cannot read media/ab/x.png: truncated; also s1.tif"
    assert scrub_paths("no API route /api/projects/1/x") == "no API route /api/projects/1/x"
    assert scrub_paths("item 3 (a/b.png) is gone") == "item 3 (a/b.png) is gone"


def test_user_files_never_get_a_renderable_type() -> None:
    assert safe_media_type("png") == "image/png"
    for fmt in ("html", "svg", None, ""):
        assert safe_media_type(fmt) == "application/octet-stream"
