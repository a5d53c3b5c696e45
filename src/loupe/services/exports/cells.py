"""CSV cells that spreadsheets cannot run as formulas (CSV injection).

Excel, LibreOffice and Google Sheets treat a cell starting with ``=``, ``+``,
``-`` or ``@`` (and, after a tab or carriage return, those too) as a formula.
File names, case names, class names and notes come from users, so every
export escapes such text cells with a leading single quote, which the
spreadsheet shows as plain text. Numbers are never touched: ``-1.5`` stays a
number for pandas and spreadsheets alike. ``raw=True`` on an export turns the
escaping off; importers undo it (:func:`unescape_cell`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(value: Any) -> Any:
    """``value``, with a ``'`` in front when it is text a spreadsheet would run.

    Non-strings (numbers, None) and strings that are plain numbers pass as
    they are.
    """
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS):
        return value
    if _NUMBER.fullmatch(value):
        return value
    return "'" + value


def escape_row(row: Sequence[Any]) -> list[Any]:
    """Every cell of ``row`` through :func:`escape_cell`."""
    return [escape_cell(v) for v in row]


def escape_rows(rows: Iterable[Sequence[Any]]) -> Iterable[list[Any]]:
    return (escape_row(r) for r in rows)


def unescape_cell(value: str) -> str:
    """Undo :func:`escape_cell` for a cell read back from a Loupe export."""
    if len(value) > 1 and value[0] == "'" and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value
