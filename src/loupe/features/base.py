"""The backbone interface: preprocessing as data, batched ``embed`` and ``embed_paths``.

A backbone turns uint8 RGB images into float32 L2-normalised vectors of a fixed length
``dim``. Every backbone sees images normalised the same way (``loupe.media``'s
``to_display_uint8``, then :func:`loupe.features.imaging.fit_square`), whatever their
size, channel count or bit depth.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from loupe.features.imaging import ImageSource, fit_square, read_rgb
from loupe.media import MediaError

ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each batch."""

_EPS = 1e-12


class FeatureError(Exception):
    """A backbone that cannot be built or run (bad name, missing weights, missing package)."""


class WeightsNotFound(FeatureError):
    """A weights file that is neither on disk nor downloadable; names the file and the
    places that were searched."""

    def __init__(self, filename: str, searched: Sequence[Path], *, hint: str = "") -> None:
        self.filename = filename
        self.searched = [Path(p) for p in searched]
        where = ", ".join(str(p) for p in self.searched) or "nowhere"
        message = f"weights file {filename!r} not found (looked in: {where})"
        if hint:
            message += f"; {hint}"
        super().__init__(message)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels become a network input, as data (for fine-tuning code and exports).

    The image (uint8 RGB) is resized so that its shorter side is ``size`` (bilinear,
    antialiased) and the centre ``size`` x ``size`` square is cropped; then each channel
    is ``(value / 255 - mean) / std``. ``mean`` and ``std`` are in 0..1 units, RGB order.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: str = "shorter side to size (bilinear, antialiased), then centre crop"

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        """``(n, size, size, 3)`` uint8 -> ``(n, 3, size, size)`` float32, normalised."""
        mean = np.asarray(self.mean, dtype=np.float32) * np.float32(255.0)
        scale = np.float32(1.0) / (np.asarray(self.std, dtype=np.float32) * np.float32(255.0))
        data = (batch.astype(np.float32) - mean) * scale
        return np.ascontiguousarray(data.transpose(0, 3, 1, 2))


