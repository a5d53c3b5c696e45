"""``flagged`` (the model's triage flags, least sure first) and ``random``."""

from __future__ import annotations

import numpy as np

from loupe.select.base import Ranked, SelectionRequest, Strategy, make_ranked, top_rows
from loupe.select.uncertain import request_uncertainty


class Flagged(Strategy):
    name = "flagged"
    title = "Flagged by the model"
    description = (
        "Unlabelled items the model's triage flagged (disagreement, low confidence, "
        "novelty), least sure first."
    )
    needs = frozenset({"flagged"})
    needs_model = True

    def __call__(self, req: SelectionRequest) -> Ranked:
        assert req.flagged is not None
        has_uncertainty = req.probs is not None or req.spread is not None
        score = (
            request_uncertainty(req, "least_confidence")
            if has_uncertainty
            else np.zeros(len(req.ids), dtype=np.float64)
        )
        rows, values = top_rows(req.pool() & np.asarray(req.flagged, bool), score, req.n)
        return make_ranked(req, rows, values)


class Random(Strategy):
    name = "random"
    title = "Random"
    description = "Unlabelled items in a random order (seeded): an unbiased sample."

    def __call__(self, req: SelectionRequest) -> Ranked:
        rows = np.flatnonzero(req.pool())
        rng = np.random.default_rng(req.seed)
        order = rng.permutation(len(rows))[: req.n]
        scores = 1.0 - np.arange(len(order), dtype=np.float64) / max(1, len(rows))
        return make_ranked(req, rows[order], scores)
