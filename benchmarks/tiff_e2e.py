"""End to end per image on ~50 MB TIFFs: read, embed with both ensemble members, predict.

Issue 4's target: the seed application took ~2.3 s per image (ResNet-18 on the CPU);
Loupe should be at least 20x faster, i.e. at most 0.115 s per image, and say how much
memory one TIFF costs.

The files (generated once under ``benchmarks/.cache/tiff-e2e/``): ``--files`` (8) distinct
4096 x 4096 RGB uint8 images (48 MiB of pixels each), built from real microscopy in
scikit-image's wheel: the immunohistochemistry slide (brightfield, DAB/haematoxylin) and
the ``cell`` phase-contrast image (grey, to RGB). Each is a 2 x 2 mosaic of random
crops (flipped, rotated, upscaled bicubically to 2048 px), with a smooth illumination
gradient and Gaussian sensor noise (sigma 5). Half are written uncompressed in strips of
16 rows (contiguous, as most acquisition software writes them), half tiled 256 x 256 and
compressed (deflate level 6 with the horizontal predictor, or LZW): no pyramid, so a
reader of the compressed ones must decode every tile.

Per TIFF, what Loupe does for one new image:

1. ``loupe.features.read_rgb(path, size=224)`` (decodes no more than needed: strided
   reads of a memory map for the uncompressed files, one tile at a time for the others);
2. ``Backbone.embed([rgb])`` with ``effnet-lite0`` and ``mobilenet_v2`` (ONNX Runtime,
   the default CPU path), batch of one;
3. prediction: the two members' heads (``ClassifierHead.from_state``, trained beforehand
   by ``train_classifier_ensemble`` on 72 labelled 224 px crops of other images, three
   classes) -> ``predict_proba`` -> ``combine_members`` -> ensemble temperature ->
   conformal set -> ``triage_classes``.

Each TIFF is measured in two fresh child processes, each of which loads both models (the
ONNX exports are cached under ``benchmarks/.cache/onnx``; loading and any export are
excluded) and warms up on two small TIFFs of the same two layouts first:

* timings: a cold run (the TIFF's pages dropped from the page cache first with
  ``posix_fadvise(DONTNEED)``, best effort), then ``--repeats`` warm runs;
* memory: the RSS high-water mark is reset (``/proc/self/clear_refs``) just before the
  first run on the TIFF, so ``VmHWM - VmRSS(before)`` is the peak this TIFF's processing
  added (``ru_maxrss`` read after the reset gives the same; ``ru_maxrss`` minus the
  warmed-up ``ru_maxrss`` without the reset is printed too). During that run a thread
  samples ``/proc/self/status`` every ~0.5 ms to split the peak into anonymous memory
  (``RssAnon``) and mapped file pages (``RssFile``: the memory-mapped uncompressed TIFF,
  page cache shared with the kernel and reclaimable). Then one more run under
  ``tracemalloc`` gives the peak of Python-side allocations (NumPy arrays included; ONNX
  Runtime's own buffers are not seen by it).

For information, at the end: decoding every tile of one compressed file with tifffile's
``segments()`` on 1 thread (what tifffile chose for these pages) against 2 threads.

Figures: seconds per image (median and p95 over the TIFFs of each TIFF's median warm
run; the cold runs too), split into read / embed / predict; the speed-up over 2.3 s
(target >= 20x); peak memory per TIFF in MB next to the file's size.

Run: ``.venv/bin/python benchmarks/tiff_e2e.py [--files 8] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SEED_SECONDS = 2.3  # the seed application, ResNet-18 on the CPU, per image
TARGET_SPEEDUP = 20.0
SIDE = 4096
CACHE = Path(__file__).resolve().parent / ".cache"
DATA = CACHE / "tiff-e2e"
ONNX_CACHE = CACHE / "onnx"
MEMBERS = ("effnet-lite0", "mobilenet_v2")
CLASS_NAMES = ["ihc", "phase_contrast", "other"]
LAYOUTS = ("strips", "deflate", "strips", "lzw")  # file k gets LAYOUTS[k % 4]
MB = 1e6


# -- the files -----------------------------------------------------------------------------


def _sources() -> dict[str, np.ndarray]:
    import skimage.data

    cell = skimage.data.cell()
    return {
        "ihc": skimage.data.immunohistochemistry(),
        "phase_contrast": np.repeat(cell[..., None], 3, axis=-1),
    }


def _mosaic(source: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """``side`` x ``side`` RGB uint8: 2 x 2 upscaled random crops, illumination, noise."""
    from PIL import Image

    half = side // 2
    out = np.empty((side, side, 3), dtype=np.uint8)
    for row in range(2):
        for col in range(2):
            crop_side = int(rng.integers(256, min(source.shape[:2]) + 1))
            top = int(rng.integers(0, source.shape[0] - crop_side + 1))
            left = int(rng.integers(0, source.shape[1] - crop_side + 1))
            crop = source[top : top + crop_side, left : left + crop_side]
            crop = np.rot90(crop, int(rng.integers(0, 4)))
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            big = Image.fromarray(np.ascontiguousarray(crop)).resize(
                (half, half), Image.Resampling.BICUBIC
            )
            out[row * half : (row + 1) * half, col * half : (col + 1) * half] = np.asarray(big)
    # smooth illumination (uneven lamp) and sensor noise, in horizontal bands to save memory
    gy = rng.uniform(-0.08, 0.08)
    gx = rng.uniform(-0.08, 0.08)
    xs = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    for start in range(0, side, 512):
        band = out[start : start + 512].astype(np.float32)
        ys = np.linspace(-1.0, 1.0, side, dtype=np.float32)[start : start + 512]
        gain = 1.0 + gy * ys[:, None] + gx * xs[None, :]
        band *= gain[..., None]
        band += rng.normal(0.0, 5.0, size=band.shape).astype(np.float32)
        out[start : start + 512] = np.clip(np.rint(band), 0, 255).astype(np.uint8)
    return out


def _write(path: Path, image: np.ndarray, layout: str) -> None:
    import tifffile

    tmp = path.with_suffix(".tmp")
    if layout == "strips":
        tifffile.imwrite(tmp, image, photometric="rgb", rowsperstrip=16)
    elif layout == "deflate":
        tifffile.imwrite(
            tmp,
            image,
            photometric="rgb",
            tile=(256, 256),
            compression="zlib",
            compressionargs={"level": 6},
            predictor=True,
        )
    elif layout == "lzw":
        tifffile.imwrite(tmp, image, photometric="rgb", tile=(256, 256), compression="lzw")
    else:
        raise ValueError(layout)
    tmp.replace(path)


def make_tiffs(count: int) -> tuple[list[Path], list[Path]]:
    """The ``count`` benchmark TIFFs and two small warm-up TIFFs (written once)."""
    DATA.mkdir(parents=True, exist_ok=True)
    sources = None
    paths = []
    for k in range(count + 2):
        warmup = k >= count
        layout = ("strips", "deflate")[k - count] if warmup else LAYOUTS[k % len(LAYOUTS)]
        side = 1024 if warmup else SIDE
        name = f"warmup_{layout}.tif" if warmup else f"tile_{k:02d}_{layout}.tif"
        path = DATA / name
        if not path.is_file():
            sources = sources or _sources()
            kind = "phase_contrast" if k % 3 == 2 else "ihc"
            start = time.perf_counter()
            image = _mosaic(sources[kind], side, np.random.default_rng(1000 + k))
            _write(path, image, layout)
            print(
                f"  wrote {path.name}: {kind}, {layout}, {path.stat().st_size / MB:.1f} MB "
                f"({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
        paths.append(path)
    return paths[:count], paths[count:]


# -- the heads -----------------------------------------------------------------------------


def labelled_crops(per_class: int = 24) -> tuple[list[np.ndarray], np.ndarray]:
    """224 px crops of other images than the TIFFs' (different scales and places)."""
    import skimage.data
    from PIL import Image

    sources = _sources()
    others = [
        skimage.data.astronaut(),
        skimage.data.coffee(),
        skimage.data.chelsea(),
        skimage.data.hubble_deep_field(),
        skimage.data.retina(),
        np.repeat(skimage.data.camera()[..., None], 3, axis=-1),
    ]
    rng = np.random.default_rng(7)
    images, labels = [], []
    for label, name in enumerate(CLASS_NAMES):
        pool = others if name == "other" else [sources[name]]
        for i in range(per_class):
            source = pool[i % len(pool)]
            crop_side = int(rng.integers(96, min(source.shape[:2]) + 1))
            top = int(rng.integers(0, source.shape[0] - crop_side + 1))
            left = int(rng.integers(0, source.shape[1] - crop_side + 1))
            crop = np.ascontiguousarray(source[top : top + crop_side, left : left + crop_side])
            resized = Image.fromarray(crop).resize((224, 224), Image.Resampling.BILINEAR)
            images.append(np.asarray(resized))
            labels.append(label)
    return images, np.array(labels)


