"""The task-kind seam: everything a project's task decides, behind one interface.

A project's ``task`` (classify, score, segment, volume, ...) names a
:class:`TaskKind` in :mod:`loupe.tasks.registry`. Services, routers, exports and
reports ask the kind; they never compare the task to a constant. A new kind is
one module that subclasses :class:`TaskKind` and is registered by
:mod:`loupe.plugins` (or by a test): nothing else changes.

What a kind decides:

- its label schema (a Pydantic model) and how labels are validated;
- how a model's draft becomes a label when a person accepts it;
- its trainer: load the human labels -> fit and predict -> write predictions
  (:meth:`TaskKind.load_training_data`, :meth:`TaskKind.fit_and_predict`,
  :meth:`TaskKind.write_predictions`);
- its CSV / ZIP columns and how a CSV row becomes a label;
- what the case report shows;
- what ``/api/info`` says about it.

The shared types (:class:`LabelValue`, :class:`TrainingData`,
:class:`PredictionRow`, :class:`FitOutcome`) live here so that every kind and
every service speaks the same language.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ValidationError

from loupe.errors import ErrorCode, LoupeError
from loupe.reports.sections import ReportText
from loupe.tasks.types import (
    DECISION_KINDS,
    NONE_KIND,
    OTHER_COLORS,
    PALETTE,
    RESERVED_LABELS,
    Draft,
    ExportColumns,
    FitOutcome,
    ImportColumns,
    LabelValue,
    Name,
    PredictionRow,
    ReportGroups,
    StrictModel,
    TrainingData,
    check_color,
    errors_text,
    number_cell,
    unique,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from loupe.db.models import Project
    from loupe.reports.case_report import MetricSummary
    from loupe.settings import Settings

Report = Callable[[float, str], None]
__all__ = [
    "DECISION_KINDS",
    "NONE_KIND",
    "OTHER_COLORS",
    "PALETTE",
    "RESERVED_LABELS",
    "Draft",
    "ExportColumns",
    "FitOutcome",
    "ImportColumns",
    "LabelValue",
    "Name",
    "PredictionRow",
    "Report",
    "ReportGroups",
    "ReportText",
    "StrictModel",
    "TaskKind",
    "TrainingData",
    "check_color",
    "errors_text",
    "number_cell",
    "unique",
]


# --- the interface ---------------------------------------------------------------------


class TaskKind(ABC):
    """One task kind. Subclasses set the class attributes and the abstract methods.

    Class attributes:

    ``name``           the project's ``task`` value
    ``title``          a human name ('Classify')
    ``description``    one sentence for ``/api/info`` and the new-project form
    ``schema_model``   the Pydantic model of the project schema (``task`` field included)
    ``label_kinds``    the label kinds it takes besides unsure / skip
    ``trainable``      whether the generic training job trains it
    ``schema_file``    the schema's file name in a dataset ZIP
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    schema_model: ClassVar[type[BaseModel]]
    label_kinds: ClassVar[tuple[str, ...]]
    trainable: ClassVar[bool] = False
    schema_file: ClassVar[str] = "classes.json"
    heads: ClassVar[tuple[str, ...]] = ()  # head names the kind can train (head registry)

    # --- schema ----------------------------------------------------------------------

    def validate_schema(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and normalise a project schema; return it as plain JSON data."""
        try:
            model = self.schema_model.model_validate({**schema, "task": self.name})
        except ValidationError as exc:
            raise LoupeError(
                ErrorCode.INVALID, f"invalid {self.name} schema: {errors_text(exc)}"
            ) from exc
        return model.model_dump(mode="json")

    def schema_from_cli(
        self, *, classes: str | None = None, metrics: str | None = None
    ) -> dict[str, Any]:
        """Build a schema from ``--classes a,b,c`` (``--metrics`` belongs to score)."""
        if metrics:
            raise LoupeError(ErrorCode.INVALID, "--metrics is only for --task score")
        if classes:
            names = [c.strip() for c in classes.split(",") if c.strip()]
            return self.validate_schema({"classes": [{"name": n} for n in names]})
        raise LoupeError(ErrorCode.INVALID, "give --classes, --metrics or --schema")

    def label_names(self, schema: Mapping[str, Any]) -> list[str]:
        """The names a label can take (classes; metrics for score)."""
        return [c["name"] for c in schema.get("classes", [])]

    def kept_labels(self, schema: Mapping[str, Any]) -> set[str] | None:
        """Values of ``Annotation.label`` a new schema still allows (None: no check)."""
        return None

    def schema_entry(self, schema: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """``(file name, body)`` of the schema in a dataset ZIP."""
        key = self.schema_file.removesuffix(".json")
        return self.schema_file, {"task": self.name, key: list(schema.get(key, []))}

    def schema_from_entry(self, body: Mapping[str, Any] | None) -> dict[str, Any]:
        """The project schema from a dataset ZIP's schema file."""
        key = self.schema_file.removesuffix(".json")
        if not body or key not in body:
            raise LoupeError(
                ErrorCode.INVALID, f"the ZIP has no {self.schema_file} for its {self.name} project"
            )
        return {key: body[key]}

    # --- labels ----------------------------------------------------------------------

    def validate_label(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        """Check that a label fits the project; return it normalised."""
        if value.kind in DECISION_KINDS:
            return LabelValue(kind=value.kind, note=value.note)
        if value.kind not in self.label_kinds:
            known = [*self.label_kinds, *DECISION_KINDS]
            raise LoupeError(
                ErrorCode.INVALID,
                f"a {self.name} project does not take {value.kind!r} labels; use one of {known}",
            )
        return self.check_value(schema, value)

    @abstractmethod
    def check_value(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        """Validate a label of one of :attr:`label_kinds`; return it normalised."""

    def label_from_draft(self, draft: Draft, *, item_id: int) -> LabelValue:
        """The label a person accepts from a draft (CONFLICT when it has none)."""
        raise LoupeError(ErrorCode.CONFLICT, f"{self.name} drafts cannot be accepted as labels")

    def agrees(self, value: LabelValue, draft: Draft) -> bool:
        """Whether a human label equals the draft."""
        return False

    def label_text(self, value: LabelValue) -> str:
        """A human label as short text (reports, messages)."""
        return value.label if value.label is not None else value.kind

    def draft_text(self, draft: Draft) -> str:
        return draft.label or "-"

    # --- training --------------------------------------------------------------------

    def training_target(self, value: LabelValue) -> Any | None:
        """What a human label trains (None: the label does not train)."""
        return None

    def load_training_data(self, db: Session, project: Project) -> TrainingData:
        """Items and human labels of the project (one read transaction)."""
        from sqlalchemy import select

        from loupe.db.models import Annotation, Item

        if not self.trainable:
            raise LoupeError(
                ErrorCode.INVALID, f"{self.name} projects are trained by their own trainer"
            )
        rows = db.execute(
            select(Item.id, Item.uri, Item.files)
            .where(Item.project_id == project.id, Item.status != "error")
            .order_by(Item.id)
        ).all()
        labels: dict[int, Any] = {}
        for item_id, kind, label, scores, data in db.execute(
            select(
                Annotation.item_id,
                Annotation.kind,
                Annotation.label,
                Annotation.scores,
                Annotation.data,
            ).where(
                Annotation.project_id == project.id,
                Annotation.kind.in_(self.label_kinds),
                Annotation.origin.in_(("human", "model_accepted")),
            )
        ):
            target = self.training_target(
                LabelValue(kind=kind, label=label, scores=scores, data=data)
            )
            if target is not None:
                labels[item_id] = target
        return TrainingData(
            project_id=project.id,
            task=project.task,
            schema=dict(project.schema),
            settings=dict(project.settings),
            items=[(i, files if files else uri) for i, uri, files in rows],
            labels=labels,
        )

    def check_trainable(self, data: TrainingData) -> None:
        """Raise a clear INVALID when the labels cannot train a model yet."""
        raise LoupeError(ErrorCode.INVALID, f"{self.name} projects have no trainer")

    def fit_and_predict(
        self,
        settings: Settings,
        data: TrainingData,
        version_id: int,
        *,
        mode: str,
        report: Report,
    ) -> FitOutcome:
        """Fit the model on ``data`` and predict every item."""
        raise LoupeError(ErrorCode.INVALID, f"{self.name} projects have no trainer")

    def write_predictions(
        self, settings: Settings, project_id: int, version_id: int, outcome: FitOutcome
    ) -> None:
        """Store the outcome's predictions (before the version becomes active)."""
        from loupe.tasks.predictions import insert_prediction_rows

        insert_prediction_rows(settings, project_id, version_id, outcome.predictions)

    # --- export and import -----------------------------------------------------------

    def export_columns(self, schema: Mapping[str, Any]) -> ExportColumns:
        return ExportColumns(
            label=("label_data",), draft=("draft_label",), needs=frozenset({"data"})
        )

    def label_cells(
        self, cols: ExportColumns, kind: str | None, label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        """The label columns' cells of one row (``kind`` None: unlabelled)."""
        import json

        data = extra.get("data")
        return [json.dumps(data, sort_keys=True) if kind and data else ""]

    def draft_cells(
        self, cols: ExportColumns, pred_label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        """The draft columns' cells of a row that has a draft."""
        return [pred_label or ""]

    def archive_folder(self, kind: str | None, label: str | None) -> str | None:
        """The ``images/<folder>/`` of a labelled image in the dataset ZIP (None: flat)."""
        return None

    def archive_layout(self) -> str:
        return "images/<file>"

    def count_key(self, kind: str, label: str | None) -> str:
        """The key a labelled row is counted under in the ZIP manifest's ``by_label``."""
        return kind

    def import_columns(self, schema: Mapping[str, Any], header: Sequence[str]) -> ImportColumns:
        raise LoupeError(
            ErrorCode.INVALID,
            f"CSV label import is for class and score projects, not {self.name}",
        )

    def parse_import_row(
        self,
        schema: Mapping[str, Any],
        cols: ImportColumns,
        row: Mapping[str, str],
        *,
        note: str | None,
    ) -> LabelValue | str | None:
        """A CSV row's label, None for an empty one, or a string saying why it is invalid."""
        return None

    # --- reports ---------------------------------------------------------------------

    def report_text(self) -> ReportText:
        return ReportText()

    def model_summary(self, metrics: Mapping[str, Any]) -> str:
        return ""

    def report_groups(
        self, schema: Mapping[str, Any], labelled: Sequence[tuple[int, LabelValue]]
    ) -> ReportGroups:
        """Counts per label and thumbnail groups of a case's labelled items."""
        counts: dict[str, int] = {}
        for _item_id, value in labelled:
            counts[value.kind] = counts.get(value.kind, 0) + 1
        return ReportGroups(
            counts=[(k, counts[k], OTHER_COLORS.get(k, "#9e9e9e")) for k in sorted(counts)],
            groups={},
            order=[],
            colors={},
        )

    def report_metrics(
        self,
        schema: Mapping[str, Any],
        labelled: Sequence[LabelValue],
        drafts: Sequence[Draft],
    ) -> list[MetricSummary]:
        return []

    # --- info ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What ``/api/info`` says about the kind."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "label_kinds": [*self.label_kinds, *DECISION_KINDS],
            "trainable": self.trainable,
            "heads": list(self.heads),
            "schema": self.schema_model.model_json_schema(),
        }
