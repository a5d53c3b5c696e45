"""Dice against the number of simulated clicks (issue 13, benchmark e).

Three real images with reference masks, each shipped inside a PyPI package (files read
straight from the installed package or from its wheel; nothing is downloaded at run time):

=========  ====================================================================  ========
name       image / reference mask (package==version: path in the wheel)           size
=========  ====================================================================  ========
nuclei     fluorescence microscopy, 2018 Data Science Bowl (Caicedo et al. 2019)  512x512
           ``stardist==0.9.2``: ``stardist/data/images/img2d.tif`` /
           ``stardist/data/images/mask2d.tif`` (instance labels; foreground = > 0)
quokka     photo ``imgaug==0.4.0``: ``imgaug/quokka.jpg`` / the hand-drawn         643x960
           polygon in ``imgaug/quokka_annotations.json`` (rasterised)
mni-wm     MRI, ICBM 2009a T1 template, axial slice z=100 (of 189), ``nilearn``:    197x233
           ``nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``
           / white matter = ``..._wm_tal_nlin_sym_09a_converted.nii.gz`` > 50 %
=========  ====================================================================  ========

Get them once (no install needed): ``pip download --no-deps stardist==0.9.2
imgaug==0.4.0 nilearn -d ~/.cache/loupe-bench/wheels`` (or ``--wheels DIR``).

The simulated user (as in interactive-segmentation papers): each click goes to the
interior (the distance-transform maximum) of the largest connected error region of
the current prediction, labelled with the true class there, as a disk of radius 3 px
(smaller when the region is thinner). After every click the head is refit on all labels
and the mask predicted on the feature grid and bilinearly upsampled. Dice of the
foreground is printed at 5 / 10 / 20 / 40 clicks for each feature set with the logistic
head (and the MLP on the default set), against an ilastik-style baseline: the filter bank
at full resolution + a random forest (100 trees).

Targets: mean Dice >= 0.89 at 20 clicks and >= 0.91 at 40 with one fixed default feature
set, >= 0.05 above the baseline at 20 clicks.

Run: ``.venv/bin/python benchmarks/segment_clicks.py [--wheels DIR] [--images nuclei ...]``
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import io
import json
import statistics
import sys
import time
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

from loupe.features.grids import upsample_to_pixels
from loupe.features.pixels import (
    FeatureGrid,
    PixelFeatures,
    parse_feature_set,
    pixel_features,
    to_gray,
    to_rgb_uint8,
)
from loupe.learn.pixel_heads import (
    UNLABELLED,
    LogisticPixelHead,
    MlpPixelHead,
    PixelHead,
    empty_labels,
    rasterize_clicks,
    training_set,
)

CHECKPOINTS = (5, 10, 20, 40)
FEATURE_SETS = (
    "filters",
    "effnet-lite0",
    "mobilenet_v2",
    "effnet-lite0+filters",
    "mobilenet_v2+filters",
)
DEFAULT_SET = "effnet-lite0+filters"
DEFAULT_WHEELS = Path.home() / ".cache" / "loupe-bench" / "wheels"
WHEELS = {"nuclei": "stardist", "quokka": "imgaug", "mni-wm": "nilearn"}


# --- data ---------------------------------------------------------------------------------


def package_bytes(distribution: str, member: str, wheels: Path) -> bytes:
    """A file of an installed distribution, else of its wheel in ``wheels``."""
    try:
        for entry in importlib.metadata.files(distribution) or []:
            if str(entry).replace("\\", "/") == member:
                return Path(str(entry.locate())).read_bytes()
    except importlib.metadata.PackageNotFoundError:
        pass
    for wheel in sorted(wheels.glob(f"{distribution}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return archive.read(member)
    raise SystemExit(
        f"{member} not found: pip download --no-deps {distribution} -d {wheels} "
        "(or pass --wheels DIR)"
    )


def load_nuclei(wheels: Path) -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    image = tifffile.imread(io.BytesIO(package_bytes("stardist", _S + "img2d.tif", wheels)))
    mask = tifffile.imread(io.BytesIO(package_bytes("stardist", _S + "mask2d.tif", wheels)))
    return image, mask > 0


_S = "stardist/data/images/"


def load_quokka(wheels: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image
    from skimage.draw import polygon2mask

    image = np.asarray(Image.open(io.BytesIO(package_bytes("imgaug", "imgaug/quokka.jpg", wheels))))
    notes = json.loads(package_bytes("imgaug", "imgaug/quokka_annotations.json", wheels))
    vertices = np.array([(p["y"], p["x"]) for p in notes["polygons"][0]["keypoints"]])
    return image, polygon2mask(image.shape[:2], vertices)


def load_mni(wheels: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel

    def volume(kind: str) -> np.ndarray:
        member = f"nilearn/datasets/data/mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
        data = gzip.decompress(package_bytes("nilearn", member, wheels))
        return np.asanyarray(nibabel.Nifti1Image.from_bytes(data).dataobj)

    # Axial slice, rotated so that anterior is up (display orientation).
    t1 = np.rot90(volume("t1")[:, :, 100])
    wm = np.rot90(volume("wm")[:, :, 100])
    return np.ascontiguousarray(t1), np.ascontiguousarray(wm > 127)


LOADERS: dict[str, Callable[[Path], tuple[np.ndarray, np.ndarray]]] = {
    "nuclei": load_nuclei,
    "quokka": load_quokka,
    "mni-wm": load_mni,
}


# --- the simulated user -------------------------------------------------------------------


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, float]:
    """``(row, col, class, radius)`` in the interior of the largest error region."""
    error = pred != truth
    regions, count = ndimage.label(error)
    sizes = np.bincount(regions.ravel())[1:]
    largest = regions == (int(np.argmax(sizes)) + 1)
    depth = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(depth)), depth.shape)
    radius = float(min(3.0, max(depth[row, col] - 1.0, 0.0)))
    return int(row), int(col), int(truth[row, col]), radius


Predict = Callable[[np.ndarray], np.ndarray]
"""labels -> predicted boolean mask (full resolution)."""


def simulate(truth: np.ndarray, predict: Predict, clicks: int = 40) -> dict[int, float]:
    labels = empty_labels(truth.shape)
    pred = np.zeros_like(truth)
    scores: dict[int, float] = {}
    for n in range(1, clicks + 1):
        row, col, value, radius = next_click(pred, truth)
        rasterize_clicks(labels, [row], [col], [value], radius=radius)
        present = np.unique(labels[labels != UNLABELLED])
        pred = predict(labels) if len(present) > 1 else np.full_like(truth, bool(present[0]))
        if n in CHECKPOINTS:
            scores[n] = dice(pred, truth)
    return scores


def head_predictor(features: PixelFeatures, make_head: Callable[[], PixelHead]) -> Predict:
    head = make_head()  # one head per run: the MLP warm-starts from its previous fit

    def predict(labels: np.ndarray) -> np.ndarray:
        head.fit(*training_set(features, labels))
        proba = upsample_to_pixels(head.predict_proba(features), features.stride, features.shape)
        return np.asarray(head.classes_[proba.argmax(axis=2)] == 1)

    return predict


def forest_predictor(bank: np.ndarray) -> Predict:
    """ilastik's default: a random forest on a full-resolution filter bank."""
    from sklearn.ensemble import RandomForestClassifier

    flat = bank.reshape(-1, bank.shape[2])

    def predict(labels: np.ndarray) -> np.ndarray:
        where = labels.ravel() != UNLABELLED
        forest = RandomForestClassifier(n_estimators=100, n_jobs=2, random_state=0)
        out = np.empty(len(flat), dtype=bool)
        with warnings.catch_warnings():
            # scikit-learn's joblib note about propagating its config to the workers,
            # once per tree and click: noise that buries the results.
            warnings.filterwarnings("ignore", message=".*sklearn.utils.parallel.delayed")
            forest.fit(flat[where], labels.ravel()[where])
            for start in range(0, len(flat), 1 << 17):
                chunk = flat[start : start + (1 << 17)]
                out[start : start + (1 << 17)] = forest.predict(chunk) == 1
        return out.reshape(labels.shape)

    return predict


