"""``hybrid``: uncertainty inside diversity (cluster-margin style).

Keep the ``factor x n`` most uncertain unlabelled items, then pick ``n`` of them
by k-center greedy on the embeddings, far from the labelled ones: a batch of
doubtful items that are not all the same doubt. The greedy search reads only the
shortlist and the labelled rows, so its cost does not grow with the collection.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from loupe.select.base import (
    Ranked,
    SelectionRequest,
    Strategy,
    make_ranked,
    one_blas_thread,
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
        with one_blas_thread():
            return self._rank(req)

    def _rank(self, req: SelectionRequest) -> Ranked:
        assert req.features is not None
        measure = param_choice(req, "measure", ("margin", *[m for m in MEASURES if m != "margin"]))
        factor = param_float(req, "factor", 10.0)
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        score = request_uncertainty(req, measure)
        shortlist, _ = top_rows(req.pool(), score, max(req.n, int(round(factor * req.n))))
        covered = np.asarray(req.labelled, bool) | ~req.free()
        # Only the shortlist and the covered rows take part in the search: reading just
        # those rows keeps a 100,000-item request to a few thousand distances per pick.
        subset = np.union1d(shortlist, np.flatnonzero(covered))
        in_shortlist = np.isin(subset, shortlist)
        picked, _ = k_center_greedy(
            np.asarray(req.features[subset], dtype=np.float32),
            req.n,
            centres=covered[subset],
            candidates=in_shortlist,
        )
        rows = subset[picked]
        return make_ranked(req, rows, score[rows])
