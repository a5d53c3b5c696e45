"""Finding weights files: packages that ship them, ``LOUPE_WEIGHTS``, the torch hub cache.

Nothing here imports torch, so ``/api/info`` can report what is available cheaply.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import re
import sys
from pathlib import Path

from loupe.features.base import WeightsNotFound
from loupe.media import sha256_file

WEIGHTS_ENV = "LOUPE_WEIGHTS"
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,})\.pth$")


def weights_dir_from_env() -> Path | None:
    """The folder named by ``LOUPE_WEIGHTS`` (the same variable as ``Settings.weights``)."""
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(value).expanduser() if value else None


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed without importing torch.

    Follows torch's rules: ``$TORCH_HOME/hub``, else ``$XDG_CACHE_HOME/torch/hub``, else
    ``~/.cache/torch/hub``. If torch is already imported, asks it (``set_dir`` counts).
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        return Path(torch.hub.get_dir()) / "checkpoints"
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home is None:
        torch_home = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(torch_home).expanduser() / "hub" / "checkpoints"


def search_dirs(weights_dir: Path | None) -> list[Path]:
    """Where local weights are looked for, in order: ``weights_dir`` (or
    ``LOUPE_WEIGHTS``), then the torch hub cache."""
    first = weights_dir if weights_dir is not None else weights_dir_from_env()
    dirs = [Path(first)] if first is not None else []
    return [*dirs, hub_checkpoints_dir()]


def find_local(filename: str, weights_dir: Path | None) -> Path | None:
    """The first existing ``<dir>/<filename>`` among :func:`search_dirs`, or None."""
    for folder in search_dirs(weights_dir):
        candidate = folder / filename
        if candidate.is_file():
            return candidate
    return None


def package_file(distribution: str, filename: str) -> Path | None:
    """A file shipped inside an installed distribution (found with importlib.metadata)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == filename:
            path = Path(str(entry.locate()))
            if path.is_file():
                return path
    return None


def require_local(filename: str, weights_dir: Path | None, *, hint: str = "") -> Path:
    """:func:`find_local` or ``WeightsNotFound`` naming the file and the folders searched."""
    found = find_local(filename, weights_dir)
    if found is None:
        raise WeightsNotFound(filename, search_dirs(weights_dir), hint=hint)
    return found


def module_available(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    return importlib.util.find_spec(module) is not None


def file_sha256(path: Path) -> str:
    """SHA-256 of a weights file, remembered per (path, size, mtime)."""
    stat = path.stat()
    return _sha256_cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(path)


def download_to_hub_cache(url: str, filename: str, weights_dir: Path | None) -> Path:
    """Download ``url`` into the torch hub cache as ``filename`` with torch's downloader
    (a temporary file renamed when complete), checking the SHA-256 prefix that
    torchvision puts in its file names (``resnet18-f37072fd.pth``). Raises
    ``WeightsNotFound`` when offline."""
    import torch.hub

    target = hub_checkpoints_dir() / filename
    match = _HASH_IN_NAME.search(filename)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            url, str(target), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # any network or disk failure means "not available"
        raise WeightsNotFound(
            filename,
            search_dirs(weights_dir),
            hint=f"downloading {url} failed ({type(exc).__name__}: {exc}); put the file in "
            f"a folder named by {WEIGHTS_ENV}",
        ) from exc
    return target