def train_heads(path: Path) -> dict:
    """Train the default ensemble on the labelled crops; save what prediction needs."""
    from loupe.features import get_backbone
    from loupe.learn.state import state_to_bytes
    from loupe.learn.train import train_classifier_ensemble

    images, labels = labelled_crops()
    features = {}
    for name in MEMBERS:
        matrix = get_backbone(name, cache_dir=ONNX_CACHE).embed(images)
        features[name] = (matrix, matrix)
    result = train_classifier_ensemble(features, labels, CLASS_NAMES, seed=0)
    state = {
        "class_names": CLASS_NAMES,
        "heads": result.heads,
        "ensemble_temperature": result.ensemble_temperature,
        "qhat": result.qhat,
        "threshold": result.threshold,
    }
    path.write_bytes(state_to_bytes(state))
    return {
        "n_labelled": len(labels),
        "oof_accuracy": (result.ensemble_metrics or {}).get("accuracy"),
        "temperatures": result.temperatures,
        "ensemble_temperature": result.ensemble_temperature,
        "qhat": result.qhat,
    }


# -- the child: one TIFF -------------------------------------------------------------------


def _status_kb() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    out = {}
    for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
        found = re.search(key + r":\s+(\d+)", text)
        out[key] = int(found.group(1)) if found else 0
    return out


