"""The task-kind seam, proved: a kind defined only in this file ('count': one
integer per item) goes through create project -> label -> train -> drafts ->
export -> label import, with no change anywhere else in Loupe.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from PIL import Image
from pydantic import Field

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks import registry
from loupe.tasks.base import (
    Draft,
    ExportColumns,
    FitOutcome,
    ImportColumns,
    LabelValue,
    PredictionRow,
    Report,
    StrictModel,
    TrainingData,
)
from loupe.tasks.embedding import EmbeddingTaskKind, FeatureMap


class CountSchema(StrictModel):
    task: Literal["count"] = "count"
    max: int = Field(ge=1, le=10_000)


class CountKind(EmbeddingTaskKind):
    """One non-negative integer per item (e.g. cells in a field), drafted by ridge regression."""

    name = "count"
    title = "Count"
    description = "How many objects an image holds."
    schema_model = CountSchema
    label_kinds = ("count",)
    schema_file = "count.json"

    def check_value(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        n = (value.data or {}).get("count")
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= schema["max"]:
            raise LoupeError(ErrorCode.INVALID, f"count must be an integer 0-{schema['max']}")
        return LabelValue(kind="count", data={"count": n}, note=value.note)

    def label_from_draft(self, draft: Draft, *, item_id: int) -> LabelValue:
        return LabelValue(kind="count", data={"count": int(draft.output["count"])})

    def training_target(self, value: LabelValue) -> Any | None:
        return int((value.data or {})["count"])

    def check_trainable(self, data: TrainingData) -> None:
        if len(data.labels) < 3:
            raise LoupeError(ErrorCode.INVALID, "counting needs 3 labels")

    def fit_heads(
        self,
        settings: Any,
        data: TrainingData,
        feats: FeatureMap,
        labelled: list[int],
        ids: list[int],
        *,
        mode: str,
        members: list[str],
        report: Report,
    ) -> FitOutcome:
        from sklearn.linear_model import Ridge

        y = np.array([data.labels[i] for i in labelled], dtype=float)
        preds = []
        for x_lab, x_all in feats.values():
            preds.append(Ridge(alpha=1.0).fit(x_lab, y).predict(x_all))
        mean = np.clip(np.mean(preds, axis=0), 0, data.schema["max"])
        spread = np.std(preds, axis=0)
        rows = [
            PredictionRow(
                item_id=item_id,
                label=None,
                confidence=None,
                uncertainty=float(spread[r]),
                flagged=bool(spread[r] > 1.0),
                flag_reason="disagreement" if spread[r] > 1.0 else None,
                output={"count": round(float(mean[r]))},
                members={},
            )
            for r, item_id in enumerate(ids)
        ]
        return FitOutcome(
            predictions=rows,
            metrics={"ensemble": {"n": len(labelled)}},
            calibration={},
            params={},
            state={},
            trained_on_ids=labelled,
            label_counts={"counted": len(labelled)},
        )

    def export_columns(self, schema: Mapping[str, Any]) -> ExportColumns:
        return ExportColumns(
            label=("count",), draft=("draft_count",), needs=frozenset({"data", "pred_output"})
        )

    def label_cells(
        self, cols: ExportColumns, kind: str | None, label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        return [(extra.get("data") or {}).get("count", "") if kind == "count" else ""]

    def draft_cells(
        self, cols: ExportColumns, pred_label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        return [(extra.get("pred_output") or {}).get("count", "")]

    def import_columns(self, schema: Mapping[str, Any], header: Sequence[str]) -> ImportColumns:
        if "count" not in header:
            raise LoupeError(ErrorCode.INVALID, "the header needs a 'count' column")
        return ImportColumns(values=("count",))

    def parse_import_row(
        self,
        schema: Mapping[str, Any],
        cols: ImportColumns,
        row: Mapping[str, str],
        *,
        note: str | None,
    ) -> LabelValue | str | None:
        raw = row.get("count", "")
        if not raw:
            return None
        if not raw.isdigit():
            return f"count {raw!r} is not a whole number"
        return LabelValue(kind="count", data={"count": int(raw)}, note=note)


@pytest.fixture
def count_kind() -> Iterator[CountKind]:
    kind = registry.register(CountKind())
    yield kind
    registry.unregister("count")


def _dots(root: Path, n_images: int = 12) -> dict[str, int]:
    """Images with 0-5 bright disks on a dark textured background; name -> count."""
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    truth = {}
    yy, xx = np.mgrid[:96, :96]
    for k in range(n_images):
        count = k % 6
        image = rng.integers(0, 40, (96, 96)).astype(np.uint8)
        for d in range(count):
            cy, cx = 16 + (d // 3) * 40, 16 + (d % 3) * 30
            image[(yy - cy) ** 2 + (xx - cx) ** 2 < 80] = 230
        name = f"field_{k:02d}.png"
        Image.fromarray(np.stack([image] * 3, axis=-1)).save(root / name)
        truth[name] = count
    return truth


def test_a_kind_from_outside_goes_through_the_whole_loop(
    count_kind: CountKind, settings: Any, make_user: Any, login: Any, tmp_path: Path
) -> None:
    from loupe.services.items.ingest import ingest_paths

    owner = make_user()
    c = login(owner)
    info = c.get("/api/info").json()
    assert "count" in info["tasks"]
    assert "count" in info["registries"]["task_kinds"]
    assert any(k["name"] == "count" and k["trainable"] for k in info["task_kinds"])

    r = c.post(
        "/api/projects",
        json={
            "name": "Cells per field",
            "task": "count",
            "schema": {"max": 20},
            "settings": {"ensemble": ["classic"]},
        },
    )
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    bad = c.post("/api/projects", json={"name": "x", "task": "count", "schema": {"max": 0}})
    assert bad.status_code == 422

    truth = _dots(tmp_path / "fields")
    assert ingest_paths(settings, pid, [tmp_path / "fields"]).imported == len(truth)
    items = c.get(f"/api/projects/{pid}/items?limit=100").json()["data"]
    by_name = {i["filename"]: i["id"] for i in items}

    # labels: validated by the kind, refused when they do not fit
    url = f"/api/projects/{pid}/items/{by_name['field_00.png']}/label"
    assert c.put(url, json={"kind": "count", "data": {"count": 99}}).status_code == 422
    assert c.put(url, json={"kind": "class", "label": "x"}).status_code == 422
    labelled = sorted(truth)[:8]
    for name in labelled:
        r = c.put(
            f"/api/projects/{pid}/items/{by_name[name]}/label",
            json={"kind": "count", "data": {"count": truth[name]}},
        )
        assert r.status_code == 200, r.text

    # train: the generic job runs the kind's trainer; drafts for every item
    r = c.post(f"/api/projects/{pid}/train", json={})
    assert r.status_code == 202, r.text
    job = c.get(f"/api/jobs/{r.json()['id']}").json()
    assert job["status"] == "done", job
    unlabelled = [n for n in truth if n not in labelled]
    drafts = {}
    for name in unlabelled:
        preds = c.get(f"/api/projects/{pid}/items/{by_name[name]}/predictions").json()
        drafts[name] = preds["data"][0]["output"]["count"]
    assert set(drafts) == set(unlabelled)
    assert all(0 <= v <= 20 for v in drafts.values())

    # accept a draft: it becomes a label through the kind's label_from_draft
    target = by_name[unlabelled[0]]
    r = c.post(f"/api/projects/{pid}/predictions/accept", json={"item_ids": [target]})
    assert r.status_code == 200, r.text
    item = c.get(f"/api/projects/{pid}/items/{target}").json()
    assert item["annotation"]["data"] == {"count": drafts[unlabelled[0]]}

    # export: the kind's columns, human and draft side by side
    text = c.get(f"/api/projects/{pid}/export.csv").text
    rows = {r["filename"]: r for r in csv.DictReader(io.StringIO(text))}
    assert {"count", "draft_count"} <= set(rows[labelled[0]])
    for name in labelled:
        assert rows[name]["count"] == str(truth[name])
        assert rows[name]["label_origin"] == "human"
    assert all(rows[n]["draft_count"] != "" for n in truth)

    # label import: the kind parses its own column
    body = "filename,count\n" + "".join(f"{n},{truth[n]}\n" for n in unlabelled[1:4])
    r = c.post(
        f"/api/projects/{pid}/labels/import",
        data={"dry_run": "false"},
        files={"file": ("counts.csv", body.encode(), "text/csv")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["set"] == 3, r.json()
    for name in unlabelled[1:4]:
        item = c.get(f"/api/projects/{pid}/items/{by_name[name]}").json()
        assert item["annotation"]["data"] == {"count": truth[name]}
