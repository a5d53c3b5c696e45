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

Steps 1-2 are :func:`fit_map` (a small :class:`MapModel`: the PCA, the sample and
its positions, the anchors); step 3 is :func:`place_rows`, which any block of rows
can run on its own (the map job places blocks in parallel chunk jobs), and the
positions of all rows are scaled together last (:func:`scale_to_unit`).
:func:`embed_2d` is the three in one call.
UMAP's numba functions compile on first use (~45 s); the caller sets
``NUMBA_CACHE_DIR`` (see :func:`numba_cache_dir`) so later processes load them.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
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
    mean, components = _fit_pca(features, dims=dims, seed=seed, fit_rows=fit_rows)
    return _project(_unit(features), mean, components)


def _fit_pca(
    features: Any, *, dims: int, seed: int, fit_rows: int = 20_000
) -> tuple[NDArray[np.float32] | None, NDArray[np.float32] | None]:
    """``(mean_, components_)`` of a randomised PCA of the unit rows of ``features``
    (fitted on at most ``fit_rows`` of them, seeded), or ``(None, None)`` when
    ``dims`` keeps every dimension. Only the rows fitted are read."""
    from sklearn.decomposition import PCA

    n, d = features.shape
    dims = min(dims, d, n)
    if dims >= d:
        return None, None
    rng = np.random.default_rng(seed)
    picked = np.arange(n) if n <= fit_rows else np.sort(rng.choice(n, fit_rows, replace=False))
    fit = _unit(_checked(features[picked]))
    pca = PCA(n_components=dims, svd_solver="randomized", random_state=seed).fit(fit)
    return (
        np.asarray(pca.mean_, dtype=np.float32),
        np.asarray(pca.components_, dtype=np.float32),
    )


def _project(
    unit_rows: NDArray[np.float32],
    mean: NDArray[np.float32] | None,
    components: NDArray[np.float32] | None,
) -> NDArray[np.float32]:
    """What ``PCA.transform`` computes (same operations, same order: a chunk of rows
    gets the numbers the whole matrix would); the identity without a PCA."""
    if mean is None or components is None:
        return unit_rows
    out = unit_rows @ components.T
    out -= mean.reshape(1, -1) @ components.T
    return np.asarray(out, dtype=np.float32)


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


@dataclass(frozen=True)
class MapModel:
    """A fitted map: what placing any row on it needs (a few MB; see :func:`save_model`).

    ``mean``/``components`` are the PCA (None: the unit rows are used as they are);
    ``sample`` the sorted rows that UMAP / t-SNE fitted and ``sample_xy`` their
    positions; ``anchors`` the reduced rows that place the others and ``anchor_xy``
    their positions. Positions are not yet scaled (see :func:`scale_to_unit`).
    """

    n_rows: int
    dim: int
    mean: NDArray[np.float32] | None
    components: NDArray[np.float32] | None
    sample: NDArray[np.intp]
    sample_xy: NDArray[np.float32]
    anchors: NDArray[np.float32]
    anchor_xy: NDArray[np.float32]
    place_k: int


def fit_map(
    features: Any,
    *,
    method: str = "umap",
    seed: int = 0,
    n_neighbors: int = 15,
    pca_dims: int = DEFAULT_PCA_DIMS,
    fit_sample: int = DEFAULT_FIT_SAMPLE,
    place_k: int = 10,
) -> MapModel:
    """The part of :func:`embed_2d` that cannot be split: the PCA and the embedding of
    the sample (same parameters; N >= 1 rows). Place the rows with :func:`place_rows`.

    Every row is read and projected once, in one product, as :func:`embed_2d` always
    did: BLAS rounds a row's product differently in a different block, and UMAP
    turns such 1-ulp differences into another (equally good) map.
    """
    return _fit(
        _checked(features),
        method=method,
        seed=seed,
        n_neighbors=n_neighbors,
        pca_dims=pca_dims,
        fit_sample=fit_sample,
        place_k=place_k,
    )[0]


