"""Time the ``segment_train`` job's steps on a 1024 x 1024 real image.

scikit-image's ``coins`` upscaled to 1024 x 1024, 20 foreground + 20 background clicks
(disks r=3 inside an Otsu reference mask): feature precompute (cached, memory-mapped),
one training epoch of each pixel head (:class:`loupe.learn.pixel_epochs.EpochTrainer`),
one heatmap prediction on the 1/2 grid, and the Dice of that prediction against the
Otsu reference. Run: ``.venv/bin/python benchmarks/segment_train.py [feature set]``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import skimage.data
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.transform import resize

from loupe.features.grids import upsample_to_pixels
from loupe.features.pixel_cache import PixelFeatureCache
from loupe.learn.pixel_epochs import EpochTrainer
from loupe.learn.pixel_heads import empty_labels, rasterize_clicks, training_set


def main(feature_set: str) -> None:
    image = (resize(skimage.data.coins(), (1024, 1024)) * 255).astype(np.uint8)
    truth = ndimage.binary_fill_holes(image > threshold_otsu(image))
    work = Path(tempfile.mkdtemp(prefix="segbench-"))
    onnx = Path(tempfile.gettempdir()) / "loupe-test-cache" / "pixel-onnx"
    try:
        cache = PixelFeatureCache(work / "pixels")
        started = time.perf_counter()
        feats = cache.get_or_compute("a", image, feature_set, cache_dir=onnx)
        feature_s = time.perf_counter() - started
        rng = np.random.default_rng(0)
        labels = empty_labels(image.shape)
        for value in (0, 1):
            rows, cols = np.nonzero(ndimage.binary_erosion(truth == value, iterations=5))
            pick = rng.choice(len(rows), 20, replace=False)
            rasterize_clicks(labels, rows[pick], cols[pick], np.full(20, value))
        X, y = training_set(feats, labels)
        for head in ("logistic", "mlp"):
            trainer = EpochTrainer(X, y, head=head)
            started = time.perf_counter()
            for _ in range(20):
                stats = trainer.epoch()
            epoch_s = (time.perf_counter() - started) / 20
            fitted = trainer.head()
            times = []
            for _ in range(5):
                started = time.perf_counter()
                proba = fitted.predict_proba(feats)
                times.append(time.perf_counter() - started)
            full = upsample_to_pixels(proba[..., 1], feats.stride, image.shape) > 0.5
            dice = 2 * (full & truth).sum() / (full.sum() + truth.sum())
            print(
                json.dumps(
                    {
                        "features": feature_set,
                        "head": head,
                        "feature_s": round(feature_s, 2),
                        "labelled_pixels": len(y),
                        "epoch_s": round(epoch_s, 4),
                        "heatmap_predict_s_p50": round(float(np.median(times)), 3),
                        "val_dice": round(stats.mean_dice, 3),
                        "dice_vs_otsu": round(float(dice), 3),
                    }
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "effnet-lite0+filters")
