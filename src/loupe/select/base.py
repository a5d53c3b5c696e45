"""The strategy seam: a typed request of arrays in, ranked item ids out.

A strategy is a small object with a ``name``, the arrays it ``needs`` and a
``__call__`` that ranks the items of a :class:`SelectionRequest`. It knows
nothing of the database: the queue service loads the arrays (features of the
active backbone, the active model's probabilities, the labelled mask), asks the
strategy, and leases what comes back. Registered by name in
:mod:`loupe.select.registry`; ``/api/info`` lists the names.

Every array of a request is indexed by row: row ``r`` is item ``ids[r]``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from loupe.learn.members import single_threaded_blas

FloatArray = NDArray[np.floating[Any]]
IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]

# What a strategy may need besides ids and the labelled mask.
ARRAYS = ("features", "probs", "spread", "flagged", "labels", "oof_probs")


@dataclass(frozen=True)
class SelectionRequest:
    """The arrays and options one selection runs on.

    Parameters
    ----------
    ids : int64 (N,)
        Item id of each row.
    labelled : bool (N,)
        True where the item has a human label.
    features : float (N, d) or None
        The item embeddings of one backbone (may be a read-only memory map).
    probs : float (N, k) or None
        Current class probabilities of the active model.
    spread : float (N,) or None
        A per-item uncertainty of a score model (ensemble spread, interval width).
    flagged : bool (N,) or None
        The model's triage flag.
    labels : int64 (N,) or None
        The human class label as an index into ``class_names`` (-1: none).
    oof_probs : float (N, k) or None
        Out-of-fold probabilities of the labelled rows (other rows ignored).
    blocked : bool (N,) or None
        Rows no strategy may return (e.g. leased to another annotator).
    class_names : tuple of str
        Names of the probability columns.
    n : int
        How many items to return at most.
    seed : int
        Seed of every random choice.
    params : dict
        Strategy options (``measure``, ``band_class``, ``band_lo``, ...).
    """

    ids: IntArray
    labelled: BoolArray
    features: FloatArray | None = None
    probs: FloatArray | None = None
    spread: FloatArray | None = None
    flagged: BoolArray | None = None
    labels: IntArray | None = None
    oof_probs: FloatArray | None = None
    blocked: BoolArray | None = None
    class_names: tuple[str, ...] = ()
    n: int = 50
    seed: int = 0
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        size = len(self.ids)
        if self.n < 0:
            raise ValueError(f"n must be >= 0, got {self.n}")
        for name in ("labelled", "features", "probs", "spread", "flagged", "labels", "blocked"):
            value = getattr(self, name)
            if value is not None and len(value) != size:
                raise ValueError(f"{name} has {len(value)} rows, ids has {size}")
        if self.oof_probs is not None and len(self.oof_probs) != size:
            raise ValueError(f"oof_probs has {len(self.oof_probs)} rows, ids has {size}")

    def has(self, name: str) -> bool:
        """Whether the array ``name`` is present (labels: at least one labelled class)."""
        value = getattr(self, name)
        if value is None:
            return False
        if name == "labels":
            return bool((np.asarray(value) >= 0).any())
        return True

    def free(self) -> BoolArray:
        """Rows a strategy may return: not blocked."""
        if self.blocked is None:
            return np.ones(len(self.ids), dtype=bool)
        return ~np.asarray(self.blocked, dtype=bool)

    def pool(self) -> BoolArray:
        """Rows an unlabelled-item queue may return: unlabelled and not blocked."""
        return self.free() & ~np.asarray(self.labelled, dtype=bool)


@dataclass(frozen=True)
class Ranked:
    """A strategy's answer: item ids best first, with a score each (higher: sooner)."""

    ids: IntArray
    scores: NDArray[np.float64]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.scores):
            raise ValueError("ids and scores differ in length")


def make_ranked(req: SelectionRequest, rows: NDArray[np.intp], scores: FloatArray) -> Ranked:
    """The :class:`Ranked` of ``rows`` (already in order) with their ``scores``."""
    rows = np.asarray(rows, dtype=np.intp)[: req.n]
    values = np.asarray(scores, dtype=np.float64)[: req.n]
    return Ranked(ids=np.asarray(req.ids, dtype=np.int64)[rows], scores=values)


def top_rows(mask: BoolArray, scores: FloatArray, n: int) -> tuple[NDArray[np.intp], FloatArray]:
    """The ``n`` rows of ``mask`` with the highest ``scores`` (ties: lower row first)."""
    rows = np.flatnonzero(mask)
    values = np.asarray(scores, dtype=np.float64)[rows]
    order = np.lexsort((rows, -values))[:n]
    return rows[order], values[order]


class Strategy(ABC):
    """An active-learning strategy (MONAI Label's ``Strategy``, typed).

    Class attributes: ``name`` (registry key), ``title`` and ``description``
    (for ``/api/info`` and the UI), ``needs`` (arrays of :data:`ARRAYS` it
    cannot run without; ``"probs|spread"``: either), ``needs_model`` (whether
    it reads model output) and ``labelled_items`` (it ranks labelled items).
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    needs_model: ClassVar[bool] = False
    labelled_items: ClassVar[bool] = False  # True: it ranks labelled items (mistakes)

    def missing(self, req: SelectionRequest) -> list[str]:
        """The needs ``req`` does not meet (empty: it can run); ``a|b`` needs either."""
        return [
            need
            for need in sorted(self.needs)
            if not any(req.has(name) for name in need.split("|"))
        ]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title or self.name,
            "description": self.description,
            "needs": sorted(self.needs),
            "needs_model": self.needs_model,
            "labelled_items": self.labelled_items,
        }

    @abstractmethod
    def __call__(self, req: SelectionRequest) -> Ranked:
        """Rank the rows of ``req`` it may return; at most ``req.n``."""


def param_float(req: SelectionRequest, key: str, default: float) -> float:
    value = req.params.get(key)
    if value is None:
        return default
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None


def param_choice(req: SelectionRequest, key: str, choices: tuple[str, ...]) -> str:
    value = req.params.get(key) or choices[0]
    if value not in choices:
        raise ValueError(f"{key} must be one of {list(choices)}, got {value!r}")
    return str(value)


# A strategy works on matrices of a few thousand rows or on matrix-vector products,
# where a second BLAS thread barely helps: run it in ``with one_blas_thread():``.
one_blas_thread = single_threaded_blas


def feature_fingerprint(ids: NDArray[np.int64], features: FloatArray) -> bytes:
    """A key for results that depend on the features alone (kept between requests):
    the rows' item ids and a sample of their values (a changed matrix changes it)."""
    h = hashlib.blake2b(np.ascontiguousarray(ids, dtype=np.int64).tobytes())
    if len(features):
        sample = np.unique(np.linspace(0, len(features) - 1, num=16).astype(np.intp))
        h.update(np.ascontiguousarray(np.asarray(features[sample], dtype=np.float32)).tobytes())
    return h.digest()