def _drop_from_page_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


class Pipeline:
    """read_rgb -> both members' embed -> heads, ensemble, conformal set, triage."""

    def __init__(self, heads_path: Path) -> None:
        from loupe.features import get_backbone
        from loupe.learn import ClassifierHead
        from loupe.learn.state import state_from_bytes

        state = state_from_bytes(heads_path.read_bytes())
        self.backbones = [get_backbone(name, cache_dir=ONNX_CACHE) for name in MEMBERS]
        self.heads = [ClassifierHead.from_state(state["heads"][name]) for name in MEMBERS]
        self.class_names = list(state["class_names"])
        self.temperature = float(state["ensemble_temperature"])
        self.qhat = state["qhat"]
        self.threshold = float(state["threshold"])

    def run(self, path: Path) -> tuple[dict[str, float], str, float, bool]:
        from loupe.features import read_rgb
        from loupe.learn.calibration import prediction_sets, temper_probs
        from loupe.learn.ensemble import combine_members, triage_classes

        t0 = time.perf_counter()
        rgb = read_rgb(path, size=224)
        t1 = time.perf_counter()
        vectors = [backbone.embed([rgb]) for backbone in self.backbones]
        t2 = time.perf_counter()
        member_probs = [head.predict_proba(v) for head, v in zip(self.heads, vectors, strict=True)]
        probs = temper_probs(combine_members(member_probs), self.temperature)
        sets = prediction_sets(probs, self.qhat) if self.qhat is not None else None
        flagged, _ = triage_classes(
            member_probs, probs, threshold=self.threshold, conformal_sets=sets
        )
        t3 = time.perf_counter()
        times = {"read": t1 - t0, "embed": t2 - t1, "predict": t3 - t2, "total": t3 - t0}
        label = int(probs[0].argmax())
        return times, self.class_names[label], float(probs[0, label]), bool(flagged[0])


def _warmed_up(heads_path: Path, warmups: list[Path]) -> tuple[Pipeline, float]:
    start = time.perf_counter()
    pipeline = Pipeline(heads_path)
    for warm in warmups:  # model sessions, imagecodecs, first-call costs
        for _ in range(2):
            pipeline.run(warm)
    return pipeline, time.perf_counter() - start


def child_times(path: Path, heads_path: Path, warmups: list[Path], repeats: int) -> dict:
    """One cold run (file dropped from the page cache), then ``repeats`` warm runs."""
    pipeline, warmup_seconds = _warmed_up(heads_path, warmups)
    _drop_from_page_cache(path)
    cold, label, conf, flagged = pipeline.run(path)
    warm = [pipeline.run(path)[0] for _ in range(repeats)]
    return {
        "file": path.name,
        "bytes": path.stat().st_size,
        "warmup_s": warmup_seconds,
        "cold": cold,
        "warm": warm,
        "label": label,
        "confidence": conf,
        "flagged": flagged,
    }


