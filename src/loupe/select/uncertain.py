"""``uncertain``: the items the model is least sure of.

Class probabilities: entropy, margin (1 - (p1 - p2)) or least confidence
(1 - max p). Scores (no probabilities): the per-item spread the model reports
(ensemble spread or interval width).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from loupe.select.base import (
    FloatArray,
    Ranked,
    SelectionRequest,
    Strategy,
    make_ranked,
    param_choice,
    top_rows,
)

MEASURES = ("entropy", "margin", "least_confidence")


def uncertainty_scores(probs: FloatArray, measure: str = "entropy") -> NDArray[np.float64]:
    """Per-row uncertainty of ``probs`` (N, k); higher is less sure.

    ``measure`` is one of ``entropy`` (nats), ``margin`` (1 - (p1 - p2)) or
    ``least_confidence`` (1 - max p).
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, k), got shape {p.shape}")
    if measure == "entropy":
        q = np.clip(p, 1e-12, 1.0)
        return np.asarray(-(p * np.log(q)).sum(axis=1), dtype=np.float64)
    if measure == "least_confidence":
        return np.asarray(1.0 - p.max(axis=1), dtype=np.float64)
    if measure == "margin":
        if p.shape[1] < 2:
            return np.asarray(1.0 - p[:, 0], dtype=np.float64)
        top2 = np.sort(p, axis=1)[:, -2:]
        return np.asarray(1.0 - (top2[:, 1] - top2[:, 0]), dtype=np.float64)
    raise ValueError(f"measure must be one of {list(MEASURES)}, got {measure!r}")


def request_uncertainty(req: SelectionRequest, measure: str = "entropy") -> NDArray[np.float64]:
    """The request's per-row uncertainty: from probabilities, else from the spread."""
    if req.probs is not None:
        return uncertainty_scores(req.probs, measure)
    if req.spread is not None:
        return np.nan_to_num(np.asarray(req.spread, dtype=np.float64), nan=0.0)
    raise ValueError("uncertainty needs probs or spread")


class Uncertain(Strategy):
    name = "uncertain"
    title = "Most uncertain"
    description = (
        "Unlabelled items the model is least sure of (entropy, margin or least "
        "confidence; for scores, the ensemble spread)."
    )
    needs: ClassVar[frozenset[str]] = frozenset({"probs|spread"})
    needs_model = True

    def __call__(self, req: SelectionRequest) -> Ranked:
        measure = param_choice(req, "measure", MEASURES)
        rows, scores = top_rows(req.pool(), request_uncertainty(req, measure), req.n)
        return make_ranked(req, rows, scores)
