"""The 2-D map at scale: how much of it the chunk jobs can share out.

The ``map`` job fits PCA and UMAP on a sample of at most 10,000 items (one
computation, in the parent job) and places every item with the saved model in
chunks of 25,000 rows (``map.chunk`` jobs, any worker). This script times the two
parts in one process on ``--n`` synthetic embeddings (``--dim`` wide, ``--clusters``
Gaussian clusters, float32), checks that placing in chunks gives the same map as
placing all rows at once, and prints the part that chunks can spread over workers
and the speed-up the chunking allows with 2 workers (Amdahl: fit + place vs fit +
place / 2; transfer and scheduling not counted).

Run: ``.venv/bin/python benchmarks/map_chunks.py [--n 100000] [--dim 1280]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--clusters", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=25_000, help="rows per map.chunk job")
    args = parser.parse_args()
    from loupe.select.map2d import fit_map, numba_cache_dir, place_rows, scale_to_unit

    numba_cache_dir(HERE / ".cache" / "numba")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (args.clusters, args.dim)).astype(np.float32)
    labels = rng.integers(0, args.clusters, args.n)
    x = centres[labels] + rng.normal(0, 0.8, (args.n, args.dim)).astype(np.float32)
    x = np.abs(x)  # post-ReLU embeddings are non-negative
    print(f"{args.n:,} x {args.dim} float32 embeddings, {args.clusters} clusters", flush=True)
    fit_map(x[:2000], method="umap", seed=0)  # numba compiles once per machine
    t0 = time.perf_counter()
    model = fit_map(x, method="umap", seed=0)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    whole = place_rows(model, x)
    place_s = time.perf_counter() - t0
    parts = [
        place_rows(model, x[start : start + args.chunk], start=start)
        for start in range(0, args.n, args.chunk)
    ]
    chunked = np.concatenate(parts)
    same = bool(np.allclose(scale_to_unit(whole), scale_to_unit(chunked), atol=1e-5))
    # the parts ride between jobs as .npy files: time one write + read
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for k, part in enumerate(parts):
            np.save(os.path.join(tmp, f"part-{k}.npy"), part)
        np.concatenate([np.load(os.path.join(tmp, f"part-{k}.npy")) for k in range(len(parts))])
        io_s = time.perf_counter() - t0
    total = fit_s + place_s
    two = fit_s + place_s / 2
    print(f"  fit (PCA + UMAP on the sample, one job): {fit_s:6.1f} s")
    print(
        f"  place every row ({len(parts)} chunks of {args.chunk:,}): {place_s:6.1f} s "
        f"(chunked placing equals placing at once: {same}); parts written and read {io_s:.2f} s"
    )
    print(
        f"  share that chunks spread over workers: {place_s / total:.0%}; "
        f"2 workers at most {total / two:.2f}x faster than 1"
    )
    return 0 if same else 1


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent / "src"))
    raise SystemExit(main())
