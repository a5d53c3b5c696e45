"""Template for the neural backbones: the base owns weights, device, runtime and threads.

A concrete backbone says which weights file it needs (``resolve_weights``) and how to
build its torch feature extractor (``_build_extractor``); this base wraps it in a
:class:`~loupe.features.torch_models.PixelEmbedder` (normalisation inside the graph) and
runs it with the fastest runtime available:

* a CUDA GPU (``torch.cuda.is_available()``): torch on ``cuda``;
* otherwise ONNX Runtime on an export cached under ``cache_dir``;
* if the export or the session fails: torch eager (channels-last, inference mode),
  with a logged warning saying why.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from loupe.features.base import IMAGENET, Backbone, FeatureError, Preprocessing, WeightsStatus
from loupe.features.weights import file_sha256, module_available

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

Runner = Callable[[np.ndarray], np.ndarray]


def default_onnx_cache_dir() -> Path:
    """``<LOUPE_HOME>/cache/onnx`` from the settings (read lazily)."""
    try:
        from loupe.settings import get_settings

        return get_settings().home / "cache" / "onnx"
    except Exception as exc:  # settings unusable (e.g. no secret in a script): still run
        fallback = Path(tempfile.gettempdir()) / "loupe-cache" / "onnx"
        logger.warning("cannot read settings (%s); caching ONNX files in %s", exc, fallback)
        return fallback


def _cuda_possible() -> bool:
    # Importing torch costs seconds; skip it where no NVIDIA driver is loaded.
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()


class CnnBackbone(Backbone):
    """Base of the torch backbones (CNNs and the ViT); see the module docstring."""

    requires_torch: ClassVar[bool] = True
    preprocessing: ClassVar[Preprocessing] = IMAGENET
    weights_filename: ClassVar[str] = ""
    needs_modules: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._runner: Runner | None = None
        self._runner_lock = threading.Lock()
        self._weights: Path | None = None
        self.runtime_used: str | None = None
        """``'onnx'``, ``'torch-cpu'`` or ``'torch-cuda'`` once the model has run."""

    # -- what a concrete backbone provides ------------------------------------------------

    @abstractmethod
    def _find_weights(self) -> Path:
        """The weights file (downloading it if allowed); ``WeightsNotFound`` otherwise."""

    @abstractmethod
    def _build_extractor(self, weights: Path) -> nn.Module:
        """Feature extractor: normalised float NCHW -> ``(n, dim)``, weights loaded."""

    def _build_classifier(self, weights: Path) -> nn.Module:
        raise FeatureError(f"backbone {self.name!r} has no ImageNet classifier head")

    @classmethod
    def _local_weights_status(cls, weights_dir: Path | None) -> WeightsStatus:
        return WeightsStatus(True)

    # -- the template ---------------------------------------------------------------------

    @classmethod
    def weights_status(cls, weights_dir: Path | None = None) -> WeightsStatus:
        missing = [module for module in cls.needs_modules if not module_available(module)]
        if missing:
            return WeightsStatus(False, f"needs the Python package(s): {', '.join(missing)}")
        return cls._local_weights_status(weights_dir)

    def resolve_weights(self) -> Path:
        """Path of the weights file in use (found once, then remembered)."""
        if self._weights is None:
            self._weights = self._find_weights()
        return self._weights

    def weights_sha256(self) -> str | None:
        return file_sha256(self.resolve_weights())

    def build_feature_extractor(self) -> nn.Module:
        """A fresh torch feature extractor with the ImageNet weights (for fine-tuning)."""
        return self._build_extractor(self.resolve_weights())

    def build_classifier(self) -> nn.Module:
        """The whole ImageNet classifier (1000 logits), for sanity checks."""
        return self._build_classifier(self.resolve_weights())

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        return self._get_runner()(batch)

    def _get_runner(self) -> Runner:
        with self._runner_lock:
            if self._runner is None:
                self._runner = self._make_runner()
            return self._runner

    def _pixel_embedder(self) -> nn.Module:
        from loupe.features.torch_models import PixelEmbedder

        return PixelEmbedder(self.build_feature_extractor(), self.preprocessing).eval()

    def _make_runner(self) -> Runner:
        weights = self.resolve_weights()
        if self.device == "cuda" or (self.device == "auto" and self.runtime != "onnx"):
            if self.device == "cuda" or _cuda_possible():
                import torch

                if torch.cuda.is_available():
                    return self._torch_runner("cuda")
                if self.device == "cuda":
                    raise FeatureError("device='cuda' was asked for but torch sees no GPU")
        if self.runtime in ("auto", "onnx"):
            try:
                return self._onnx_runner(weights)
            except Exception as exc:  # export or session failure: eager torch still works
                if self.runtime == "onnx":
                    raise
                logger.warning(
                    "ONNX Runtime unavailable for %s (%s: %s); using PyTorch eager",
                    self.name,
                    type(exc).__name__,
                    exc,
                )
        return self._torch_runner("cpu")

    def _onnx_runner(self, weights: Path) -> Runner:
        from loupe.features.onnx_runtime import cached_runner, onnx_cache_path

        cache_dir = self.cache_dir if self.cache_dir is not None else default_onnx_cache_dir()
        path = onnx_cache_path(cache_dir, self.name, file_sha256(weights))
        runner = cached_runner(
            path, self._pixel_embedder, input_size=self.input_size, threads=self.threads
        )
        self.runtime_used = "onnx"
        return runner

    def _torch_runner(self, device: str) -> Runner:
        from loupe.features.torch_models import PixelEmbedder, TorchRunner

        module = self._pixel_embedder()
        assert isinstance(module, PixelEmbedder)
        runner = TorchRunner(module, device=device, threads=self.threads)
        self.runtime_used = f"torch-{device}"
        return runner
