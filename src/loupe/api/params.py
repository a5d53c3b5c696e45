"""Bounded path and query parameters: ids and offsets that fit their columns.

Primary keys are ``Integer`` columns (int4 on PostgreSQL), so an id above
2**31-1 cannot exist; without a bound such a value reaches the driver and
fails there (SQLite: OverflowError, a 500). Offsets get the same bound.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

MAX_ID = 2**31 - 1
MAX_OFFSET = 2**31 - 1

Id = Annotated[int, Path(ge=1, le=MAX_ID)]
OptionalIdQuery = Annotated[int | None, Query(ge=1, le=MAX_ID)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
