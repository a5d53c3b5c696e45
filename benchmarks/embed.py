"""Embedding throughput of ``effnet-lite0`` against this machine's fp32 compute bound.

1. fp32 GEMM GFLOP/s: numpy matmul of 2048 x 2048 float32 matrices (best of a few), with
   BLAS limited to the same number of threads as inference.
2. The bound: GFLOP/s / 0.8 GFLOP per EfficientNet-Lite0 image at 224 px.
3. ``effnet-lite0`` through ``Backbone.embed`` with ONNX Runtime (the default CPU path):
   images/s over ``--n`` distinct 224 x 224 uint8 images after a warm-up, and the ratio
   to the bound (target: at least 0.60).
4. For information: ``mobilenet_v2`` (ONNX Runtime), ``classic`` and PyTorch eager
   ``effnet-lite0``.

The machine may be shared with other work, so GEMM and the model are measured in short
alternating windows (best of two 2048^2 GEMMs, then ``2 * batch`` images): the verdict
compares the best window of each (what an idle machine gives, both measured the same
way); the means over all windows compare like with like under load. Long rounds of
``--n`` images are printed too, with the load average.

Run: ``.venv/bin/python benchmarks/embed.py [--n 512] [--batch 32] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

GFLOP_PER_IMAGE = 0.8  # EfficientNet-Lite0 at 224 px: ~0.4 GMAC
TARGET_RATIO = 0.60
GEMM_SIZE = 2048
CACHE = Path(__file__).resolve().parent / ".cache"

Embed = Callable[..., np.ndarray]


def gemm_gflops(threads: int, *, repeats: int = 5) -> float:
    """Best fp32 matmul GFLOP/s of ``repeats`` runs with ``threads`` threads, the better
    of numpy (OpenBLAS) and torch: the higher bound is the stricter target."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    torch.set_num_threads(threads)
    best = float("inf")
    with threadpool_limits(limits=threads, user_api="blas"):
        for matmul in (lambda: a @ b, lambda: ta @ tb):
            matmul()  # warm-up
            for _ in range(repeats):
                start = time.perf_counter()
                matmul()
                best = min(best, time.perf_counter() - start)
    return 2.0 * GEMM_SIZE**3 / best / 1e9


def make_images(n: int, size: int) -> list[np.ndarray]:
    """``n`` distinct uint8 RGB crops of scikit-image's photos, ``size`` x ``size``."""
    import skimage.data

    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()]
    photos.append(np.repeat(skimage.data.camera()[..., None], 3, axis=-1))
    rng = np.random.default_rng(1)
    out = []
    for k in range(n):
        photo = photos[k % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size + 1))
        left = int(rng.integers(0, photo.shape[1] - size + 1))
        crop = photo[top : top + size, left : left + size]
        out.append(np.ascontiguousarray(crop[:, ::-1] if k % 2 else crop))
    return out


