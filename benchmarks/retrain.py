"""Retrain latency: from a new label to fresh predictions on every item.

Synthetic features shaped like the real ones: two members (dim 1280, as
effnet-lite0 and mobilenet_v2), float32, non-negative (post-ReLU pooling),
L2-normalised, 10 classes whose means differ a little (a task where a linear
head reaches roughly 80-90% accuracy), the second member a noisy view of the
same items. Times ``train_classifier_ensemble`` end to end: k-fold CV per
member, temperature, conformal threshold, final fits, predicting, triaging
every item. Targets: 2 s at 10,000 items, 15 s at 100,000. Also the score
ensemble (two metrics, stepped projections of the features) at 10,000 items.

Run: ``.venv/bin/python benchmarks/retrain.py [--items 10000 100000] [--labelled 200 1000]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from loupe.learn.train import train_classifier_ensemble, train_score_ensemble  # noqa: E402

TARGETS = {10_000: 2.0, 100_000: 15.0}
DIM = 1280
N_CLASSES = 10


def synthetic_members(n_items: int, *, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of two members ``{name: (n_items, DIM)}`` and the true classes."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, N_CLASSES, n_items)
    members = {}
    for m, name in enumerate(("effnet-lite0", "mobilenet_v2")):
        centers = rng.gamma(1.0, 1.0, size=(N_CLASSES, DIM)).astype(np.float32)
        features = np.empty((n_items, DIM), dtype=np.float32)
        for start in range(0, n_items, 20_000):
            stop = min(n_items, start + 20_000)
            noise = rng.gamma(1.0, 1.0, size=(stop - start, DIM)).astype(np.float32)
            features[start:stop] = (0.12 - 0.02 * m) * centers[classes[start:stop]] + noise
        features /= np.linalg.norm(features, axis=1, keepdims=True)
        members[name] = features
    return members, classes


def _time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--labelled", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    # warm-up: first SciPy / BLAS use in the process is not what a worker pays per retrain
    warm, warm_y = synthetic_members(300, seed=1)
    train_classifier_ensemble(
        {k: (v[:100], v) for k, v in warm.items()}, warm_y[:100], [str(c) for c in range(10)]
    )

    train_score_ensemble(
        {k: (v[:100], v) for k, v in warm.items()},
        warm_y[:100, None].astype(float),
        [{"name": "x", "min": 0, "max": 9, "step": 1}],
    )

    failed = False
    class_names = [f"class_{c}" for c in range(N_CLASSES)]
    for n_items in args.items:
        members, truth = synthetic_members(n_items)
        target = TARGETS.get(n_items)
        for n_labelled in args.labelled:
            rng = np.random.default_rng(n_labelled)
            labelled = rng.choice(n_items, size=n_labelled, replace=False)
            features = {name: (x[labelled], x) for name, x in members.items()}
            seconds, result = _time(
                lambda f=features, y=truth[labelled]: train_classifier_ensemble(
                    f, y, class_names, threshold=0.8, seed=0
                ),
                args.repeats,
            )
            ens = {"accuracy": np.nan, "ece_before": np.nan, "ece_after": np.nan}
            ens.update(result.ensemble_metrics or {})
            phases = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
            ratio = f" = {seconds / target:.2f} x target {target:.0f} s" if target else ""
            print(
                f"classes  items {n_items:>7,}  labelled {n_labelled:>5}: {seconds:6.2f} s{ratio}"
                f"  | OOF acc {ens['accuracy']:.3f}"
                f" ECE {ens['ece_before']:.3f}->{ens['ece_after']:.3f}"
                f" flagged {result.predictions.flagged.mean():.1%}  ({phases})",
                flush=True,
            )
            failed |= bool(target and seconds > target)

    n_items = 10_000
    members, truth = synthetic_members(n_items, seed=2)
    specs = [
        {"name": "grade", "min": 1, "max": 5, "step": 1},
        {"name": "area", "min": 0, "max": 10, "step": 0.5},
    ]
    # scores that a linear head can learn: a projection of the features, cut into steps
    direction = np.random.default_rng(3).normal(size=DIM).astype(np.float32)
    signal = members["effnet-lite0"] @ direction
    signal = (signal - signal.min()) / (signal.max() - signal.min())
    scores = np.stack([1 + np.round(4 * signal), np.round(20 * signal) / 2], axis=1)
    for n_labelled in args.labelled:
        labelled = np.random.default_rng(n_labelled).choice(n_items, n_labelled, replace=False)
        features = {name: (x[labelled], x) for name, x in members.items()}
        seconds, result = _time(
            lambda f=features, lab=labelled: train_score_ensemble(f, scores[lab], specs, seed=0),
            args.repeats,
        )
        mae = (result.ensemble_metrics or {}).get("per_metric", {}).get("grade", {}).get("mae")
        phases = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
        print(
            f"scores   items {n_items:>7,}  labelled {n_labelled:>5}: {seconds:6.2f} s"
            f" = {seconds / TARGETS[n_items]:.2f} x target 2 s  | OOF grade MAE {mae:.3f}"
            f" flagged {result.predictions.flagged.mean():.1%}  ({phases})",
            flush=True,
        )
        failed |= seconds > TARGETS[n_items]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
