"""A 2-D map of item embeddings: UMAP (default) or t-SNE, arrays in, coordinates out.

Why the detour through a sample: UMAP and t-SNE cost grows faster than the number of
points and 100,000 x 1280 floats would take many minutes on two cores. The map is
for looking, not for measuring, so we

1. L2-normalise the rows (the kNN of ``select/knn.py`` is cosine: the map should
   agree with 'Similar') and project them with a randomised PCA to ``pca_dims``;
2. fit UMAP / t-SNE on at most ``fit_sample`` rows (a seeded random sample);
3. place every other row at the similarity-weighted mean of the map positions of
   its ``place_k`` nearest sampled rows (exact, in PCA space, in chunks).

Below ``fit_sample`` rows step 3 does nothing and the map is the plain embedding.
UMAP's numba functions compile on first use (~45 s); the caller sets
``NUMBA_CACHE_DIR`` (see :func:`numba_cache_dir`) so later processes load them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

METHODS = ("umap", "tsne")
DEFAULT_FIT_SAMPLE = 10_000
DEFAULT_PCA_DIMS = 50
# Placing a row costs a partial sort over the anchors: 4000 of the fitted rows place
# the rest as well as all of them would (the map is for looking) at a third of the cost.
PLACE_ANCHORS = 4000


def numba_cache_dir(path: Path) -> None:
    """Make numba cache compiled functions under ``path`` (before umap is imported).

    Without it every new worker process pays UMAP's ~45 s compilation again.
    An already set ``NUMBA_CACHE_DIR`` is left alone.
    """
    path.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(path))


def _cache_umap_numba() -> None:
    """Turn on numba's on-disk cache for every umap / pynndescent function.

    Only some of them are declared ``cache=True``; the others (the kNN graph, the
    fuzzy set, the layout) are compiled again in every process, ~60 s on two
    cores. Caching them all makes a new worker's first map start in seconds.
    """
    import sys

    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(("umap", "pynndescent")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, Dispatcher) and isinstance(
                getattr(value, "_cache", None), NullCache
            ):
                value.enable_caching()


def _checked(features: Any) -> NDArray[np.float32]:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (items, dims), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x


def _unit(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def reduce_pca(
    features: NDArray[np.float32], *, dims: int, seed: int, fit_rows: int = 20_000
) -> NDArray[np.float32]:
    """Unit rows projected on their first ``dims`` principal axes (fitted on a sample)."""
    from sklearn.decomposition import PCA

    x = _unit(features)
    n, d = x.shape
    dims = min(dims, d, n)
    if dims >= d:
        return x
    rng = np.random.default_rng(seed)
    fit = x if n <= fit_rows else x[np.sort(rng.choice(n, fit_rows, replace=False))]
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed).fit(fit)
    return np.asarray(pca.transform(x), dtype=np.float32)


def _fit_umap(x: NDArray[np.float32], *, seed: int, n_neighbors: int) -> NDArray[np.float32]:
    n = len(x)
    with warnings.catch_warnings():
        # umap warns that a fixed random_state disables parallelism: that is the point
        warnings.simplefilter("ignore")
        import umap

        _cache_umap_numba()
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=max(2, min(n_neighbors, n - 1)),
            min_dist=0.1,
            metric="euclidean",  # rows are unit vectors: euclidean ranks like cosine
            random_state=seed,
            init="spectral" if n > 20 else "random",
            n_epochs=200 if n <= 10_000 else 120,
            low_memory=True,
        )
        out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float32)


def _fit_tsne(x: NDArray[np.float32], *, seed: int) -> NDArray[np.float32]:
    from sklearn.manifold import TSNE

    n = len(x)
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3.0)))
    tsne = TSNE(
        n_components=2,
        perplexity=perplexity,
        init="pca",
        learning_rate="auto",
        random_state=seed,
        max_iter=500 if n > 5000 else 1000,
    )
    return np.asarray(tsne.fit_transform(x), dtype=np.float32)


def place_by_neighbours(
    points: NDArray[np.float32],
    anchors: NDArray[np.float32],
    anchor_xy: NDArray[np.float32],
    *,
    k: int = 10,
    chunk: int = 4096,
) -> NDArray[np.float32]:
    """Map positions for ``points``: the weighted mean of their ``k`` nearest anchors'.

    Parameters
    ----------
    points : float (m, d)
    anchors : float (s, d)
        Rows already on the map, in the same space as ``points``.
    anchor_xy : float (s, 2)
        Their map positions.

    Returns
    -------
    float32 (m, 2)
    """
    k = max(1, min(k, len(anchors)))
    out = np.empty((len(points), 2), dtype=np.float32)
    sq_anchor = (anchors.astype(np.float32) ** 2).sum(axis=1)
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk]
        d2 = sq_anchor[None, :] - 2.0 * (p @ anchors.T)  # |p|^2 is constant per row
        near = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(anchors) else None
        if near is None:
            near = np.broadcast_to(np.arange(len(anchors)), (len(p), len(anchors)))
        dist = np.take_along_axis(d2, near, axis=1) + (p**2).sum(axis=1, keepdims=True)
        weight = 1.0 / (np.sqrt(np.maximum(dist, 0.0)) + 1e-6)
        weight /= weight.sum(axis=1, keepdims=True)
        out[start : start + len(p)] = np.einsum("mk,mkc->mc", weight, anchor_xy[near])
    return out


def embed_2d(
    features: Any,
    *,
    method: str = "umap",
    seed: int = 0,
    n_neighbors: int = 15,
    pca_dims: int = DEFAULT_PCA_DIMS,
    fit_sample: int = DEFAULT_FIT_SAMPLE,
    place_k: int = 10,
) -> NDArray[np.float32]:
    """2-D map coordinates of item embeddings.

    Parameters
    ----------
    features : float (N, d)
        One row per item (a memory map is fine; it is read once).
    method : {'umap', 'tsne'}
    seed : int
        Fixes the sample, the PCA and the embedding: the same input gives the same map.
    n_neighbors : int
        UMAP's neighbourhood size (clipped to N - 1).
    pca_dims : int
        Dimensions kept before the embedding.
    fit_sample : int
        At most this many rows are embedded; the others are placed by neighbours.
    place_k : int
        Neighbours used to place a row that was not in the sample.

    Returns
    -------
    float32 (N, 2)
        Row ``i`` is the map position of ``features[i]``, scaled into [-1, 1].
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if fit_sample < 3:
        raise ValueError(f"fit_sample must be >= 3, got {fit_sample}")
    x = _checked(features)
    n = len(x)
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if n <= 3:  # too few points for any neighbour graph: the first two principal axes
        reduced = reduce_pca(x, dims=2, seed=seed) if x.shape[1] > 2 else _unit(x)
        xy = np.zeros((n, 2), dtype=np.float32)
        xy[:, : reduced.shape[1]] = reduced[:, :2]
        return _scaled(xy)
    reduced = reduce_pca(x, dims=pca_dims, seed=seed)
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= fit_sample else np.sort(rng.choice(n, fit_sample, replace=False))
    fitted = (
        _fit_umap(reduced[sample], seed=seed, n_neighbors=n_neighbors)
        if method == "umap"
        else _fit_tsne(reduced[sample], seed=seed)
    )
    xy = np.empty((n, 2), dtype=np.float32)
    xy[sample] = fitted
    if len(sample) < n:
        rest = np.setdiff1d(np.arange(n), sample, assume_unique=True)
        anchors = np.arange(len(sample))
        if len(anchors) > PLACE_ANCHORS:
            anchors = np.sort(rng.choice(len(sample), PLACE_ANCHORS, replace=False))
        xy[rest] = place_by_neighbours(
            reduced[rest], reduced[sample[anchors]], fitted[anchors], k=place_k
        )
    return _scaled(xy)


def _scaled(xy: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centre and scale into [-1, 1] (the web app draws any range; tests compare shapes)."""
    if not len(xy):
        return xy
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2.0
    half = float((xy.max(axis=0) - xy.min(axis=0)).max()) / 2.0
    return np.asarray((xy - centre) / (half if half > 0 else 1.0), dtype=np.float32)