def _fit(
    x: NDArray[np.float32],
    *,
    method: str,
    seed: int,
    n_neighbors: int,
    pca_dims: int,
    fit_sample: int,
    place_k: int,
) -> tuple[MapModel, NDArray[np.float32]]:
    """``(model, every row projected)`` for checked rows ``x``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if fit_sample < 3:
        raise ValueError(f"fit_sample must be >= 3, got {fit_sample}")
    n, d = x.shape
    if n == 0:
        raise ValueError("features have no rows: there is nothing to fit a map on")
    if n <= 3:  # too few points for any neighbour graph: the first two principal axes
        reduced = reduce_pca(x, dims=2, seed=seed) if d > 2 else _unit(x)
        xy = np.zeros((n, 2), dtype=np.float32)
        xy[:, : reduced.shape[1]] = reduced[:, :2]
        every = np.arange(n, dtype=np.intp)
        return MapModel(n, d, None, None, every, xy, _unit(x), xy, place_k), _unit(x)
    mean, components = _fit_pca(x, dims=pca_dims, seed=seed)
    reduced = _project(_unit(x), mean, components)
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= fit_sample else np.sort(rng.choice(n, fit_sample, replace=False))
    fitted = (
        _fit_umap(reduced[sample], seed=seed, n_neighbors=n_neighbors)
        if method == "umap"
        else _fit_tsne(reduced[sample], seed=seed)
    )
    anchors = np.arange(len(sample))
    if len(anchors) > PLACE_ANCHORS:
        anchors = np.sort(rng.choice(len(sample), PLACE_ANCHORS, replace=False))
    model = MapModel(
        n_rows=n,
        dim=d,
        mean=mean,
        components=components,
        sample=np.asarray(sample, dtype=np.intp),
        sample_xy=fitted,
        anchors=np.ascontiguousarray(reduced[sample[anchors]]),
        anchor_xy=np.ascontiguousarray(fitted[anchors]),
        place_k=place_k,
    )
    return model, reduced


def place_rows(model: MapModel, features: Any, *, start: int = 0) -> NDArray[np.float32]:
    """Unscaled map positions of rows ``start, start + 1, ...`` of the fitted matrix.

    Rows of the sample keep their fitted position; the others are projected with the
    saved PCA and placed by :func:`place_by_neighbours`. Any split of the rows into
    consecutive blocks gives (up to float rounding) what one call over all gives.

    Returns
    -------
    float32 (len(features), 2)
    """
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    x = _checked(features)
    if len(x) and x.shape[1] != model.dim:
        raise ValueError(f"features have {x.shape[1]} dims, the map was fitted on {model.dim}")
    return _place(model, x, start=start)


def _place(
    model: MapModel,
    x: NDArray[np.float32],
    *,
    start: int,
    reduced: NDArray[np.float32] | None = None,
) -> NDArray[np.float32]:
    """:func:`place_rows` for checked rows; ``reduced``: their projection, if known."""
    index = np.arange(start, start + len(x))
    slot = np.searchsorted(model.sample, index)
    found = slot < len(model.sample)
    found[found] = model.sample[slot[found]] == index[found]
    xy = np.empty((len(x), 2), dtype=np.float32)
    xy[found] = model.sample_xy[slot[found]]
    rest = ~found
    if rest.any():
        points = (
            reduced[rest]
            if reduced is not None
            else _project(_unit(x[rest]), model.mean, model.components)
        )
        xy[rest] = place_by_neighbours(points, model.anchors, model.anchor_xy, k=model.place_k)
    return xy


def save_model(path: Path, model: MapModel, **extra: NDArray[Any]) -> None:
    """Write ``model`` (and ``extra`` arrays) as one ``.npz`` at ``path``, atomically."""
    arrays: dict[str, NDArray[Any]] = {
        "n_rows": np.asarray(model.n_rows, dtype=np.int64),
        "dim": np.asarray(model.dim, dtype=np.int64),
        "place_k": np.asarray(model.place_k, dtype=np.int64),
        "sample": np.asarray(model.sample, dtype=np.int64),
        "sample_xy": model.sample_xy,
        "anchors": model.anchors,
        "anchor_xy": model.anchor_xy,
    }
    if model.mean is not None and model.components is not None:
        arrays["mean"], arrays["components"] = model.mean, model.components
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        arrays.update({f"extra_{k}": np.asarray(v) for k, v in extra.items()})
        np.savez(fh, allow_pickle=False, **arrays)
    os.replace(tmp, path)


def load_model(path: Path) -> tuple[MapModel, dict[str, NDArray[Any]]]:
    """``(model, extra arrays)`` as written by :func:`save_model`."""
    with np.load(path, allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    model = MapModel(
        n_rows=int(a["n_rows"]),
        dim=int(a["dim"]),
        mean=a.get("mean"),
        components=a.get("components"),
        sample=np.asarray(a["sample"], dtype=np.intp),
        sample_xy=a["sample_xy"],
        anchors=a["anchors"],
        anchor_xy=a["anchor_xy"],
        place_k=int(a["place_k"]),
    )
    return model, {k[len("extra_") :]: v for k, v in a.items() if k.startswith("extra_")}


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
    """2-D map coordinates of item embeddings: :func:`fit_map`, :func:`place_rows`
    over every row, :func:`scale_to_unit`.

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
    x = _checked(features)
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    if fit_sample < 3:
        raise ValueError(f"fit_sample must be >= 3, got {fit_sample}")
    if len(x) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    model, reduced = _fit(
        x,
        method=method,
        seed=seed,
        n_neighbors=n_neighbors,
        pca_dims=pca_dims,
        fit_sample=fit_sample,
        place_k=place_k,
    )
    # the rows already projected: the map is the one embed_2d always made, bit for bit
    return scale_to_unit(_place(model, x, start=0, reduced=reduced))


def scale_to_unit(xy: NDArray[np.float32]) -> NDArray[np.float32]:
    """Centre and scale into [-1, 1] (the web app draws any range; tests compare shapes).

    Scale the positions of every row together: chunks of a map are placed apart and
    scaled once, when they are put together.
    """
    if not len(xy):
        return xy
    centre = (xy.max(axis=0) + xy.min(axis=0)) / 2.0
    half = float((xy.max(axis=0) - xy.min(axis=0)).max()) / 2.0
    return np.asarray((xy - centre) / (half if half > 0 else 1.0), dtype=np.float32)
