"""The trainer shared by kinds that learn from one embedding per item.

Classify and score (and any kind whose model is a small head over a frozen
backbone's image embedding) train the same way: embed every item for every
ensemble member (cached; only new items are computed), fit the kind's heads
on the human labels, predict every item. :class:`EmbeddingTaskKind` owns the
first and last steps; a subclass writes :meth:`EmbeddingTaskKind.fit_heads`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import update

from loupe.db.models import Item
from loupe.db.session import session_scope
from loupe.tasks.base import FitOutcome, PredictionRow, Report, TaskKind, TrainingData

if TYPE_CHECKING:
    from loupe.learn.novelty import Novelty
    from loupe.settings import Settings

DEFAULT_ENSEMBLE = ("effnet-lite0", "mobilenet_v2")
FeatureMap = dict[str, tuple[np.ndarray, np.ndarray]]  # member -> (X_labelled, X_all)


def ensemble_members(settings: dict[str, Any]) -> list[str]:
    """The project's ensemble members (backbone names), default effnet + mobilenet."""
    return list(settings.get("ensemble") or DEFAULT_ENSEMBLE)


def review_budget(settings: dict[str, Any]) -> float | None:
    """The project's review budget: the most items a model may flag, as a fraction."""
    value = settings.get("review_budget")
    return None if value in (None, 0, 1) else float(value)


@dataclass(frozen=True)
class SavedVersion:
    """A finished model version as its stored record and artifact (``heads.npz`` +
    ``heads.json``): what drafts items it was not trained with."""

    id: int
    mode: str  # frozen | finetune
    params: dict[str, Any]
    calibration: dict[str, Any]
    metrics: dict[str, Any]
    state: dict[str, Any]  # the artifact: arrays and JSON values by key

    @property
    def members(self) -> list[str]:
        return [str(m) for m in self.state.get("members") or self.params.get("members") or []]

    @property
    def reference_ids(self) -> list[int]:
        """The items the version's novelty is measured against (its training labels)."""
        ids = self.state.get("novelty_ref_ids")
        return [] if ids is None else [int(i) for i in np.asarray(ids).tolist()]


def novelty_state(novelty: Novelty | None, reference_ids: Sequence[int]) -> dict[str, Any]:
    """What a version keeps of its novelty detector for items added later: per member
    the centre (array) and threshold, ``k``/``quantile``/``margin``, and the ids of the
    labelled items (their rows stay in the append-only feature stores)."""
    if novelty is None:
        return {"novelty": None}
    state: dict[str, Any] = {
        "novelty": {
            "thresholds": dict(novelty.thresholds),
            "k": novelty.k,
            "quantile": novelty.quantile,
            "margin": novelty.margin,
        },
        "novelty_ref_ids": np.asarray(list(reference_ids), dtype=np.int64),
    }
    for name, centre in novelty.centres.items():
        if centre is not None:
            state[f"novelty_centre_{name}"] = np.asarray(centre, dtype=np.float32)
    return state


def saved_novelty(
    saved: SavedVersion,
    member_x: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
) -> Novelty | None:
    """The stored version's novelty of new rows (None when it was trained without)."""
    from loupe.learn.novelty import novelty_against

    meta = saved.state.get("novelty")
    if not meta:
        return None
    return novelty_against(
        {m: member_x[m] for m in saved.members},
        reference,
        thresholds={m: meta["thresholds"].get(m) for m in saved.members},
        centres={m: saved.state.get(f"novelty_centre_{m}") for m in saved.members},
        k=int(meta["k"]),
        quantile=float(meta["quantile"]),
        margin=float(meta["margin"]),
    )


def compute_features(
    settings: Settings,
    data: TrainingData,
    members: Sequence[str],
    *,
    report: Report,
    span: tuple[float, float] = (0.0, 0.7),
) -> tuple[list[int], dict[str, np.ndarray], dict[int, str]]:
    """Embed every item for every member (cached; only new items are computed).

    Returns the ids that every member could read, the matrices in that order,
    and ``{item_id: reason}`` for unreadable items (marked 'error' in the DB).
    """
    from loupe.features import FeatureStore, compute_missing, get_backbone

    errors: dict[int, str] = {}
    lo, hi = span
    per = (hi - lo) / max(1, len(members))
    for k, name in enumerate(members):
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        start = lo + k * per

        def progress(done: int, total: int, *, _start: float = start, _name: str = name) -> None:
            report(_start + per * done / max(1, total), f"features {_name}: {done}/{total}")

        report(start, f"features {name}")
        errors.update(compute_missing(store, backbone, data.items, progress=progress))
    if errors:
        mark_unreadable(settings, errors)
    ids = [i for i, _ in data.items if i not in errors]
    matrices = {}
    for name in members:
        backbone = get_backbone(
            name, weights_dir=settings.weights, cache_dir=settings.home / "cache"
        )
        store = FeatureStore(settings.features_dir, data.project_id, name, backbone.dim)
        matrices[name] = store.get(ids)
    return ids, matrices, errors


def mark_unreadable(settings: Settings, errors: dict[int, str]) -> None:
    with session_scope(settings.db_url) as db:
        for item_id, reason in errors.items():
            db.execute(
                update(Item).where(Item.id == item_id).values(status="error", error=reason[:2000])
            )


class EmbeddingTaskKind(TaskKind):
    """A kind trained as heads over per-item embeddings of an ensemble of backbones."""

    trainable = True

    def fit_and_predict(
        self,
        settings: Settings,
        data: TrainingData,
        version_id: int,
        *,
        mode: str,
        report: Report,
    ) -> FitOutcome:
        members = ensemble_members(data.settings)
        ids, matrices, errors = compute_features(settings, data, members, report=report)
        labelled = [i for i in ids if i in data.labels]
        row_of = {item_id: r for r, item_id in enumerate(ids)}
        lab_rows = np.array([row_of[i] for i in labelled], dtype=np.int64)
        feats: FeatureMap = {m: (x[lab_rows], x) for m, x in matrices.items()}
        report(0.75, f"fitting heads on {len(labelled)} labels")
        outcome = self.fit_heads(
            settings, data, feats, labelled, ids, mode=mode, members=members, report=report
        )
        outcome.errors = errors
        outcome.params["members"] = members
        outcome.params["mode"] = mode
        return outcome

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
        """Fit the heads on the labelled rows of ``feats`` and predict every id."""
        raise NotImplementedError

    def draft_items(
        self,
        settings: Settings,
        saved: SavedVersion,
        ids: list[int],
        member_x: Mapping[str, np.ndarray],
        reference: Mapping[str, np.ndarray],
        sources: Mapping[int, Any],
    ) -> list[PredictionRow]:
        """Drafts of a stored version for items it was not trained with: ``member_x``
        are their rows per member (in ``ids`` order), ``reference`` the rows of the
        version's training labels (its novelty), ``sources`` the items' files (a
        fine-tuned version reads the images). The same code as the training's last
        step, so a new item gets the draft it would have had."""
        raise NotImplementedError
