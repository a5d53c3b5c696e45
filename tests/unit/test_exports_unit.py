"""Pure parts of the exports: the deterministic split, dates, CSV chunks, archive names."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import Counter
from types import SimpleNamespace

import pytest

from loupe.errors import LoupeError
from loupe.services.exports.archive import DatasetOptions, ImageNamer, assign_split, split_unit
from loupe.services.exports.core import csv_text_chunks, iso, parse_when
from loupe.tasks import kind_of


def test_split_is_deterministic_and_follows_the_fractions() -> None:
    units = [split_unit(None, f"{i:064x}") for i in range(20_000)]
    first = [assign_split(u, 42, (0.8, 0.1, 0.1)) for u in units]
    assert first == [assign_split(u, 42, (0.8, 0.1, 0.1)) for u in units]
    share = Counter(first)
    assert abs(share["train"] / len(units) - 0.8) < 0.01
    assert abs(share["val"] / len(units) - 0.1) < 0.01
    other_seed = [assign_split(u, 43, (0.8, 0.1, 0.1)) for u in units]
    assert other_seed != first
    assert {assign_split(u, 1, (1.0, 0.0, 0.0)) for u in units[:500]} == {"train"}
    assert {assign_split(u, 1, (0.0, 0.0, 1.0)) for u in units[:500]} == {"test"}
    # a case is one unit: its items share a split whatever their hashes
    assert split_unit("S-1", "aa") == split_unit("S-1", "bb") == "case:S-1"


def test_bad_split_fractions_are_refused() -> None:
    with pytest.raises(LoupeError, match="add up to 1"):
        DatasetOptions(split=(0.5, 0.2, 0.2))
    with pytest.raises(LoupeError, match=">= 0"):
        DatasetOptions(split=(1.2, -0.2, 0.0))


def test_dates_parse_as_utc_and_a_bare_until_includes_the_day() -> None:
    assert parse_when("2025-03-01") == dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    assert parse_when("2025-03-01", end_of_day=True) == dt.datetime(2025, 3, 2, tzinfo=dt.UTC)
    assert parse_when("2025-03-01T10:30:00Z") == dt.datetime(2025, 3, 1, 10, 30, tzinfo=dt.UTC)
    assert parse_when("2025-03-01T10:30:00+02:00") == dt.datetime(2025, 3, 1, 8, 30, tzinfo=dt.UTC)
    assert parse_when(None) is None and parse_when("  ") is None
    with pytest.raises(LoupeError, match="ISO date"):
        parse_when("01/03/2025")
    assert iso(dt.datetime(2025, 3, 1, 8, 30, 5, 123, tzinfo=dt.UTC)) == "2025-03-01T08:30:05+00:00"
    assert iso(None) == ""


def test_csv_chunks_quote_and_split_at_any_size() -> None:
    rows = [[i, f'name "{i}", with comma', "línea\nnueva"] for i in range(5000)]
    chunks = list(csv_text_chunks(["id", "name", "note"], rows, bom=True))
    assert len(chunks) > 2 and chunks[0].startswith("\ufeffid,name,note\r\n")
    parsed = list(csv.reader(io.StringIO("".join(chunks).removeprefix("\ufeff"), newline="")))
    assert parsed[0] == ["id", "name", "note"] and len(parsed) == 5001
    assert parsed[4001] == ["4000", 'name "4000", with comma', "línea\nnueva"]
    assert "".join(csv_text_chunks(["a"], [], bom=False)) == "a\r\n"


def _row(i: int, filename: str, label: str | None, sha: str = "ab" * 32) -> SimpleNamespace:
    return SimpleNamespace(
        id=i, filename=filename, sha256=sha, kind="class" if label else None, label=label
    )


def test_image_names_follow_imagefolder_and_never_collide_or_escape() -> None:
    namer = ImageNamer(kind_of("classify"))
    assert namer.name(_row(1, "a.png", "blast")) == "images/blast/a.png"
    assert namer.name(_row(2, "a.png", "blast", "cd" * 32)) == "images/blast/a-cdcdcdcdcd.png"
    assert namer.name(_row(3, "A.PNG", "blast", "cd" * 32)) == "images/blast/A-3.PNG"
    assert namer.name(_row(4, "a.png", None)) == "images/_unlabeled/a.png"
    assert namer.name(_row(5, "../x.png", "..")) == "images/_unlabeled/.._x.png"
    assert ImageNamer(kind_of("score")).name(_row(6, "s.tif", None)) == "images/s.tif"
