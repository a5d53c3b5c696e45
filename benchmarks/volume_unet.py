"""Automatic 3-D segmentation with the MONAI UNet: inference time and memory, and training to Dice.

Data: nilearn's MNI152 2009a T1 template (1 mm, in the nilearn wheel), labels 0 other,
1 grey matter, 2 white matter from its probability maps (> 0.5).

1. Inference (``predict_unet``, 4.8 M-parameter UNet, 96^3 ROI, overlap 0.125), each size
   in a fresh process so its peak RSS is its own: 128^3 (target < 20 s) and 256^3
   (< 60 s, < 2 GB). The 256^3 volume is the template zero-padded.
2. ``--train-minutes M`` (0: skip): train on the template below z = 110 (64^3 patches,
   batch 2) in one continuous run, as the retrain job does (one optimizer, a learning
   rate schedule over ~6 epochs a minute), and evaluate Dice per class on the held-out
   slab z >= 110 (the top of the brain) every ``--every`` epochs, until both classes
   reach 0.90 or M minutes pass. Reports peak RSS (target < 2 GB) and the time to Dice
   0.90 (target 30 min on 2 cores).

Run: ``.venv/bin/python benchmarks/volume_unet.py [--sizes 128 256] [--train-minutes 25]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from volume_interactive import central, mni  # noqa: E402

SPLIT_Z = 110


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def child_predict(size: int, device: str) -> None:
    import torch

    from loupe.learn.unet3d import UNetState, build_unet, predict_unet

    torch.set_num_threads(os.cpu_count() or 2)
    model = build_unet(3)
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    state = UNetState(3, (16, 32, 64, 128, 256), 2, buffer.getvalue())
    volume = central(mni()[0], size)
    predict_unet(state, volume[:96, :96, :96], device=device)  # warm-up (oneDNN kernels)
    started = time.perf_counter()
    labels = predict_unet(state, volume, device=device)
    seconds = time.perf_counter() - started
    print(
        json.dumps(
            {"size": size, "seconds": seconds, "peak_gb": peak_gb(), "shape": list(labels.shape)}
        )
    )


def dice_per_class(prediction: np.ndarray, truth: np.ndarray, classes: int) -> list[float]:
    out = []
    for label in range(1, classes):
        a, b = prediction == label, truth == label
        out.append(2.0 * float(np.logical_and(a, b).sum()) / max(1, int(a.sum() + b.sum())))
    return out


def train(minutes: float, device: str, iterations: int, every: int) -> None:
    """One continuous training (as the retrain job runs it: one optimizer, one learning-rate
    schedule over the budget) on the template below SPLIT_Z; every ``every`` epochs the
    weights so far predict the held-out slab (whole-volume sliding window), until both
    classes reach Dice 0.90 or the time is up."""
    import gc

    from loupe.learn.unet3d import predict_unet, train_unet

    t1, labels = mni()
    train_image, train_mask = t1[:SPLIT_Z], labels[:SPLIT_Z]
    test_image, test_mask = t1[SPLIT_Z - 16 :], labels[SPLIT_Z - 16 :]  # 16 planes of context
    started = time.perf_counter()
    budget = minutes * 60
    reached: dict[str, Any] = {}

    def after(epoch: int, entry: dict[str, Any], snapshot: Any) -> bool:
        elapsed = time.perf_counter() - started
        row: dict[str, Any] = {
            "epoch": epoch,
            "iterations": epoch * iterations,
            "minutes": round(elapsed / 60, 2),
            "loss": round(entry["loss"], 4),
            "patch_dice": {str(k): v for k, v in entry.get("val_dice", {}).items()},
        }
        done = elapsed >= budget
        if epoch % every == 0 or done:
            prediction = predict_unet(snapshot(), test_image, device=device)[16:]
            scores = dice_per_class(prediction, test_mask[16:], 3)
            row.update(dice_gm=round(scores[0], 4), dice_wm=round(scores[1], 4))
            if min(scores) >= 0.90 and not reached:
                reached.update(minutes=elapsed / 60, iterations=epoch * iterations)
                done = True
            gc.collect()
        row["peak_gb"] = round(peak_gb(), 2)
        print(json.dumps(row), flush=True)
        return done

    train_unet(
        [train_image],
        [train_mask],
        n_classes=3,
        epochs=int(minutes * 6),  # the schedule's length: ~10 s an epoch on 2 cores
        iterations=iterations,
        device=device,
        validation=([test_image[16:]], [test_mask[16:]]),
        after_epoch=after,
    )
    if reached:
        print(
            f"Dice >= 0.90 for both classes after {reached['minutes']:.1f} min, "
            f"{reached['iterations']} iterations; peak RSS {peak_gb():.2f} GB (target < 2 GB)"
        )
    else:
        print(f"stopped after {minutes} min without Dice >= 0.90 for both classes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[128, 256])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--train-minutes", type=float, default=0.0)
    parser.add_argument("--iterations", type=int, default=25, help="per epoch")
    parser.add_argument(
        "--every", type=int, default=3, help="epochs between whole held-out slab validations"
    )
    parser.add_argument("--child-predict", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_predict:
        child_predict(args.child_predict, args.device)
        return 0
    print(f"load average {os.getloadavg()}")
    for size in args.sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--child-predict", str(size), "--device", args.device],
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        target = 20.0 if size <= 128 else 60.0
        print(
            f"UNet inference {size}^3: {result['seconds']:.1f} s (target < {target:.0f} s), "
            f"peak RSS {result['peak_gb']:.2f} GB (target < 2 GB)",
            flush=True,
        )
    if args.train_minutes > 0:
        train(args.train_minutes, args.device, args.iterations, args.every)
    print(f"load average {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
