"""``score``: several numeric metrics per item (e.g. fibrosis 0-4), drafted by regression.

Schema ``{"metrics": [{"name", "min", "max", "step", "description"}]}``. A label
is ``{metric: value}`` on each metric's step grid; a partly scored item is
kept but trains nothing. The model is a ridge head per member and metric
(:func:`loupe.learn.train.train_score_ensemble`), snapped to the step grid.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, model_validator

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.base import (
    OTHER_COLORS,
    Draft,
    ExportColumns,
    FitOutcome,
    ImportColumns,
    LabelValue,
    Name,
    PredictionRow,
    Report,
    ReportGroups,
    StrictModel,
    TrainingData,
    number_cell,
    unique,
)
from loupe.tasks.embedding import (
    EmbeddingTaskKind,
    FeatureMap,
    SavedVersion,
    novelty_state,
    review_budget,
    saved_novelty,
)

if TYPE_CHECKING:
    from loupe.learn.train import ScorePredictions
    from loupe.reports.case_report import MetricSummary
    from loupe.settings import Settings

MIN_SCORED = 3


class MetricDef(StrictModel):
    name: Name
    min: float = 0.0
    max: float = 4.0
    step: float = 1.0
    description: str = Field(default="", max_length=2000)

    @model_validator(mode="after")
    def _range(self) -> MetricDef:
        if not self.max > self.min:
            raise ValueError(f"metric {self.name!r}: max ({self.max}) must exceed min ({self.min})")
        if not 0 < self.step <= self.max - self.min:
            raise ValueError(f"metric {self.name!r}: step ({self.step}) must be in (0, max-min]")
        return self


class ScoreSchema(StrictModel):
    task: Literal["score"] = "score"
    metrics: list[MetricDef] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _unique_names(self) -> ScoreSchema:
        unique([m.name for m in self.metrics], "metric name")
        return self


def draft_scores(draft: Draft) -> dict[str, Any]:
    return dict((draft.output or {}).get("scores") or {})


def scores_text(scores: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{k} {float(v):g}" for k, v in sorted((scores or {}).items()))


class ScoreKind(EmbeddingTaskKind):
    name = "score"
    title = "Score"
    description = "Numeric scores on several metrics per image; regression drafts every metric."
    schema_model = ScoreSchema
    label_kinds = ("scores",)
    schema_file = "metrics.json"
    heads = ("ridge",)

    # --- schema and labels -------------------------------------------------------------

    def schema_from_cli(
        self, *, classes: str | None = None, metrics: str | None = None
    ) -> dict[str, Any]:
        if not metrics:
            if classes:
                raise LoupeError(ErrorCode.INVALID, "score projects take --metrics, not --classes")
            raise LoupeError(ErrorCode.INVALID, "give --classes, --metrics or --schema")
        out = []
        for spec in metrics.split(","):
            parts = spec.strip().split(":")
            if len(parts) not in (1, 3, 4):
                raise LoupeError(
                    ErrorCode.INVALID, f"metric {spec!r}: use name or name:min:max[:step]"
                )
            m: dict[str, Any] = {"name": parts[0]}
            try:
                if len(parts) >= 3:
                    m["min"], m["max"] = float(parts[1]), float(parts[2])
                if len(parts) == 4:
                    m["step"] = float(parts[3])
            except ValueError as exc:
                raise LoupeError(ErrorCode.INVALID, f"metric {spec!r}: {exc}") from exc
            out.append(m)
        return self.validate_schema({"metrics": out})

    def label_names(self, schema: Mapping[str, Any]) -> list[str]:
        return [m["name"] for m in schema.get("metrics", [])]

    def check_value(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        scores = value.scores or {}
        metrics = {m["name"]: m for m in schema.get("metrics", [])}
        unknown = sorted(set(scores) - set(metrics))
        if unknown:
            raise LoupeError(
                ErrorCode.INVALID, f"unknown metric(s) {unknown}; known: {list(metrics)}"
            )
        if not scores:
            raise LoupeError(ErrorCode.INVALID, "scores must name at least one metric")
        out: dict[str, float] = {}
        for name, raw in scores.items():
            m = metrics[name]
            if isinstance(raw, bool) or not isinstance(raw, int | float) or math.isnan(raw):
                raise LoupeError(ErrorCode.INVALID, f"score {name!r}={raw!r} is not a number")
            v = float(raw)
            if not m["min"] <= v <= m["max"]:
                raise LoupeError(
                    ErrorCode.INVALID, f"score {name!r}={v} is outside [{m['min']}, {m['max']}]"
                )
            steps = (v - m["min"]) / m["step"]
            if abs(steps - round(steps)) > 1e-6:
                raise LoupeError(
                    ErrorCode.INVALID, f"score {name!r}={v} is not on the step {m['step']} grid"
                )
            out[name] = v
        return LabelValue(kind="scores", scores=out, note=value.note)

    def label_from_draft(self, draft: Draft, *, item_id: int) -> LabelValue:
        scores = draft_scores(draft)
        if not scores:
            raise LoupeError(ErrorCode.CONFLICT, f"item {item_id}'s draft has no scores")
        return LabelValue(kind="scores", scores=scores)

    def agrees(self, value: LabelValue, draft: Draft) -> bool:
        drafted = draft_scores(draft)
        mine = value.scores or {}
        return value.kind == "scores" and all(
            abs(float(mine[k]) - float(drafted.get(k, float("nan")))) < 1e-9 for k in mine
        )

    def label_text(self, value: LabelValue) -> str:
        return scores_text(value.scores) if value.kind == "scores" else value.kind

    def draft_text(self, draft: Draft) -> str:
        return scores_text(draft_scores(draft)) or "-"

    def training_target(self, value: LabelValue) -> Any | None:
        return value.scores if value.kind == "scores" else None

    # --- training ----------------------------------------------------------------------

    def check_trainable(self, data: TrainingData) -> None:
        if len(data.labels) < MIN_SCORED:
            raise LoupeError(
                ErrorCode.INVALID,
                f"training needs at least {MIN_SCORED} scored items; have {len(data.labels)}",
            )

    def fit_heads(
        self,
        settings: Settings,
        data: TrainingData,
        feats: FeatureMap,
        labelled: list[int],
        ids: list[int],
        *,
        mode: str,
        members: list[str],
        report: Report,
    ) -> FitOutcome:
        if mode == "finetune":
            raise LoupeError(ErrorCode.INVALID, "fine-tune mode is for class projects")
        return _fit_scores(data, feats, labelled, ids)

    def draft_items(
        self,
        settings: Settings,
        saved: SavedVersion,
        ids: list[int],
        member_x: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray],
        sources: Mapping[int, Any],
    ) -> list[PredictionRow]:
        from loupe.learn import ScoreHead
        from loupe.learn.state import state_from_bytes
        from loupe.learn.train import score_drafts

        specs = [dict(m) for m in saved.state["metrics"]]
        names = [str(m["name"]) for m in specs]
        member_raw = {
            m: ScoreHead.from_state(
                state_from_bytes(np.asarray(saved.state[f"head_{m}"]).tobytes())
            ).predict(member_x[m])
            for m in saved.members
        }
        conformal = saved.metrics.get("conformal") or {}
        radius = conformal.get("radius")
        budget = saved.params.get("review_budget")
        predictions, _ = score_drafts(
            member_raw,
            specs,
            radius=None if not radius else np.array([float(radius[n]) for n in names]),
            novelty=saved_novelty(saved, member_x, reference),
            max_interval_steps=float(conformal.get("max_interval_steps", 2.0)),
            max_flag_fraction=None if budget is None else float(budget),
        )
        return _score_rows(ids, names, predictions)

    # --- export and import -------------------------------------------------------------

    def export_columns(self, schema: Mapping[str, Any]) -> ExportColumns:
        names = self.label_names(schema)
        return ExportColumns(
            label=tuple(f"score_{m}" for m in names),
            draft=tuple(f"draft_{m}" for m in names),
            needs=frozenset({"scores", "pred_output"}),
            keys=tuple(names),
        )

    def label_cells(
        self, cols: ExportColumns, kind: str | None, label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        scores = (extra.get("scores") or {}) if kind == "scores" else {}
        return [number_cell(scores.get(m)) for m in cols.keys]

    def draft_cells(
        self, cols: ExportColumns, pred_label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        drafted = (extra.get("pred_output") or {}).get("scores") or {}
        return [number_cell(drafted.get(m)) for m in cols.keys]

    def import_columns(self, schema: Mapping[str, Any], header: Sequence[str]) -> ImportColumns:
        by_key: dict[str, str] = {}
        for m in self.label_names(schema):
            for candidate in (f"score_{m}".lower(), m.lower()):
                if candidate in header:
                    by_key[m] = candidate
                    break
        if not by_key:
            raise LoupeError(
                ErrorCode.INVALID,
                "the header names none of the project's metrics "
                f"({self.label_names(schema)}); found {list(header)}",
            )
        return ImportColumns(values=tuple(by_key.values()), by_key=by_key)

    def parse_import_row(
        self,
        schema: Mapping[str, Any],
        cols: ImportColumns,
        row: Mapping[str, str],
        *,
        note: str | None,
    ) -> LabelValue | str | None:
        scores: dict[str, float] = {}
        for metric, column in cols.by_key.items():
            raw = row.get(column, "")
            if not raw:
                continue
            try:
                text = raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw
                value = float(text)
            except ValueError:
                return f"score {metric!r}={raw!r} is not a number"
            if math.isnan(value):
                return f"score {metric!r} is NaN"
            scores[metric] = value
        if not scores:
            return None
        try:
            return self.check_value(schema, LabelValue(kind="scores", scores=scores, note=note))
        except LoupeError as exc:
            return exc.message

    # --- reports -----------------------------------------------------------------------

    def model_summary(self, metrics: Mapping[str, Any]) -> str:
        ens = (metrics or {}).get("ensemble") or {}
        per = ens.get("per_metric") or {}
        parts = [
            f"{k} MAE {v['mae']:.2f}"
            + (f" (95% CI {v['mae_ci'][0]:.2f}-{v['mae_ci'][1]:.2f})" if v.get("mae_ci") else "")
            for k, v in sorted(per.items())
            if v.get("mae") is not None
        ]
        return ("cross-validated " + ", ".join(parts)) if parts else ""

    def report_groups(
        self, schema: Mapping[str, Any], labelled: Sequence[tuple[int, LabelValue]]
    ) -> ReportGroups:
        counts: dict[str, int] = {}
        groups: dict[str, list[int]] = {}
        first = (schema.get("metrics") or [{}])[0].get("name")
        for item_id, value in labelled:
            key = "scored" if value.kind == "scores" else value.kind
            counts[key] = counts.get(key, 0) + 1
            scores = value.scores or {}
            if value.kind == "scores" and first and first in scores:
                groups.setdefault(f"{first} = {float(scores[first]):g}", []).append(item_id)
        return ReportGroups(
            counts=[(k, counts[k], OTHER_COLORS.get(k, "#9e9e9e")) for k in sorted(counts)],
            groups=groups,
            order=sorted(groups, key=lambda g: float(g.rsplit("= ", 1)[1])),
            colors={},
        )

    def report_metrics(
        self,
        schema: Mapping[str, Any],
        labelled: Sequence[LabelValue],
        drafts: Sequence[Draft],
    ) -> list[MetricSummary]:
        from loupe.reports.case_report import MetricSummary

        out = []
        for m in schema.get("metrics", []):
            name = m["name"]
            values = sorted(
                float(v.scores[name])
                for v in labelled
                if v.kind == "scores" and v.scores and name in v.scores
            )
            drafted = [float(draft_scores(d)[name]) for d in drafts if name in draft_scores(d)]
            out.append(
                MetricSummary(
                    name=name,
                    values=values,
                    min=float(m["min"]),
                    max=float(m["max"]),
                    step=float(m["step"]),
                    draft_mean=sum(drafted) / len(drafted) if drafted else None,
                )
            )
        return out


def _interval(
    names: Sequence[str],
    lo: np.ndarray[Any, Any] | None,
    hi: np.ndarray[Any, Any] | None,
    row: int,
) -> dict[str, list[float]] | None:
    """``{metric: [lo, hi]}`` for one item, or ``None`` when the model has no intervals."""
    if lo is None or hi is None:
        return None
    return {
        n: [round(float(a), 4), round(float(b), 4)]
        for n, a, b in zip(names, lo[row], hi[row], strict=True)
    }


def _score_rows(ids: Sequence[int], names: list[str], p: ScorePredictions) -> list[PredictionRow]:
    """One prediction row per item: the ensemble's snapped scores, members', triage."""
    rows = []
    for r, item_id in enumerate(ids):
        scores = {n: float(v) for n, v in zip(names, p.values[r], strict=True)}
        members = {
            m: {"scores": {n: float(v) for n, v in zip(names, mv[r], strict=True)}}
            for m, mv in p.member_values.items()
        }
        rows.append(
            PredictionRow(
                item_id=int(item_id),
                label=None,
                confidence=None,
                uncertainty=float(p.uncertainty[r]),
                flagged=bool(p.flagged[r]),
                flag_reason=p.reason[r],
                output={
                    "scores": scores,
                    "novel": bool(p.novel[r]),
                    "raw": {n: round(float(v), 4) for n, v in zip(names, p.raw[r], strict=True)},
                    "interval": _interval(names, p.interval_lo, p.interval_hi, r),
                },
                members=members,
            )
        )
    return rows


def _fit_scores(
    data: TrainingData,
    feats: FeatureMap,
    labelled: list[int],
    ids: list[int],
) -> FitOutcome:
    from loupe.learn.state import state_to_bytes
    from loupe.learn.train import train_score_ensemble

    metrics = data.schema["metrics"]
    names = [m["name"] for m in metrics]
    # A partly scored item trains the metrics it has; the others take the
    # metric's midpoint would bias them, so train only on complete rows.
    complete = [i for i in labelled if all(n in (data.labels[i] or {}) for n in names)]
    if len(complete) < MIN_SCORED:
        raise LoupeError(
            ErrorCode.INVALID,
            f"training needs at least {MIN_SCORED} items scored on every metric; "
            f"have {len(complete)}",
        )
    keep = np.array([labelled.index(i) for i in complete], dtype=np.int64)
    feats = {m: (xl[keep], xa) for m, (xl, xa) in feats.items()}
    Y = np.array([[float(data.labels[i][n]) for n in names] for i in complete])
    result = train_score_ensemble(feats, Y, metrics, max_flag_fraction=review_budget(data.settings))
    rows = _score_rows(ids, names, result.predictions)
    state: dict[str, Any] = {
        f"head_{m}": np.frombuffer(state_to_bytes(s), dtype=np.uint8)
        for m, s in result.heads.items()
    }
    state.update({"metrics": metrics, "members": result.member_names})
    state.update(novelty_state(result.novelty, complete))
    return FitOutcome(
        predictions=rows,
        metrics=result.metrics_json(),
        calibration={},
        params={"metrics": names, "review_budget": review_budget(data.settings)},
        state=state,
        trained_on_ids=complete,
        label_counts={"scored": len(complete)},
    )
