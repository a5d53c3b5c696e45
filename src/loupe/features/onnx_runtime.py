"""Export a pixel embedder to ONNX once, cache the file, run it with ONNX Runtime.

The cached file is ``<cache_dir>/<backbone>-<weights sha256[:12]>.onnx``; it takes uint8
``(n, size, size, 3)`` pixels and returns L2-normalised float32 ``(n, dim)`` embeddings.
A ``loupe_graph_version`` metadata entry marks the export recipe: a file written by an
older recipe is exported again.
"""

from __future__ import annotations

import logging
import os
import uuid
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

logger = logging.getLogger(__name__)

GRAPH_VERSION = "1"
_VERSION_KEY = "loupe_graph_version"
_INPUT = "pixels"
_OUTPUT = "embedding"
_OPSET = 17
MICRO_BATCH = 8


def onnx_cache_path(cache_dir: Path, name: str, weights_sha256: str) -> Path:
    """Where the ONNX export of backbone ``name`` with these weights is cached."""
    return Path(cache_dir) / f"{name}-{weights_sha256[:12]}.onnx"


def export_onnx(module: nn.Module, path: Path, *, input_size: int) -> None:
    """Export ``module`` (uint8 NHWC pixels -> embeddings) to ``path`` atomically.

    Uses torch's TorchScript-based exporter with a dynamic batch axis; the file is written
    under a temporary name and renamed, so concurrent exporters never expose half a file.
    """
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    example = torch.zeros((2, input_size, input_size, 3), dtype=torch.uint8)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            # The exporter warns about its own deprecation and traced shapes; neither
            # matters for a fixed-size CNN.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
                opset_version=_OPSET,
            )
        model = onnx.load(str(tmp))
        entry = model.metadata_props.add()
        entry.key, entry.value = _VERSION_KEY, GRAPH_VERSION
        onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class OnnxRunner:
    """An ONNX Runtime CPU session over an exported pixel embedder.

    Data-parallel rather than op-parallel: the session runs single-threaded (full graph
    optimisation: NCHWc layouts, Conv+Clip fusion) and ``threads`` Python threads run
    micro-batches of at most ``micro_batch`` images through it concurrently (ONNX
    Runtime releases the GIL and allows concurrent ``run`` calls). On the 2-core
    benchmark machine this matches one session with 2 intra-op threads when the machine
    is idle and is ~1.7x faster when other processes compete for the cores, because no
    thread waits at a per-operator barrier for a descheduled peer. Small micro-batches
    also keep a few images' activations in the CPU caches (4-8 beat 32 or 64).
    """

    def __init__(self, path: Path, *, threads: int, micro_batch: int = MICRO_BATCH) -> None:
        import onnxruntime as ort

        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1, got {micro_batch}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.path = path
        self.threads = threads
        self.micro_batch = micro_batch
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.graph_version = meta.get(_VERSION_KEY)
        self._pool = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="loupe-onnx")
            if threads > 1
            else None
        )

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([_OUTPUT], {_INPUT: chunk})
        return np.asarray(out, dtype=np.float32)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        pixels = np.ascontiguousarray(batch, dtype=np.uint8)
        count = len(pixels)
        if count == 0:
            raise ValueError("batch must hold at least one image")
        # Small batches are split evenly so that every thread has work.
        size = min(self.micro_batch, -(-count // self.threads))
        chunks = [pixels[start : start + size] for start in range(0, count, size)]
        if self._pool is None or len(chunks) == 1:
            parts = [self._run(chunk) for chunk in chunks]
        else:
            parts = list(self._pool.map(self._run, chunks))
        return np.concatenate(parts)


def cached_runner(
    path: Path, build_module: Callable[[], nn.Module], *, input_size: int, threads: int
) -> OnnxRunner:
    """An :class:`OnnxRunner` on ``path``, exporting ``build_module()`` first if the file
    is missing, unreadable or from an older export recipe."""
    if path.is_file():
        try:
            runner = OnnxRunner(path, threads=threads)
        except Exception as exc:  # a truncated or foreign file: export again
            logger.warning("cached ONNX file %s is unusable (%s); exporting again", path, exc)
        else:
            if runner.graph_version == GRAPH_VERSION:
                return runner
            logger.info("cached ONNX file %s is from an older export; exporting again", path)
    logger.info("exporting %s to ONNX (once per weights file)", path.name)
    export_onnx(build_module(), path, input_size=input_size)
    return OnnxRunner(path, threads=threads)
