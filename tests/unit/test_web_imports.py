"""The web process never loads the model stack (issue 16): it answers labels while a
worker process trains. Building the app must not import torch, ONNX Runtime, MONAI,
UMAP/numba or scikit-learn; they load in workers and job code only."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "onnxruntime", "monai", "umap", "numba", "sklearn", "timm", "cleanlab")


def test_create_app_imports_no_model_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from loupe.api.app import create_app\n"
        "create_app()\n"
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "assert not loaded, f'the web app imported {loaded}'\n"
    )
    env = {"LOUPE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