def baseline_bank(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """ilastik's default features: scikit-image's ``multiscale_basic_features`` on the
    full-resolution luminance (sigma 0.5-16 px), called directly so that speed work on
    :func:`loupe.features.filter_bank.filter_bank` can never change the baseline."""
    from skimage.feature import multiscale_basic_features

    if channel_axis is None:  # gray: min-max scaled, as the filter bank does
        values = image.astype(np.float32)
        gray = (values - values.min()) / max(float(values.max() - values.min()), 1e-6)
    else:
        gray = to_gray(to_rgb_uint8(image, channel_axis=channel_axis))
    return multiscale_basic_features(gray, sigma_min=0.5, sigma_max=16, num_sigma=6, workers=1)


# --- main ---------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS)
    parser.add_argument("--images", nargs="+", default=list(LOADERS), choices=list(LOADERS))
    parser.add_argument("--sets", nargs="+", default=list(FEATURE_SETS))
    parser.add_argument("--clicks", type=int, default=40)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--no-mlp", action="store_true")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/loupe-bench-onnx"))
    args = parser.parse_args()

    runs: dict[str, dict[str, dict[int, float]]] = {}
    for name in args.images:
        image, truth = LOADERS[name](args.wheels)
        channel_axis = -1 if image.ndim == 3 else None
        print(
            f"{name}: image {image.shape} {image.dtype}, foreground {truth.mean():.1%}",
            flush=True,
        )
        parts_needed = sorted({p for s in args.sets for p in parse_feature_set(s)})
        start = time.perf_counter()
        full = pixel_features(
            image, "+".join(parts_needed), channel_axis=channel_axis, cache_dir=args.cache_dir
        )
        grids = {g.name: g for g in full.parts}
        print(f"  features {'+'.join(parts_needed)}: {time.perf_counter() - start:.2f} s")
        configs: list[tuple[str, Predict]] = []
        for feature_set in args.sets:
            chosen = tuple(grids[p] for p in parse_feature_set(feature_set))
            features = PixelFeatures(
                full.shape, tuple(FeatureGrid(g.name, g.stride, g.data) for g in chosen)
            )
            configs.append(
                (f"{feature_set} / logistic", head_predictor(features, LogisticPixelHead))
            )
            if feature_set == DEFAULT_SET and not args.no_mlp:
                configs.append((f"{feature_set} / mlp", head_predictor(features, MlpPixelHead)))
        if not args.no_baseline:
            bank = baseline_bank(image, channel_axis)
            configs.append(("baseline: filters full-res / random forest", forest_predictor(bank)))
        for label, predict in configs:
            start = time.perf_counter()
            scores = simulate(truth, predict, args.clicks)
            per_click = (time.perf_counter() - start) / args.clicks
            runs.setdefault(label, {})[name] = scores
            shown = "  ".join(f"{k:>2}: {v:.3f}" for k, v in scores.items())
            print(f"  {label:<45} {shown}   ({per_click:.2f} s/click)", flush=True)

    print("\nmean Dice over images:")
    means: dict[str, dict[int, float]] = {}
    for label, by_image in runs.items():
        means[label] = {
            k: statistics.fmean(s[k] for s in by_image.values())
            for k in CHECKPOINTS
            if k <= args.clicks
        }
        shown = "  ".join(f"{k:>2}: {v:.3f}" for k, v in means[label].items())
        print(f"  {label:<45} {shown}")
    default = f"{DEFAULT_SET} / logistic"
    baseline = next((m for label, m in means.items() if label.startswith("baseline")), None)
    if default in means and 40 in means[default]:
        ok20 = means[default][20] >= 0.89
        ok40 = means[default][40] >= 0.91
        print(
            f"\ndefault {default}: @20 {means[default][20]:.3f} (target >= 0.89: {ok20}), "
            f"@40 {means[default][40]:.3f} (target >= 0.91: {ok40})"
        )
        if baseline is not None:
            gap = means[default][20] - baseline[20]
            print(f"gap to baseline @20: {gap:+.4f} (target >= +0.05: {gap >= 0.05})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
