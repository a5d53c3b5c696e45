"""Database side of an import: the report, case rules and batched item writes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loupe.db.models import Case, Item
from loupe.db.session import session_scope
from loupe.services.items.ingest_files import Probed, Source
from loupe.services.projects.case_pattern import CasePattern
from loupe.settings import Settings

BATCH = 200  # items per transaction
NO_MATCH = "no match"  # item.meta["case_pattern"] when the pattern misses the file name


@dataclass
class IngestReport:
    """What one import did. ``items``: the item id of every file imported or found."""

    imported: int = 0
    existing: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    items: list[int] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.failed.append({"path": path, "reason": reason})

    def to_json(self) -> dict[str, Any]:
        """The summary the CLI prints and jobs store (``items`` left out: it can be long)."""
        return {
            "imported": self.imported,
            "existing": self.existing,
            "failed": [{"path": f["path"], "reason": f["reason"]} for f in self.failed],
        }


@dataclass(frozen=True)
class CaseRule:
    """How a file finds its case: explicit name, else pattern, else folder."""

    name: str | None = None
    pattern: CasePattern | None = None  # RE2: linear time on any file name

    def resolve(self, source: Source) -> tuple[str | None, dict[str, Any]]:
        """``(case name or None, fields for item.meta)`` for one file."""
        if self.name:
            return self.name, {}
        if self.pattern is not None:
            match = self.pattern.search(source.name)
            if match is None:
                return None, {"case_pattern": NO_MATCH}
            fields = {k: v for k, v in match.groupdict().items() if v is not None}
            case = (fields.pop("case", None) or "").strip()
            return case or None, fields
        return source.folder_case, {}


def _insert(db: Session, model: type[Any]) -> Any:
    # ON CONFLICT DO NOTHING exists in both dialects we support, spelled per dialect.
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(model)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(model)


class ItemWriter:
    """Buffers probed files and writes them ``BATCH`` at a time, one transaction each.

    Existing items (same sha256 in the project) are never rewritten: they only
    gain a case if they had none, and follow their file if it left its old path.
    """

    def __init__(self, settings: Settings, project_id: int, rule: CaseRule, user_id: int | None):
        self.settings = settings
        self.project_id = project_id
        self.rule = rule
        self.user_id = user_id
        self.report = IngestReport()
        self.linked: set[str] = set()  # file paths referenced by an item of this import
        self._buffer: list[Probed] = []
        self._seen: dict[str, int] = {}  # sha256 -> item id, across batches
        self._cases: dict[str, int] = {}

    def add(self, probed: Probed) -> None:
        self._buffer.append(probed)
        if len(self._buffer) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        with session_scope(self.settings.db_url) as db:
            self._write(db, batch)

    def _write(self, db: Session, batch: list[Probed]) -> None:
        shas = {p.sha256 for p in batch if p.sha256 not in self._seen}
        existing = {
            item.sha256: item
            for item in db.scalars(
                select(Item).where(Item.project_id == self.project_id, Item.sha256.in_(shas))
            )
        }
        plan: list[tuple[Probed, Item | None, str | None, dict[str, Any]]] = []
        planned: set[str] = set()
        for probed in batch:
            sha = probed.sha256
            if sha in self._seen or sha in planned:
                continue  # the same bytes twice in one import: the second is 'existing'
            planned.add(sha)
            item = existing.get(sha)
            case, fields = self.rule.resolve(probed.source)
            if item is not None and item.case_id is not None:
                case = None  # an item keeps the case it has
            plan.append((probed, item, case, fields))
        case_ids = self._case_ids(db, {case for _, _, case, _ in plan if case})
        rows: list[dict[str, Any]] = []
        for probed, item, case, fields in plan:
            case_id = case_ids[case] if case else None
            if item is not None:
                self._update_existing(item, probed, case_id, fields)
                self._seen[probed.sha256] = item.id
            else:
                rows.append(self._row(probed, case_id, fields))
        inserted = self._insert_items(db, rows) if rows else set()
        for probed in batch:
            sha = probed.sha256
            self.report.items.append(self._seen[sha])
            if sha in inserted:
                self.report.imported += 1
                inserted.discard(sha)  # the same bytes again later in the batch: existing
            else:
                self.report.existing += 1

    def _insert_items(self, db: Session, rows: list[dict[str, Any]]) -> set[str]:
        """Insert rows; returns the sha256 of those inserted (others won a race)."""
        stmt = (
            _insert(db, Item)
            .on_conflict_do_nothing(index_elements=["project_id", "sha256"])
            .returning(Item.id, Item.sha256)
        )
        inserted = {sha: item_id for item_id, sha in db.execute(stmt, rows)}
        self._seen.update(inserted)
        lost = [r["sha256"] for r in rows if r["sha256"] not in inserted]
        if lost:
            found = db.execute(
                select(Item.sha256, Item.id).where(
                    Item.project_id == self.project_id, Item.sha256.in_(lost)
                )
            )
            self._seen.update(dict(found.all()))
        for row in rows:
            if row["sha256"] in inserted:
                self.linked.update(row["files"] or [row["uri"]])
        return set(inserted)

    def _row(self, probed: Probed, case_id: int | None, fields: dict[str, Any]) -> dict[str, Any]:
        info = probed.info
        media: dict[str, Any] = dict(info.extra)
        if info.pages > 1:
            media["pages"] = info.pages
        meta = {**fields, "media": media} if media else dict(fields)
        return {
            "project_id": self.project_id,
            "case_id": case_id,
            "sha256": probed.sha256,
            "uri": str(probed.uri),
            "files": probed.files,
            "filename": probed.source.name[:500],
            "format": info.format[:16],
            "kind": info.kind[:16],
            "shape": [int(n) for n in info.shape],
            "dtype": info.dtype[:16],
            "axes": info.axes[:8],
            "spacing": [float(s) for s in info.spacing] if info.spacing else None,
            "size_bytes": probed.size_bytes,
            "meta": meta,
            "status": "ready",
            "created_by": self.user_id,
        }

    def _update_existing(
        self, item: Item, probed: Probed, case_id: int | None, fields: dict[str, Any]
    ) -> None:
        if item.case_id is None and case_id is not None:
            item.case_id = case_id
            item.meta = {**fields, **(item.meta or {})}
        if not all(Path(p).is_file() for p in (item.files or [item.uri])):
            # Its file was moved or renamed: follow it, so the item shows again.
            item.uri = str(probed.uri)
            item.files = probed.files
        self.linked.update(item.files or [item.uri])

    def _case_ids(self, db: Session, names: set[str]) -> dict[str, int]:
        missing = names - self._cases.keys()
        if missing:
            found = self._lookup_cases(db, missing)
            to_create = missing - found.keys()
            if to_create:
                stmt = _insert(db, Case).on_conflict_do_nothing(
                    index_elements=["project_id", "name"]
                )
                db.execute(stmt, [{"project_id": self.project_id, "name": n} for n in to_create])
                found.update(self._lookup_cases(db, to_create))
            self._cases.update(found)
        return {n: self._cases[n] for n in names}

    def _lookup_cases(self, db: Session, names: set[str]) -> dict[str, int]:
        rows = db.execute(
            select(Case.name, Case.id).where(
                Case.project_id == self.project_id, Case.name.in_(names)
            )
        )
        return dict(rows.all())
