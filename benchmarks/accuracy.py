"""Accuracy and calibration of the default ensemble with 20 labels per class, on real images.

Two real labelled image sets that ship inside wheels already installed (no download):

* ``digits``: scikit-learn's ``load_digits`` (the UCI optical handwritten digits: 1,797
  real 8 x 8 scans, 16 grey levels, 10 classes, 174-183 per class); each image is
  scaled to 0-255, upscaled bilinearly to 64 x 64 and repeated to RGB.
* ``lfw``: scikit-image's ``skimage.data.lfw_subset()`` (200 real 25 x 25 grey crops
  from Labeled Faces in the Wild: the first 100 faces, the next 100 non-faces);
  upscaled bilinearly to 64 x 64, to RGB.

Every image is embedded with ``effnet-lite0``, ``mobilenet_v2`` (ONNX Runtime) and
``classic`` through ``Backbone.embed`` (which resizes to each backbone's input; the
matrices are cached under ``benchmarks/.cache/accuracy/``). For each of 5 seeds, 20
labelled examples per class are drawn; ``train_classifier_ensemble`` is trained on them
(``X_all`` = every image) with the default members {effnet-lite0, mobilenet_v2}, and
separately with one member: effnet-lite0, mobilenet_v2, classic (and, for information,
all three as members). Everything is evaluated
on ALL the other (unlabelled) images:

* accuracy, balanced accuracy and per-class recall of the final predictions;
* ECE (15 bins, top label) of the raw probabilities (T = 1: softmax of each head's
  logits, ``ClassifierHead.logits``, averaged over members) against the calibrated ones
  the result gives (``predictions.probs``: member temperatures fitted on out-of-fold
  logits, then the ensemble temperature on the members' mixture);
* triage: how many held-out items were flagged, and the accuracy on flagged vs unflagged
  items (the reasons' counts too);
* the out-of-fold accuracy and calibrated ECE the trainer reports from the 20 x k labels
  only (what Loupe shows a user), next to the held-out truth.

Figures are mean +- sd over the seeds. The load average is printed (timings are only
for information here).

Run: ``.venv/bin/python benchmarks/accuracy.py [--seeds 5] [--per-class 20]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

CACHE = Path(__file__).resolve().parent / ".cache"
FEATURES = CACHE / "accuracy"
ONNX_CACHE = CACHE / "onnx"
BACKBONES = ("effnet-lite0", "mobilenet_v2", "classic")
CONFIGS = {
    "ensemble (effnet+mobilenet)": ("effnet-lite0", "mobilenet_v2"),
    "effnet-lite0 alone": ("effnet-lite0",),
    "mobilenet_v2 alone": ("mobilenet_v2",),
    "classic alone": ("classic",),
    "(info) all three members": ("effnet-lite0", "mobilenet_v2", "classic"),
}
SIDE = 64  # the images are upscaled to this before Backbone.embed (which resizes again)


# -- the data ------------------------------------------------------------------------------


def _to_rgb(grey: np.ndarray) -> np.ndarray:
    """float grey image in [0, 1] -> uint8 RGB SIDE x SIDE, bilinear upscale."""
    from PIL import Image

    image = Image.fromarray(np.clip(np.rint(grey * 255.0), 0, 255).astype(np.uint8))
    big = np.asarray(image.resize((SIDE, SIDE), Image.Resampling.BILINEAR))
    return np.repeat(big[..., None], 3, axis=-1)


def load_digits_set() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [_to_rgb(image / 16.0) for image in digits.images]
    return images, digits.target.astype(np.int64), [str(d) for d in range(10)]


def load_lfw_set() -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    import skimage.data

    crops = skimage.data.lfw_subset()  # (200, 25, 25) float64 in [0, 1]
    images = [_to_rgb(crop) for crop in crops]
    labels = np.array([0] * 100 + [1] * 100, dtype=np.int64)
    return images, labels, ["face", "non-face"]


DATASETS = {"digits": load_digits_set, "lfw": load_lfw_set}
SOURCES = {
    "digits": "scikit-learn load_digits (in the scikit-learn wheel)",
    "lfw": "scikit-image skimage.data.lfw_subset() (in the scikit-image wheel)",
}


def embeddings(dataset: str, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """``{backbone: (N, dim)}``, computed once and cached."""
    from loupe.features import get_backbone

    FEATURES.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in BACKBONES:
        path = FEATURES / f"{dataset}-{SIDE}px-{name}.npy"
        if path.is_file():
            matrix = np.load(path)
            if matrix.shape[0] == len(images):
                out[name] = matrix
                continue
        options = {} if name == "classic" else {"cache_dir": ONNX_CACHE}
        backbone = get_backbone(name, **options)
        start = time.perf_counter()
        matrix = backbone.embed(images)
        seconds = time.perf_counter() - start
        print(
            f"  embedded {dataset} with {name}: {len(images)} images in {seconds:.1f} s "
            f"({len(images) / seconds:.0f} images/s)",
            flush=True,
        )
        np.save(path, matrix)
        out[name] = matrix
    return out


# -- one run -------------------------------------------------------------------------------


def draw_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(chosen))


def evaluate(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    class_names: list[str],
    members: tuple[str, ...],
    labelled: np.ndarray,
    seed: int,
) -> dict:
    from loupe.learn import ClassifierHead, expected_calibration_error
    from loupe.learn.calibration import softmax
    from loupe.learn.ensemble import combine_members
    from loupe.learn.train import train_classifier_ensemble

    held_out = np.setdiff1d(np.arange(len(labels)), labelled)
    member_features = {name: (features[name][labelled], features[name]) for name in members}
    start = time.perf_counter()
    result = train_classifier_ensemble(member_features, labels[labelled], class_names, seed=seed)
    train_seconds = time.perf_counter() - start

    truth = labels[held_out]
    final = result.predictions.probs[held_out]
    raw = combine_members(
        [
            softmax(ClassifierHead.from_state(result.heads[name]).logits(features[name][held_out]))
            for name in members
        ]
    )
    predicted = final.argmax(axis=1)
    correct = predicted == truth
    recall = np.array([np.mean(correct[truth == c]) for c in range(len(class_names))])
    flagged = result.predictions.flagged[held_out]
    reasons = Counter(r for r in np.asarray(result.predictions.reason, dtype=object)[held_out] if r)
    oof = result.ensemble_metrics or {}
    return {
        "accuracy": float(np.mean(correct)),
        "balanced_accuracy": float(np.mean(recall)),
        "recall": recall,
        "ece_raw": expected_calibration_error(raw, truth),
        "ece_cal": expected_calibration_error(final, truth),
        "raw_changes_argmax": float(np.mean(raw.argmax(axis=1) != predicted)),
        "temperatures": [result.temperatures[name] for name in members],
        "ensemble_temperature": result.ensemble_temperature,
        "flagged": float(np.mean(flagged)),
        "n_flagged": int(flagged.sum()),
        "n_correct_flagged": int(correct[flagged].sum()),
        "n_errors": int((~correct).sum()),
        "acc_flagged": float(np.mean(correct[flagged])) if flagged.any() else np.nan,
        "acc_unflagged": float(np.mean(correct[~flagged])) if (~flagged).any() else np.nan,
        "reasons": reasons,
        "oof_accuracy": oof.get("accuracy", np.nan),
        "oof_ece": oof.get("ece_after", np.nan),
        "n_held_out": len(held_out),
        "train_seconds": train_seconds,
    }


# -- the tables ----------------------------------------------------------------------------


def _ms(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    array = np.asarray(values, dtype=float) * scale
    array = array[~np.isnan(array)]
    if len(array) == 0:
        return "n/a"
    if len(array) == 1:
        return f"{array[0]:.{digits}f} (1)"
    return f"{array.mean():.{digits}f}±{array.std(ddof=1):.{digits}f}"


def _pooled(rows: list[dict]) -> str:
    flagged = sum(r["n_flagged"] for r in rows)
    if flagged == 0:
        return "n/a"
    return f"{sum(r['n_correct_flagged'] for r in rows) / flagged:.3f}"


def _caught(rows: list[dict]) -> str:
    errors = sum(r["n_errors"] for r in rows)
    if errors == 0:
        return "n/a"
    missed = sum(r["n_flagged"] - r["n_correct_flagged"] for r in rows)
    return f"{missed / errors:.0%}"


def report(dataset: str, class_names: list[str], runs: dict[str, list[dict]]) -> None:
    first = next(iter(runs.values()))[0]
    print(
        f"\n{dataset}: {SOURCES[dataset]}; {len(first['recall'])} classes, "
        f"{first['n_held_out']} held-out items per seed, {len(next(iter(runs.values())))} seeds"
    )
    header = (
        f"  {'heads on':<28}{'accuracy':>13}{'balanced':>13}{'ECE T=1':>13}{'ECE calib.':>13}"
        f"{'flagged n (%)':>17}{'acc flagged':>13}{'acc unflag.':>13}{'OOF acc':>13}{'OOF ECE':>13}"
    )
    print(header)
    for config, rows in runs.items():
        pick = lambda key, rows=rows: [r[key] for r in rows]  # noqa: E731
        print(
            f"  {config:<28}{_ms(pick('accuracy')):>13}{_ms(pick('balanced_accuracy')):>13}"
            f"{_ms(pick('ece_raw')):>13}{_ms(pick('ece_cal')):>13}"
            f"{np.mean(pick('n_flagged')):>8.1f} ({np.mean(pick('flagged')):5.1%})"
            f"{_pooled(rows):>13}"
            f"{_ms(pick('acc_unflagged')):>13}{_caught(rows):>16}{_ms(pick('oof_accuracy')):>13}"
            f"{_ms(pick('oof_ece')):>13}"
        )
    print("  temperatures (mean over seeds) and flag reasons on held-out items (total over seeds):")
    for config, rows in runs.items():
        temps = np.mean([r["temperatures"] for r in rows], axis=0)
        reasons: Counter[str] = sum((r["reasons"] for r in rows), Counter())
        print(
            f"    {config:<28} member T {', '.join(f'{t:.2f}' for t in temps)}; ensemble T "
            f"{np.mean([r['ensemble_temperature'] for r in rows]):.2f}; "
            f"T=1 argmax differs on {np.mean([r['raw_changes_argmax'] for r in rows]):.1%}; "
            f"{dict(reasons) or 'none flagged'}; "
            f"train {np.mean([r['train_seconds'] for r in rows]):.2f} s"
        )
    print("  per-class recall (mean over seeds):")
    width = max(7, max(len(c) for c in class_names) + 2)
    print(f"    {'heads on':<28}" + "".join(f"{c:>{width}}" for c in class_names))
    for config, rows in runs.items():
        recall = np.mean([r["recall"] for r in rows], axis=0)
        print(f"    {config:<28}" + "".join(f"{v:>{width}.3f}" for v in recall))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()

    print(f"cores: {os.cpu_count()}; load average before: {os.getloadavg()}", flush=True)
    for dataset in args.datasets:
        images, labels, class_names = DATASETS[dataset]()
        features = embeddings(dataset, images)
        runs: dict[str, list[dict]] = {config: [] for config in CONFIGS}
        for seed in range(args.seeds):
            labelled = draw_labelled(labels, args.per_class, seed)
            for config, members in CONFIGS.items():
                runs[config].append(
                    evaluate(features, labels, class_names, members, labelled, seed)
                )
        report(dataset, class_names, runs)
    print(
        f"\n{args.per_class} labels per class, seeds 0..{args.seeds - 1}; ECE: 15 equal-width "
        "bins, top label; 'ECE T=1' = mean over members of softmax(head logits), no "
        "temperature; 'ECE calib.' = predictions.probs (member + ensemble temperatures)."
    )
    print(
        "'acc flagged': accuracy on the held-out items triage flagged, pooled over the seeds "
        "(correct / flagged); 'acc unflag.': mean ± sd over seeds; 'errors flagged': share of "
        "the held-out errors that triage flagged (pooled); '(info)' rows are extra."
    )
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
