"""Real volumes for the 3-D tests, from files inside installed wheels.

nilearn ships the MNI152 2009a (symmetric) 1 mm T1 template with its grey- and
white-matter probability maps (``nilearn/datasets/data/mni_icbm152_*``, 197x233x189,
RAS). Thresholding a probability map at 0.5 gives a reference mask of that tissue.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def nilearn_data() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("nilearn (test data: MNI152 template) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


MNI_T1 = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_GM = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
MNI_WM = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


@dataclass(frozen=True)
class Mni:
    t1_path: Path
    t1: np.ndarray  # (z, y, x) uint8
    labels: np.ndarray  # (z, y, x) uint8: 0 other, 1 grey matter, 2 white matter
    affine: np.ndarray


def _zyx(image: nib.Nifti1Image) -> np.ndarray:
    return np.ascontiguousarray(np.asanyarray(image.dataobj).transpose(2, 1, 0))


@pytest.fixture(scope="session")
def mni() -> Mni:
    folder = nilearn_data()
    t1 = nib.load(folder / MNI_T1)
    labels = np.zeros(t1.shape[::-1], dtype=np.uint8)
    labels[_zyx(nib.load(folder / MNI_GM)) > 127] = 1
    labels[_zyx(nib.load(folder / MNI_WM)) > 127] = 2
    return Mni(folder / MNI_T1, _zyx(t1), labels, np.asarray(t1.affine))
