"""Reading scientific and medical images: formats, headers, pixels, thumbnails.

Takes paths and returns arrays or dataclasses; knows nothing about HTTP, the database or
jobs. Supported: JPEG, PNG, BMP, TIFF (tiled, pyramidal, multi-page, BigTIFF), FITS,
NIfTI (.nii, .nii.gz) and DICOM (single files, multi-frame, series). Every failure to
read a file is a :class:`MediaError` with a short human-readable ``reason``.
"""

from loupe.media._core import MEDIA_EXTENSIONS, MediaError, MediaInfo
from loupe.media.api import (
    group_dicom_series,
    make_thumbnail,
    probe,
    probe_dicom_series,
    read_image,
    read_volume,
    thumbnail_dicom_series,
)
from loupe.media.detect import detect_format, iter_media_files, sha256_file
from loupe.media.display import to_display_uint8

__all__ = [
    "MEDIA_EXTENSIONS",
    "MediaError",
    "MediaInfo",
    "detect_format",
    "group_dicom_series",
    "iter_media_files",
    "make_thumbnail",
    "probe",
    "probe_dicom_series",
    "read_image",
    "read_volume",
    "sha256_file",
    "thumbnail_dicom_series",
    "to_display_uint8",
]
