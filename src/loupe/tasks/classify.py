"""``classify``: one class per item (binary or multiclass), drafted by an ensemble.

Schema ``{"classes": [{"name", "color", "hotkey", "description"}]}``; 'unsure'
and 'skip' are always available and are not classes. The model is a calibrated
softmax head per ensemble member over frozen image embeddings
(:func:`loupe.learn.train.train_classifier_ensemble`), optionally a fine-tuned
backbone (``mode="finetune"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from loupe.errors import ErrorCode, LoupeError
from loupe.tasks.base import (
    DECISION_KINDS,
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
    Report,
    ReportGroups,
    ReportText,
    StrictModel,
    TrainingData,
    check_color,
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
    from loupe.learn.train import ClassPredictions
    from loupe.settings import Settings

RESERVED_HOTKEYS = frozenset({"0", "x", "z"})  # unsure, skip, undo in the grid
LABEL_COLUMNS = ("label", "class")
UNLABELED = "_unlabeled"
MIN_PER_CLASS = 2
DEFAULT_HEAD = "softmax"  # calibrated logistic regression (loupe.learn.CLASS_HEADS)
FINETUNE_MAX_ITEMS = 3000  # images held in memory for fine-tuning


class ClassDef(StrictModel):
    name: Name
    color: str | None = None
    hotkey: str | None = Field(default=None, max_length=1)
    description: str = Field(default="", max_length=2000)

    @field_validator("color")
    @classmethod
    def _color(cls, v: str | None) -> str | None:
        return check_color(v)


class ClassifySchema(StrictModel):
    task: Literal["classify"] = "classify"
    classes: list[ClassDef] = Field(min_length=2, max_length=200)

    @model_validator(mode="after")
    def _fill(self) -> ClassifySchema:
        unique([c.name for c in self.classes], "class name")
        for c in self.classes:
            if c.name.lower() in RESERVED_LABELS:
                raise ValueError(f"class name {c.name!r} is reserved (unsure/skip always exist)")
        used = {c.hotkey for c in self.classes if c.hotkey}
        unique([c.hotkey for c in self.classes if c.hotkey], "hotkey")
        bad = used & RESERVED_HOTKEYS
        if bad:
            raise ValueError(f"hotkey {sorted(bad)[0]!r} is reserved (0 unsure, X skip, Z undo)")
        free = [str(d) for d in range(1, 10) if str(d) not in used]
        for i, c in enumerate(self.classes):
            if c.color is None:
                c.color = PALETTE[i % len(PALETTE)]
            if c.hotkey is None and free:
                c.hotkey = free.pop(0)
        return self


class ClassifyKind(EmbeddingTaskKind):
    name = "classify"
    title = "Classify"
    description = "One class per image; an ensemble drafts the class and flags doubtful items."
    schema_model = ClassifySchema
    label_kinds = ("class",)
    schema_file = "classes.json"
    heads = ("softmax", "mlp")

    # --- schema and labels -------------------------------------------------------------

    def kept_labels(self, schema: Mapping[str, Any]) -> set[str] | None:
        return set(self.label_names(schema))

    def check_value(self, schema: Mapping[str, Any], value: LabelValue) -> LabelValue:
        names = self.label_names(schema)
        if value.label not in names:
            raise LoupeError(
                ErrorCode.INVALID, f"label {value.label!r} is not a class of this project: {names}"
            )
        return LabelValue(kind="class", label=value.label, note=value.note)

    def label_from_draft(self, draft: Draft, *, item_id: int) -> LabelValue:
        if draft.label is None:
            raise LoupeError(ErrorCode.CONFLICT, f"item {item_id}'s draft has no class")
        return LabelValue(kind="class", label=draft.label)

    def agrees(self, value: LabelValue, draft: Draft) -> bool:
        return value.kind == "class" and value.label == draft.label

    def training_target(self, value: LabelValue) -> Any | None:
        return value.label if value.kind == "class" else None

    # --- training ----------------------------------------------------------------------

    def check_trainable(self, data: TrainingData) -> None:
        counts: dict[str, int] = {}
        for label in data.labels.values():
            counts[label] = counts.get(label, 0) + 1
        ready = [c for c, n in counts.items() if n >= MIN_PER_CLASS]
        if len(ready) < 2:
            raise LoupeError(
                ErrorCode.INVALID,
                f"training needs at least {MIN_PER_CLASS} human labels in each of at least two "
                f"classes; have {counts or 'none'}",
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
        present = set(data.labels.values())
        names = [c for c in self.label_names(data.schema) if c in present]
        outcome = _fit_classes(data, feats, labelled, names, ids)
        if mode == "finetune":
            report(0.8, "fine-tuning")
            _add_finetune(settings, data, outcome, ids, labelled, names, members[0], report)
        return outcome

    def draft_items(
        self,
        settings: Settings,
        saved: SavedVersion,
        ids: list[int],
        member_x: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray],
        sources: Mapping[int, Any],
    ) -> list[PredictionRow]:
        from loupe.learn import CLASS_HEADS
        from loupe.learn.state import state_from_bytes
        from loupe.learn.train import class_drafts

        names = [str(n) for n in saved.state["class_names"]]
        head = CLASS_HEADS[str(saved.params.get("class_head") or DEFAULT_HEAD)]
        member_probs = {
            m: head.from_state(
                state_from_bytes(np.asarray(saved.state[f"head_{m}"]).tobytes())
            ).predict_proba(member_x[m])
            for m in saved.members
        }
        threshold = float(saved.params.get("threshold", 0.8))
        budget = saved.params.get("review_budget")
        predictions, _ = class_drafts(
            member_probs,
            ensemble_temperature=float(saved.calibration.get("ensemble_temperature") or 1.0),
            qhat=saved.calibration.get("qhat"),
            threshold=threshold,
            novelty=saved_novelty(saved, member_x, reference),
            max_flag_fraction=None if budget is None else float(budget),
        )
        rows = _class_rows(ids, names, predictions)
        if saved.mode == "finetune":
            probs = _finetuned_probs(settings, saved, ids, sources)
            member = str(saved.state["finetune"]["member"])
            finetuned_drafts(rows, probs, names, member, threshold, budget)
        return rows

    # --- export and import -------------------------------------------------------------

    def export_columns(self, schema: Mapping[str, Any]) -> ExportColumns:
        return ExportColumns(label=("label",), draft=("draft_label",))

    def label_cells(
        self, cols: ExportColumns, kind: str | None, label: str | None, extra: Mapping[str, Any]
    ) -> list[Any]:
        if kind == "class":
            return [label]
        return [kind if kind in DECISION_KINDS else ""]

    def archive_folder(self, kind: str | None, label: str | None) -> str | None:
        return label if kind == "class" and label else UNLABELED

    def archive_layout(self) -> str:
        return "images/<class>/<file> (ImageFolder); no class: images/_unlabeled/"

    def count_key(self, kind: str, label: str | None) -> str:
        return str(label) if kind == "class" else kind

    def import_columns(self, schema: Mapping[str, Any], header: Sequence[str]) -> ImportColumns:
        label = next((c for c in LABEL_COLUMNS if c in header), None)
        if label is None:
            raise LoupeError(
                ErrorCode.INVALID, f"the header needs a 'label' column; found {list(header)}"
            )
        return ImportColumns(values=(label,))

    def parse_import_row(
        self,
        schema: Mapping[str, Any],
        cols: ImportColumns,
        row: Mapping[str, str],
        *,
        note: str | None,
    ) -> LabelValue | str | None:
        raw = row.get(cols.values[0], "")
        if not raw:
            return None
        if raw.lower() in DECISION_KINDS:
            return LabelValue(kind=raw.lower(), note=note)
        classes: dict[str, str] = {}
        for class_name in self.label_names(schema):
            classes[class_name] = class_name
            classes.setdefault(class_name.casefold(), class_name)
        found = classes.get(raw) or classes.get(raw.casefold())
        if found is None:
            known = ", ".join(sorted(set(classes.values())))
            return f"{raw!r} is not a class of this project ({known})"
        return LabelValue(kind="class", label=found, note=note)

    # --- reports -----------------------------------------------------------------------

    def report_text(self) -> ReportText:
        return ReportText(
            counts_title="Counts per class", counts_chart=True, thumbs_title="Thumbnails per class"
        )

    def model_summary(self, metrics: Mapping[str, Any]) -> str:
        ens = (metrics or {}).get("ensemble") or {}
        parts = []
        if ens.get("accuracy") is not None:
            from loupe.learn.metrics import format_rate

            rate = format_rate(ens["accuracy"], int(ens.get("n") or 0), ens.get("accuracy_ci"))
            parts.append(f"cross-validated accuracy {rate}")
        if ens.get("ece") is not None:
            parts.append(f"ECE {ens['ece']:.3f}")
        return ", ".join(parts)

    def report_groups(
        self, schema: Mapping[str, Any], labelled: Sequence[tuple[int, LabelValue]]
    ) -> ReportGroups:
        classes = schema.get("classes", [])
        counts = dict.fromkeys((c["name"] for c in classes), 0)
        groups: dict[str, list[int]] = {}
        for item_id, value in labelled:
            key = str(value.label) if value.kind == "class" else value.kind
            counts[key] = counts.get(key, 0) + 1
            if value.kind == "class":
                groups.setdefault(key, []).append(item_id)
        colors = {
            c["name"]: c.get("color") or PALETTE[k % len(PALETTE)] for k, c in enumerate(classes)
        }
        return ReportGroups(
            counts=[
                (name, n, colors.get(name) or OTHER_COLORS.get(name, "#9e9e9e"))
                for name, n in counts.items()
                if n or name in colors
            ],
            groups=groups,
            order=[c["name"] for c in classes],
            colors=colors,
        )


def _fit_classes(
    data: TrainingData,
    feats: FeatureMap,
    labelled: list[int],
    names: list[str],
    ids: list[int],
) -> FitOutcome:
    from loupe.learn import CLASS_HEADS
    from loupe.learn.state import state_to_bytes
    from loupe.learn.train import train_classifier_ensemble

    index = {n: k for k, n in enumerate(names)}
    y = np.array([index[data.labels[i]] for i in labelled], dtype=np.int64)
    threshold = float(data.settings.get("confidence_threshold", 0.8))
    alpha = data.settings.get("conformal_alpha", 0.1)
    head_name = str(data.settings.get("class_head") or DEFAULT_HEAD)
    if head_name not in CLASS_HEADS:
        raise LoupeError(
            ErrorCode.INVALID, f"unknown class head {head_name!r}; use one of {sorted(CLASS_HEADS)}"
        )
    result = train_classifier_ensemble(
        feats,
        y,
        names,
        threshold=threshold,
        conformal_alpha=alpha,
        max_flag_fraction=review_budget(data.settings),
        head=CLASS_HEADS[head_name],
    )
    rows = _class_rows(ids, names, result.predictions)
    counts = {n: int((y == k).sum()) for n, k in index.items()}
    state: dict[str, Any] = {
        f"head_{m}": np.frombuffer(state_to_bytes(s), dtype=np.uint8)
        for m, s in result.heads.items()
    }
    state.update({"class_names": names, "members": result.member_names})
    state.update(novelty_state(result.novelty, labelled))
    return FitOutcome(
        predictions=rows,
        metrics=result.metrics_json(),
        calibration={
            "temperatures": result.temperatures,
            "ensemble_temperature": result.ensemble_temperature,
            "conformal_alpha": result.conformal_alpha,
            "qhat": result.qhat,
        },
        params={
            "threshold": threshold,
            "classes": names,
            "class_head": head_name,
            "review_budget": review_budget(data.settings),
        },
        state=state,
        trained_on_ids=labelled,
        label_counts=counts,
    )


def _class_rows(ids: Sequence[int], names: list[str], p: ClassPredictions) -> list[PredictionRow]:
    """One prediction row per item: the ensemble's class, members' votes, triage."""
    rows = []
    for r, item_id in enumerate(ids):
        probs = {n: round(float(v), 5) for n, v in zip(names, p.probs[r], strict=True)}
        members = {}
        for m, mp in p.member_probs.items():
            k = int(np.argmax(mp[r]))
            members[m] = {
                "label": names[k],
                "confidence": round(float(mp[r, k]), 5),
                "probs": {n: round(float(v), 5) for n, v in zip(names, mp[r], strict=True)},
            }
        output: dict[str, Any] = {
            "probs": probs,
            "novel": bool(p.novel[r]),
            "novelty": round(float(p.novelty[r]), 4),
        }
        if p.prediction_sets is not None:
            output["prediction_set"] = [
                n for n, s in zip(names, p.prediction_sets[r], strict=True) if s
            ]
        rows.append(
            PredictionRow(
                item_id=int(item_id),
                label=names[int(p.label[r])],
                confidence=float(p.confidence[r]),
                uncertainty=float(p.uncertainty[r]),
                flagged=bool(p.flagged[r]),
                flag_reason=p.reason[r],
                output=output,
                members=members,
            )
        )
    return rows


def _add_finetune(
    settings: Settings,
    data: TrainingData,
    outcome: FitOutcome,
    ids: list[int],
    labelled: list[int],
    names: list[str],
    member: str,
    report: Report,
) -> None:
    """Fine-tune ``member``'s last stage on the labelled images (same folds as the
    frozen heads for the comparison) and replace the drafts with its predictions."""
    from loupe.features import build_torch_model, preprocessing_of, read_rgb
    from loupe.learn.calibration import softmax
    from loupe.learn.finetune import compare_metrics, finetune, finetune_cv, predict_finetuned

    if len(labelled) > FINETUNE_MAX_ITEMS:
        raise LoupeError(
            ErrorCode.INVALID,
            f"fine-tuning holds images in memory: at most {FINETUNE_MAX_ITEMS} labels",
        )
    size = preprocessing_of(member).size
    sources = dict(data.items)
    images = np.stack([read_rgb(sources[i], size=size) for i in labelled])
    index = {n: k for k, n in enumerate(names)}
    y = np.array([index[data.labels[i]] for i in labelled], dtype=np.int64)

    def builder() -> Any:
        return build_torch_model(member, weights_dir=settings.weights)

    # Project settings may shorten the schedule (small data, CPU-only machines).
    epochs = int(data.settings.get("finetune_epochs", 20))

    def check() -> None:  # per batch: a cancel stops the fine-tune within one batch
        report(0.8, "fine-tuning")

    cv = finetune_cv(builder, images, y, class_names=names, epochs=epochs, patience=3, check=check)
    report(0.85, "fine-tuning on all labels")
    model = finetune(
        builder, images, y, n_classes=len(names), epochs=epochs, patience=3, check=check
    )
    logits = []
    for start in range(0, len(ids), 256):
        chunk = np.stack([read_rgb(sources[i], size=size) for i in ids[start : start + 256]])
        logits.append(predict_finetuned(builder, model, chunk))
    probs = softmax(np.concatenate(logits) / max(cv.temperature, 1e-3))
    frozen = outcome.metrics.get("ensemble") or {}
    threshold = float(data.settings.get("confidence_threshold", 0.8))
    finetuned_drafts(
        outcome.predictions, probs, names, member, threshold, review_budget(data.settings)
    )
    outcome.metrics = {
        **outcome.metrics,
        "frozen_ensemble": frozen,
        "ensemble": cv.metrics,
        "finetune": {
            "member": member,
            "best_epoch": model.best_epoch,
            "history": model.history,
            "device": model.device,
            "compare": compare_metrics(frozen, cv.metrics or {}),
        },
    }
    outcome.state["finetuned_state_dict"] = np.frombuffer(model.state_dict, dtype=np.uint8)
    outcome.state["finetune"] = {
        "member": member,
        "temperature": float(cv.temperature),
        "n_classes": len(names),
        "feature_dim": int(model.feature_dim),
    }


def _finetuned_probs(
    settings: Settings, saved: SavedVersion, ids: list[int], sources: Mapping[int, Any]
) -> np.ndarray:
    """A stored fine-tuned model's calibrated probabilities for the images of ``ids``."""
    from loupe.features import build_torch_model, preprocessing_of, read_rgb
    from loupe.learn.calibration import softmax
    from loupe.learn.finetune import FinetuneResult, predict_finetuned

    meta = saved.state["finetune"]
    member = str(meta["member"])
    result = FinetuneResult(
        state_dict=np.asarray(saved.state["finetuned_state_dict"]).tobytes(),
        n_classes=int(meta["n_classes"]),
        feature_dim=int(meta["feature_dim"]),
        best_epoch=0,
        stopped_early=False,
        val_metrics=None,
        history=[],
        device="auto",
        trainable_parameters=0,
    )

    def builder() -> Any:
        return build_torch_model(member, weights_dir=settings.weights)

    size = preprocessing_of(member).size
    logits = []
    for start in range(0, len(ids), 256):
        chunk = np.stack([read_rgb(sources[i], size=size) for i in ids[start : start + 256]])
        logits.append(predict_finetuned(builder, result, chunk))
    return softmax(np.concatenate(logits) / max(float(meta["temperature"]), 1e-3))


def finetuned_drafts(
    rows: list[PredictionRow],
    probs: np.ndarray,
    names: list[str],
    member: str,
    threshold: float,
    budget: float | None,
) -> None:
    """Replace the frozen ensemble's drafts in ``rows`` by the fine-tuned model's
    ``probs`` (calibrated, one row per item): its class, triage (novelty kept from
    the frozen members) and the review budget."""
    from loupe.learn.ensemble import apply_review_budget, triage_classes

    novel = np.array([bool(row.output.get("novel")) for row in rows], dtype=bool)
    flagged, reasons = triage_classes([probs], probs, threshold=threshold, novel=novel)
    flagged, reasons = apply_review_budget(
        flagged, reasons, uncertainty=1.0 - probs.max(axis=1), max_flag_fraction=budget
    )
    for r, row in enumerate(rows):
        k = int(np.argmax(probs[r]))
        row.members = {**row.members, f"{member}-finetuned": {"label": names[k]}}
        row.label, row.confidence = names[k], float(probs[r, k])
        row.flagged, row.flag_reason = bool(flagged[r]), reasons[r]
        row.output = {
            "probs": {n: round(float(v), 5) for n, v in zip(names, probs[r], strict=True)},
            "novel": bool(novel[r]),
        }