def make_files(folder: Path, images: list[np.ndarray]) -> list[Path]:
    """JPEG files (quality 90) of ``images`` upscaled to 448 x 448, written once."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img_{k:04d}.jpg" for k in range(len(images))]
    for path, image in zip(paths, images, strict=True):
        if not path.is_file():
            big = Image.fromarray(image).resize((448, 448), Image.Resampling.BILINEAR)
            big.save(path, quality=90)
    return paths


def throughput(embed: Embed, images: list[np.ndarray], *, batch: int, rounds: int) -> list[float]:
    """images/s of ``embed(images, batch_size=batch)`` for each of ``rounds`` rounds,
    after a one-batch warm-up."""
    embed(images[:batch], batch_size=batch)
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        embed(images, batch_size=batch)
        rates.append(len(images) / (time.perf_counter() - start))
    return rates


class Interleaved:
    """GEMM and model timings taken in alternation, slice by slice, so that both see the
    same load on a shared machine."""

    def __init__(self) -> None:
        self.gemm_seconds: list[float] = []
        self.model_seconds: list[float] = []
        self.images: list[int] = []

    @property
    def gflops(self) -> float:
        """Mean GEMM GFLOP/s over the slices."""
        return 2.0 * GEMM_SIZE**3 * len(self.gemm_seconds) / sum(self.gemm_seconds) / 1e9

    @property
    def rate(self) -> float:
        """Mean model images/s over the slices."""
        return sum(self.images) / sum(self.model_seconds)

    @property
    def best_gflops(self) -> float:
        return 2.0 * GEMM_SIZE**3 / min(self.gemm_seconds) / 1e9

    @property
    def best_rate(self) -> float:
        return max(n / t for n, t in zip(self.images, self.model_seconds, strict=True))

    def slice_ratios(self) -> list[float]:
        return [
            (n / t_model) / (2.0 * GEMM_SIZE**3 / t_gemm / 1e9 / GFLOP_PER_IMAGE)
            for n, t_model, t_gemm in zip(
                self.images, self.model_seconds, self.gemm_seconds, strict=True
            )
        ]


def interleaved(
    embed: Embed, images: list[np.ndarray], *, batch: int, slices: int, threads: int
) -> Interleaved:
    """Alternate one 2048^2 GEMM (numpy, ``threads`` BLAS threads) and one ``embed`` of
    ``2 * batch`` images, ``slices`` times, after warming both up."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    b = rng.standard_normal((GEMM_SIZE, GEMM_SIZE), dtype=np.float32)
    step = 2 * batch
    result = Interleaved()
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b
        embed(images[:step], batch_size=batch)
        for k in range(slices):
            start = (k * step) % max(1, len(images) - step + 1)
            part = images[start : start + step]
            gemm_seconds = float("inf")
            for _ in range(2):  # the first may pay for waking BLAS threads
                t0 = time.perf_counter()
                a @ b
                gemm_seconds = min(gemm_seconds, time.perf_counter() - t0)
            t1 = time.perf_counter()
            embed(part, batch_size=batch)
            t2 = time.perf_counter()
            result.gemm_seconds.append(gemm_seconds)
            result.model_seconds.append(t2 - t1)
            result.images.append(len(part))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images per round")
    parser.add_argument("--batch", type=int, default=32, help="batch size of embed()")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument("--quick", action="store_true", help="skip the slow eager run")
    args = parser.parse_args()

    from loupe.features import get_backbone
    from loupe.features.base import default_threads

    threads = default_threads()
    cache_dir = CACHE / "onnx"
    print(f"cores: {threads}; load average before: {os.getloadavg()[0]:.2f}")
    images = make_images(args.n, 224)
    effnet = get_backbone("effnet-lite0", runtime="onnx", cache_dir=cache_dir)

    # Short windows (one GEMM, then 2 * batch images), alternated: the best window of
    # each is what an idle machine gives, and the sums compare like with like under load.
    slices = max(8, args.n * args.rounds // (2 * args.batch))
    both = interleaved(effnet.embed, images, batch=args.batch, slices=slices, threads=threads)
    bound = both.best_gflops / GFLOP_PER_IMAGE
    ratio = both.best_rate / bound
    print(
        f"fp32 GEMM {GEMM_SIZE}^2 (numpy), {threads} threads: best {both.best_gflops:.0f} "
        f"GFLOP/s -> bound {bound:.0f} images/s at {GFLOP_PER_IMAGE} GFLOP/image"
    )
    print(
        f"effnet-lite0, ONNX Runtime, embed() batch {args.batch}: best "
        f"{both.best_rate:.0f} images/s over {slices} windows of {2 * args.batch} images"
    )
    verdict = "PASS" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio to bound: {ratio:.2f} (target >= {TARGET_RATIO:.2f}) {verdict}")
    print(
        f"  mean over the windows: GEMM {both.gflops:.0f} GFLOP/s, effnet-lite0 "
        f"{both.rate:.0f} images/s, ratio {both.rate / (both.gflops / GFLOP_PER_IMAGE):.2f} "
        f"(median window {statistics.median(both.slice_ratios()):.2f})"
    )

    # Long rounds, for comparison with other benchmarks (sensitive to other processes).
    gemm_best = max(gemm_gflops(threads), both.best_gflops)
    rates = throughput(effnet.embed, images, batch=args.batch, rounds=args.rounds)
    print(
        f"  {args.rounds} rounds of {args.n} images: best {max(rates):.0f} images/s (median "
        f"{statistics.median(rates):.0f}); best GEMM of numpy and torch {gemm_best:.0f} "
        f"GFLOP/s; ratio {max(rates) / (gemm_best / GFLOP_PER_IMAGE):.2f}"
    )
    if os.getloadavg()[0] > 0.5 * threads:
        print(
            f"  note: other processes are running (load {os.getloadavg()[0]:.1f} on {threads} "
            "cores); long rounds rarely get the machine to themselves"
        )

    print("\nfor information:")
    mobilenet = get_backbone("mobilenet_v2", runtime="onnx", cache_dir=cache_dir)
    rates = throughput(mobilenet.embed, images, batch=args.batch, rounds=2)
    print(f"mobilenet_v2 ONNX Runtime: {max(rates):.0f} images/s")
    files = make_files(CACHE / "embed-jpeg", images[:256])
    start = time.perf_counter()
    _, errors = effnet.embed_paths(files, batch_size=args.batch)
    seconds = time.perf_counter() - start
    print(
        f"effnet-lite0 embed_paths on {len(files)} JPEG files (decode in 2 threads "
        f"overlapping inference): {len(files) / seconds:.0f} images/s, {len(errors)} errors"
    )
    classic = get_backbone("classic")
    rates = throughput(classic.embed, images[:128], batch=args.batch, rounds=1)
    print(f"classic (scikit-image, 1 thread): {max(rates):.0f} images/s")
    if not args.quick:
        eager = get_backbone("effnet-lite0", runtime="torch", device="cpu", cache_dir=cache_dir)
        rates = throughput(eager.embed, images[:128], batch=args.batch, rounds=2)
        print(
            f"effnet-lite0 PyTorch eager (channels-last, inference_mode): {max(rates):.0f} images/s"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
