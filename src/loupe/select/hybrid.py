"""``hybrid``: uncertainty inside diversity (cluster-margin style).

Keep the ``factor x n`` most uncertain unlabelled items, then pick ``n`` of them
by k-center greedy on the embeddings, far from the labelled ones: a batch of
doubtful items that are not all the same doubt.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from loupe.select.base import (
    Ranked,
    SelectionRequest,
    Strategy,
    make_ranked,
    param_choice,
    param_float,
    top_rows,
)
from loupe.select.diverse import k_center_greedy
from loupe.select.uncertain import MEASURES, request_uncertainty


class Hybrid(Strategy):
    name = "hybrid"
    title = "Uncertain and diverse"
    description = (
        "The most uncertain unlabelled items (factor x n), thinned by k-center "
        "greedy so that the batch is diverse."
    )
    needs: ClassVar[frozenset[str]] = frozenset({"features", "probs|spread"})
    needs_model = True

    def __call__(self, req: SelectionRequest) -> Ranked:
        assert req.features is not None
        measure = param_choice(req, "measure", ("margin", *[m for m in MEASURES if m != "margin"]))
        factor = param_float(req, "factor", 10.0)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        score = request_uncertainty(req, measure)
        shortlist, _ = top_rows(req.pool(), score, max(req.n, int(round(factor * req.n))))
        candidates = np.zeros(len(req.ids), dtype=bool)
        candidates[shortlist] = True
        covered = np.asarray(req.labelled, bool) | ~req.free()
        rows, _ = k_center_greedy(req.features, req.n, centres=covered, candidates=candidates)
        return make_ranked(req, rows, score[rows])
