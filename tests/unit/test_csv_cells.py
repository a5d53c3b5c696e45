"""CSV formula escaping (issue 11, item 7): the pure function."""

from __future__ import annotations

import io

import pandas as pd

from loupe.services.exports.cells import escape_cell, unescape_cell
from loupe.services.exports.core import csv_text_chunks


def test_formula_like_text_gets_a_quote_and_numbers_do_not() -> None:
    for text in ("=1+2", "+cmd", "-x", "@SUM(A1)", "\tx", "\r=y", '=HYPERLINK("a")'):
        assert escape_cell(text) == "'" + text
        assert unescape_cell(escape_cell(text)) == text
    for value in ("-1.5", "+3", "-2e-3", "-.5", "plain", "", "a=b", 7, -1.5, None):
        assert escape_cell(value) == value
    assert unescape_cell("'quoted") == "'quoted"  # only Loupe's escape is undone


def test_csv_writer_escapes_by_default_and_pandas_keeps_numbers() -> None:
    rows = [["=1+2", "-1.5", -2], ["@x", "3", 4]]
    text = "".join(csv_text_chunks(["name", "num", "n"], rows, bom=False))
    frame = pd.read_csv(io.StringIO(text))
    assert list(frame["name"]) == ["'=1+2", "'@x"]
    assert frame["num"].dtype.kind == "f" and list(frame["num"]) == [-1.5, 3.0]
    raw = "".join(csv_text_chunks(["name"], [["=1+2"]], bom=False, raw=True))
    assert raw.splitlines()[1] == "=1+2"