def child_memory(path: Path, heads_path: Path, warmups: list[Path]) -> dict:
    """Peak memory of the first run on ``path`` in a warmed-up process (another process
    than the timed one: the sampling thread and tracemalloc would disturb the timings,
    and a process that has already processed the file keeps its freed heap)."""
    import tracemalloc

    pipeline, _ = _warmed_up(heads_path, warmups)
    gc.collect()
    base = _status_kb()
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # reset the high-water marks (VmHWM and ru_maxrss) to the current RSS
    Path("/proc/self/clear_refs").write_text("5")
    reset_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    # VmHWM does not split anonymous memory from mapped file pages: a thread samples
    # /proc/self/status every ~0.5 ms during the run for that split
    sampled = {"RssAnon": base["RssAnon"], "RssFile": base["RssFile"]}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            current = _status_kb()
            for key in sampled:
                sampled[key] = max(sampled[key], current[key])
            time.sleep(0.0005)

    _drop_from_page_cache(path)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    time.sleep(0.005)
    pipeline.run(path)
    stop.set()
    sampler.join()
    after = _status_kb()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    gc.collect()
    tracemalloc.start()
    pipeline.run(path)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "base_rss_mb": base["VmRSS"] * 1024 / MB,
        "base_maxrss_mb": base_maxrss * 1024 / MB,
        "peak_add_mb": (after["VmHWM"] - base["VmRSS"]) * 1024 / MB,
        "maxrss_add_mb": (maxrss - reset_maxrss) * 1024 / MB,
        "maxrss_minus_baseline_mb": (maxrss - base_maxrss) * 1024 / MB,
        "anon_add_mb": (sampled["RssAnon"] - base["RssAnon"]) * 1024 / MB,
        "file_add_mb": (sampled["RssFile"] - base["RssFile"]) * 1024 / MB,
        "tracemalloc_peak_mb": traced_peak / MB,
    }


