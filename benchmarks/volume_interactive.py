"""Interactive 3-D segmentation: feature time and memory, refit and update latency, clicks to Dice.

Data: nilearn's MNI152 2009a T1 template (1 mm, shipped in the nilearn wheel) and its
grey/white-matter probability maps thresholded at 0.5 as the reference masks.

1. Features of a newly opened volume (``voxel_features``), each size in a fresh process
   so that its peak RSS is its own: 128^3 (target < 10 s) and 256^3 (< 60 s, < 3 GB).
   The 256^3 volume is the template zero-padded.
2. Simulated user on the central 128^3 region: each click is at the voxel deepest inside
   the largest error region, labelling a ball with the true label: of radius 2 (a click,
   ``--brush 2``; as the service does, only the ball's voxels that look like the clicked
   one, ``click_ball``; ``--click-ball all`` labels the whole ball) or as large as fits
   inside the true structure, up to 4 (a careful user's brush, ``--brush adaptive``).
   After each click: refit (target < 0.5 s), update of the 64^3 box around the click,
   then the whole volume (target < 5 s). Target: Dice >= 0.90 within 10 clicks.
   ``--forest extra`` (the interactive service's choice) or ``random``.

Run: ``.venv/bin/python benchmarks/volume_interactive.py [--sizes 128 256] [--clicks 10]
[--brush 2 adaptive] [--click-ball similar all] [--forest extra random] [--seeds 0 1 2]``
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def mni() -> tuple[np.ndarray, np.ndarray]:
    """The T1 template (z, y, x) and labels 0 other / 1 grey / 2 white matter."""
    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("nilearn is not installed (pip install nilearn): it ships the MNI152 template")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"

    def load(name: str) -> np.ndarray:
        image = nib.load(folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz")
        return np.ascontiguousarray(np.asanyarray(image.dataobj).transpose(2, 1, 0))

    labels = np.zeros_like(load("t1"))
    labels[load("gm") > 127] = 1
    labels[load("wm") > 127] = 2
    return load("t1"), labels


def central(volume: np.ndarray, size: int) -> np.ndarray:
    """The central ``size``^3 region, zero-padded where the volume is smaller."""
    pads = [(max(0, size - n) // 2, max(0, size - n) - max(0, size - n) // 2) for n in volume.shape]
    padded = np.pad(volume, pads)
    starts = [(n - size) // 2 for n in padded.shape]
    return np.ascontiguousarray(padded[tuple(slice(s, s + size) for s in starts)])


def child_features(size: int) -> None:
    from loupe.features.voxels import voxel_features

    volume = central(mni()[0], size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    started = time.perf_counter()
    features = voxel_features(volume, workers=2)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(
        json.dumps(
            {
                "size": size,
                "seconds": seconds,
                "peak_gb": peak,
                "before_gb": base,
                "features_gb": features.nbytes / 1e9,
            }
        )
    )


def simulate(
    size: int,
    clicks: int,
    label: int,
    *,
    brush: str = "2",
    forest: str = "extra",
    seed: int = 0,
    similar: bool = True,
) -> dict[str, Any]:
    from loupe.features.voxels import voxel_features
    from loupe.learn.voxel_classifier import (
        VoxelClassifier,
        ball_points,
        brush_radius,
        click_ball,
        dice,
        error_click,
        view_box,
    )

    t1, labels = mni()
    volume, truth = central(t1, size), (central(labels, size) == label).astype(np.uint8)
    features = voxel_features(volume, workers=2)
    classifier = VoxelClassifier(n_jobs=2, seed=seed, extra_trees=forest == "extra")
    prediction = np.zeros_like(truth)
    points: list[np.ndarray] = []
    values: list[np.ndarray] = []
    rows: list[dict[str, Any]] = []
    for click in range(1, clicks + 1):
        centre, value = error_click(prediction, truth)
        if brush == "adaptive":  # a scribble: every voxel of the brush
            radius = brush_radius(truth, centre)
            ball = ball_points(centre, radius, truth.shape)
        else:  # a click, as the interactive service labels it
            radius = int(brush)
            ball = (
                click_ball(features, centre, radius)
                if similar
                else ball_points(centre, radius, truth.shape)
            )
        points.append(ball)
        values.append(np.full(len(ball), value))
        if np.unique(np.concatenate(values)).size < 2:
            prediction = np.full_like(truth, value)
            rows.append({"click": click, "dice": dice(prediction, truth)})
            continue
        started = time.perf_counter()
        classifier.fit(features, np.concatenate(points), np.concatenate(values))
        fit = time.perf_counter() - started
        started = time.perf_counter()
        box = view_box(centre, 64, truth.shape)
        prediction[box] = classifier.predict_box(features, box)
        view = time.perf_counter() - started
        started = time.perf_counter()
        prediction = classifier.predict_volume(features)
        whole = time.perf_counter() - started
        rows.append(
            {
                "click": click,
                "radius": radius,
                "fit_s": round(fit, 3),
                "view_s": round(view, 3),
                "volume_s": round(whole, 3),
                "dice": round(dice(prediction, truth), 4),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    reached = next((r["click"] for r in rows if float(r["dice"]) >= 0.90), None)
    return {"label": label, "size": size, "clicks_to_0.90": reached, "rows": rows}


def summary(runs: list[dict[str, Any]]) -> str:
    """First click at Dice >= 0.90, the Dice at the last click and the worst of the last
    three, per seed; then the latencies over all runs."""
    rows = [[r for r in run["rows"] if "fit_s" in r] for run in runs]
    dices = [[float(r["dice"]) for r in run["rows"]] for run in runs]
    fits = [float(r["fit_s"]) for run in rows for r in run]
    views = [float(r["view_s"]) for run in rows for r in run]
    volumes = [float(r["volume_s"]) for run in rows for r in run]
    return (
        f"Dice >= 0.90 first after {[run['clicks_to_0.90'] for run in runs]} clicks; "
        f"at the last click {[round(d[-1], 3) for d in dices]} "
        f"(mean {np.mean([d[-1] for d in dices]):.3f}); "
        f"worst of the last 3 {[round(min(d[-3:]), 3) for d in dices]}; "
        f"refit median {np.median(fits):.3f} s (max {max(fits):.3f}), "
        f"view 64^3 median {np.median(views):.3f} s, "
        f"whole volume median {np.median(volumes):.2f} s (max {max(volumes):.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--clicks", type=int, default=10)
    parser.add_argument("--labels", type=int, nargs="*", default=[2, 1], help="2 WM, 1 GM")
    parser.add_argument("--brush", nargs="*", default=["2", "adaptive"], help="2 or adaptive")
    parser.add_argument("--forest", nargs="*", default=["extra"], help="extra or random")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--click-ball", choices=["similar", "all"], default="similar")
    parser.add_argument("--child-features", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_features:
        child_features(args.child_features)
        return 0
    print(f"load average {os.getloadavg()}")
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child-features", str(size)],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        target = 10.0 if size <= 128 else 60.0
        print(
            f"features {size}^3: {result['seconds']:.1f} s (target < {target:.0f} s), "
            f"peak RSS {result['peak_gb']:.2f} GB (features {result['features_gb']:.2f} GB)"
        )
    for forest in args.forest:
        for brush in args.brush:
            for label in args.labels:
                runs = []
                for seed in args.seeds:
                    print(f"-- {forest} trees, brush {brush}, label {label}, seed {seed}")
                    runs.append(
                        simulate(
                            128,
                            args.clicks,
                            label,
                            brush=brush,
                            forest=forest,
                            seed=seed,
                            similar=args.click_ball == "similar",
                        )
                    )
                name = {1: "grey matter", 2: "white matter"}[label]
                how = f"{forest} trees, brush {brush}" + (
                    f" ({args.click_ball} click ball)" if brush != "adaptive" else ""
                )
                print(f"{name} 128^3, {how}: {summary(runs)}", flush=True)
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