IMAGENET = Preprocessing(size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


@dataclass(frozen=True)
class WeightsStatus:
    """Whether a backbone can be used now, and if not why (for ``/api/info``)."""

    available: bool
    reason: str | None = None


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    data = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    return (data / np.maximum(norms, np.float32(_EPS))).astype(np.float32, copy=False)


def default_threads() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Backbone(ABC):
    """A named image embedder. Subclasses set the class attributes and ``_embed_batch``.

    Class attributes (readable without building the model, e.g. for ``/api/info``):
    ``name``, ``dim`` (vector length), ``input_size`` (square side fed to the model),
    ``requires_torch`` and ``description``.
    """

    name: ClassVar[str] = ""
    dim: ClassVar[int] = 0
    input_size: ClassVar[int] = 224
    requires_torch: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(
        self,
        *,
        weights_dir: Path | None = None,
        device: str = "auto",
        runtime: str = "auto",
        cache_dir: Path | None = None,
        allow_download: bool | None = None,
        threads: int | None = None,
    ) -> None:
        """Options shared by all backbones (each uses those that apply to it).

        ``weights_dir``: folder searched first for weights files (default:
        ``LOUPE_WEIGHTS``). ``device``: ``'auto'`` (CUDA when torch sees a GPU, else the
        CPU), ``'cpu'`` or ``'cuda'``. ``runtime``: ``'auto'`` (ONNX Runtime on the CPU,
        torch eager if the export fails), ``'onnx'`` or ``'torch'``. ``cache_dir``: where
        ONNX exports are cached (default ``<LOUPE_HOME>/cache/onnx``). ``allow_download``:
        fetch missing weights over the network (default: yes unless ``LOUPE_OFFLINE``
        is set). ``threads``: CPU threads for inference (default: the cores available).
        """
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
        if runtime not in ("auto", "onnx", "torch"):
            raise ValueError(f"runtime must be 'auto', 'onnx' or 'torch', got {runtime!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {threads}")
        if allow_download is None:
            allow_download = os.environ.get("LOUPE_OFFLINE", "").lower() in ("", "0", "false")
        self.weights_dir = Path(weights_dir) if weights_dir is not None else None
        self.device = device
        self.runtime = runtime
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.allow_download = allow_download
        self.threads = threads if threads is not None else default_threads()

    @classmethod
    def weights_status(cls, weights_dir: Path | None = None) -> WeightsStatus:
        """Whether the weights (and packages) this backbone needs are present. Cheap: never
        imports torch nor downloads anything."""
        return WeightsStatus(True)

    def weights_sha256(self) -> str | None:
        """SHA-256 of the weights file (None for backbones without weights)."""
        return None

    @abstractmethod
    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        """``(n, input_size, input_size, 3)`` uint8 -> ``(n, dim)`` float32 (any norm)."""

    def embed(self, images: Sequence[np.ndarray], *, batch_size: int = 32) -> np.ndarray:
        """Embed uint8 RGB ``(rows, cols, 3)`` images (as ``to_display_uint8`` gives).

        Each image is resized (shorter side to ``input_size``) and centre-cropped.
        Returns a float32 ``(len(images), dim)`` matrix with L2-normalised rows.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        prepared = []
        for index, image in enumerate(images):
            array = np.asarray(image)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(
                    f"images[{index}] must be uint8 (rows, cols, 3), got {array.dtype} "
                    f"{array.shape}; convert with loupe.media.to_display_uint8"
                )
            prepared.append(fit_square(array, size=self.input_size))
        out = np.zeros((len(prepared), self.dim), dtype=np.float32)
        for start in range(0, len(prepared), batch_size):
            chunk = np.stack(prepared[start : start + batch_size])
            out[start : start + len(chunk)] = self._embed_checked(chunk)
        return out

    def _embed_checked(self, batch: np.ndarray) -> np.ndarray:
        vectors = np.asarray(self._embed_batch(batch), dtype=np.float32)
        if vectors.shape != (len(batch), self.dim):
            raise RuntimeError(
                f"backbone {self.name!r} returned shape {vectors.shape}, "
                f"expected {(len(batch), self.dim)}"
            )
        return l2_normalise(vectors)

    def embed_paths(
        self,
        paths: Sequence[ImageSource],
        *,
        batch_size: int = 32,
        progress: ProgressCallback | None = None,
        workers: int = 2,
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Read, normalise and embed image files (a path, or a DICOM series' paths each).

        Decoding runs in ``workers`` threads, at most two batches ahead of inference, and
        reads no more pixels than needed (``read_image(max_side=...)``). Returns the
        float32 ``(len(paths), dim)`` matrix and ``{index: reason}`` for files that could
        not be read; their rows are zeros.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        total = len(paths)
        out = np.zeros((total, self.dim), dtype=np.float32)
        errors: dict[int, str] = {}
        size = self.input_size
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="loupe-decode") as pool:
            pending: deque[tuple[int, Future[np.ndarray]]] = deque()
            next_index = 0
            batch_rows: list[int] = []
            batch_images: list[np.ndarray] = []
            done = 0
            while next_index < total or pending:
                while next_index < total and len(pending) < 2 * batch_size:
                    future = pool.submit(read_rgb, paths[next_index], size=size)
                    pending.append((next_index, future))
                    next_index += 1
                index, future = pending.popleft()
                try:
                    batch_images.append(future.result())
                    batch_rows.append(index)
                except MediaError as exc:
                    errors[index] = exc.reason
                except (ValueError, OSError) as exc:
                    errors[index] = f"cannot read image: {exc}"
                done += 1
                if len(batch_images) == batch_size or (not pending and next_index >= total):
                    if batch_images:
                        out[batch_rows] = self._embed_checked(np.stack(batch_images))
                    batch_rows, batch_images = [], []
                    if progress is not None:
                        progress(done, total)
        return out, errors