# -- the parent ----------------------------------------------------------------------------


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def _line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<8} median {statistics.median(values) * 1e3:7.1f} ms   "
        f"p95 {_p95(values) * 1e3:7.1f} ms   max {max(values) * 1e3:7.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=8, help="number of ~50 MB TIFFs")
    parser.add_argument("--repeats", type=int, default=5, help="warm runs per TIFF")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--heads", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    heads_path = DATA / "heads.npz"
    if args.child is not None:
        if args.memory:
            print(json.dumps(child_memory(args.child, args.heads, args.warmup)))
        else:
            print(json.dumps(child_times(args.child, args.heads, args.warmup, args.repeats)))
        return 0
    if args.prepare:
        tiffs, warmups = make_tiffs(args.files)
        info = train_heads(heads_path)
        info.update(tiffs=[str(p) for p in tiffs], warmups=[str(p) for p in warmups])
        print(json.dumps(info))
        return 0

    print(f"cores: {os.cpu_count()}; load average before: {os.getloadavg()}", flush=True)
    # files and heads in a child too: this process stays small, so that the children's
    # ru_maxrss (which starts from the parent's high-water mark at exec) is their own
    command = [sys.executable, __file__, "--prepare", "--files", str(args.files)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    lines = done.stdout.strip().splitlines()
    print("\n".join(lines[:-1]), flush=True)
    info = json.loads(lines[-1])
    tiffs, warmups = [Path(p) for p in info["tiffs"]], [Path(p) for p in info["warmups"]]
    print(
        f"heads: train_classifier_ensemble on {info['n_labelled']} labelled 224 px crops of "
        f"other images ({', '.join(CLASS_NAMES)}); OOF accuracy {info['oof_accuracy']:.3f}, "
        f"member T {', '.join(f'{k} {v:.2f}' for k, v in info['temperatures'].items())}, "
        f"ensemble T {info['ensemble_temperature']:.2f}, qhat {info['qhat']}",
        flush=True,
    )

    rows = []
    for path in tiffs:
        command = [sys.executable, __file__, "--child", str(path), "--heads", str(heads_path)]
        command += ["--repeats", str(args.repeats), "--warmup", *map(str, warmups)]
        row = {}
        for extra in ([], ["--memory"]):  # timings, then memory, each in a fresh process
            done = subprocess.run(command + extra, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            row.update(json.loads(done.stdout.strip().splitlines()[-1]))
        rows.append(row)
        row = rows[-1]
        warm_total = statistics.median(t["total"] for t in row["warm"])
        print(
            f"  {row['file']:<22} {row['bytes'] / MB:5.1f} MB"
            f"  cold {row['cold']['total'] * 1e3:6.1f} ms  warm {warm_total * 1e3:6.1f} ms (read "
            f"{statistics.median(t['read'] for t in row['warm']) * 1e3:5.1f}, embed "
            f"{statistics.median(t['embed'] for t in row['warm']) * 1e3:5.1f}, predict "
            f"{statistics.median(t['predict'] for t in row['warm']) * 1e3:4.2f})"
            f"  peak +{row['peak_add_mb']:5.1f} MB (anon {row['anon_add_mb']:4.1f} + file"
            f" {row['file_add_mb']:4.1f}; ru_maxrss +{row['maxrss_add_mb']:5.1f}; tracemalloc"
            f" {row['tracemalloc_peak_mb']:5.1f})  -> {row['label']}"
            f" {row['confidence']:.2f}{' flagged' if row['flagged'] else ''}",
            flush=True,
        )

    print(
        f"\nper image, {len(rows)} TIFFs of {SIDE} x {SIDE} RGB uint8 "
        f"({statistics.median(r['bytes'] for r in rows) / MB:.1f} MB median file); "
        "model load / ONNX export and warm-up excluded"
    )
    ok = True
    for title, pick in (
        (f"warm (file in page cache), median of {args.repeats} runs per TIFF", "warm"),
        ("cold (file dropped from the page cache first), one run per TIFF", "cold"),
    ):
        print(f"{title}:")
        per_tiff = {
            part: [
                statistics.median(t[part] for t in r["warm"]) if pick == "warm" else r["cold"][part]
                for r in rows
            ]
            for part in ("read", "embed", "predict", "total")
        }
        for part, values in per_tiff.items():
            print(_line(part, values))
        median, p95 = statistics.median(per_tiff["total"]), _p95(per_tiff["total"])
        verdict = "PASS" if SEED_SECONDS / p95 >= TARGET_SPEEDUP else "BELOW TARGET"
        print(
            f"  speed-up over the seed's {SEED_SECONDS} s: {SEED_SECONDS / median:.1f}x at the "
            f"median, {SEED_SECONDS / p95:.1f}x at p95 (target >= {TARGET_SPEEDUP:.0f}x) {verdict}"
        )
        ok &= SEED_SECONDS / median >= TARGET_SPEEDUP
        for layout in ("strips", "deflate", "lzw"):
            chosen = [
                v for v, r in zip(per_tiff["total"], rows, strict=True) if layout in r["file"]
            ]
            reads = [v for v, r in zip(per_tiff["read"], rows, strict=True) if layout in r["file"]]
            if chosen:
                print(
                    f"    {layout:<8} ({len(chosen)} files): total median "
                    f"{statistics.median(chosen) * 1e3:6.1f} ms, read "
                    f"{statistics.median(reads) * 1e3:6.1f} ms "
                    f"-> {SEED_SECONDS / statistics.median(chosen):.0f}x"
                )

    print("peak memory per TIFF (added above the warmed-up process's RSS):")
    for layout in ("strips", "deflate", "lzw"):
        chosen = [r for r in rows if layout in r["file"]]
        if not chosen:
            continue
        size = statistics.median(r["bytes"] for r in chosen) / MB
        peak = max(r["peak_add_mb"] for r in chosen)
        traced = max(r["tracemalloc_peak_mb"] for r in chosen)
        anon = max(r["anon_add_mb"] for r in chosen)
        mapped = max(r["file_add_mb"] for r in chosen)
        print(
            f"  {layout:<8} files {size:5.1f} MB: RSS high-water +{peak:5.1f} MB "
            f"({peak / size:.0%} of the file; ru_maxrss after reset +"
            f"{max(r['maxrss_add_mb'] for r in chosen):.1f}); sampled: anonymous "
            f"+{anon:.1f} MB ({anon / size:.0%}), mapped file pages +{mapped:.1f} MB; "
            f"tracemalloc peak {traced:5.1f} MB ({traced / size:.0%})"
        )
    print(
        f"  warmed-up process RSS {statistics.median(r['base_rss_mb'] for r in rows):.0f} MB "
        f"(both ONNX sessions loaded); ru_maxrss minus the child's warmed-up ru_maxrss "
        f"(no reset): max {max(r['maxrss_minus_baseline_mb'] for r in rows):.1f} MB "
        f"(warmed-up ru_maxrss {statistics.median(r['base_maxrss_mb'] for r in rows):.0f} MB)"
    )
    print("for information: decoding all tiles of one file with tifffile's segments():")
    import tifffile

    for layout in ("deflate", "lzw"):
        example = next((p for p in tiffs if layout in p.name), None)
        if example is None:
            continue
        with tifffile.TiffFile(example) as tif:
            page = tif.pages.first
            best = {}
            for workers in (1, 2):
                times = []
                for _ in range(3):
                    start = time.perf_counter()
                    for _segment in page.segments(buffersize=1 << 24, maxworkers=workers):
                        pass
                    times.append(time.perf_counter() - start)
                best[workers] = min(times)
            print(
                f"  {example.name}: tifffile's own choice maxworkers={page.maxworkers}; "
                f"1 thread {best[1] * 1e3:.0f} ms, 2 threads {best[2] * 1e3:.0f} ms"
            )
    print(f"load average after: {os.getloadavg()}")
    print(f"verdict: {'PASS' if ok else 'BELOW TARGET'} (median, warm and cold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
