"""DICOM single files (incl. multi-frame) and series through pydicom."""

from __future__ import annotations

import mmap
import struct
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, pixel_array
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from loupe.media._core import (
    DEFAULT_MAX_PIXELS,
    MediaError,
    MediaInfo,
    PathLike,
    check_pixels,
    file_size,
    translate_errors,
)
from loupe.media.detect import detect_format
from loupe.media.resample import downscale

_PIXEL_TAGS = {0x7FE00010: None, 0x7FE00008: "float32", 0x7FE00009: "float64"}
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"UT", b"UC", b"UR", b"SQ"}
_DEFLATED = "1.2.840.10008.1.2.1.99"
_SEQUENCE_DELIMITER = {True: b"\xfe\xff\xdd\xe0", False: b"\xff\xfe\xe0\xdd"}


@dataclass(frozen=True)
class DicomHeader:
    """What we need from one file's header (pixel data not read)."""

    path: Path
    ds: Dataset
    dtype: str
    frames: int
    channels: int
    # (byte offset, length) of a Pixel Data value that is plain little-endian samples
    # which need no decoder (see _raw_pixels); None: decode with pydicom.
    raw_pixels: tuple[int, int] | None = None

    @property
    def rows(self) -> int:
        return int(self.ds.Rows)

    @property
    def cols(self) -> int:
        return int(self.ds.Columns)


@contextmanager
def dicom_errors(path: PathLike, what: str) -> Iterator[None]:
    with translate_errors(path, what), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        for warning in caught:
            message = str(warning.message).lower()
            if "end of file" in message or "truncat" in message:
                raise MediaError("truncated DICOM", path=path)


def read_header(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DicomHeader:
    """Parse the header, check the size limit and that the pixel data is all there."""
    size = file_size(path)
    with dicom_errors(path, "DICOM header"), open(path, "rb") as handle:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=True)
        pixel_offset = handle.tell()
    with translate_errors(path, "DICOM header"):  # values are parsed lazily, e.g. IS '1A'
        if "Rows" not in ds or "Columns" not in ds:
            raise MediaError("DICOM file has no image (no Rows/Columns)", path=path)
        check_pixels(int(ds.Rows), int(ds.Columns), max_pixels, path=path)
        pixel_tag, value = _check_pixel_data(path, ds, pixel_offset, size)
        frames = int(ds.get("NumberOfFrames") or 1)
        channels = int(ds.get("SamplesPerPixel") or 1)
        dtype = _stored_dtype(ds, pixel_tag)
        raw = _raw_pixels(ds, pixel_tag, value, dtype, frames, channels)
        if _is_palette(ds):
            channels = 3
            descriptor = ds.get("RedPaletteColorLookupTableDescriptor") or [0, 0, 8]
            dtype = "uint16" if int(descriptor[2]) > 8 else "uint8"
    return DicomHeader(Path(path), ds, dtype, frames, channels, raw)


_RAW_SYNTAXES = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}  # implicit / explicit VR LE


def _raw_pixels(
    ds: Dataset,
    pixel_tag: int,
    value: tuple[int, int] | None,
    dtype: str,
    frames: int,
    channels: int,
) -> tuple[int, int] | None:
    """Where the pixel samples are, when reading them is all that decoding would do:
    one little-endian frame of one sample per pixel whose stored bits fill the
    allocated ones (no masking or sign extension), no palette, the exact length."""
    if value is None or pixel_tag != 0x7FE00010 or frames != 1 or channels != 1:
        return None
    if str(_transfer_syntax(ds)) not in _RAW_SYNTAXES or _is_palette(ds):
        return None
    bits = int(ds.get("BitsAllocated") or 0)
    if bits not in (8, 16, 32) or int(ds.get("BitsStored") or 0) != bits:
        return None
    start, length = value
    if length != int(ds.Rows) * int(ds.Columns) * bits // 8 or np.dtype(dtype).itemsize * 8 != bits:
        return None
    return start, length


def _is_palette(ds: Dataset) -> bool:
    return str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR"


def _transfer_syntax(ds: Dataset) -> Any:
    return getattr(ds.get("file_meta", Dataset()), "TransferSyntaxUID", None)


def _stored_dtype(ds: Dataset, pixel_tag: int) -> str:
    float_dtype = _PIXEL_TAGS[pixel_tag]
    if float_dtype is not None:
        return float_dtype
    bits = int(ds.get("BitsAllocated") or 8)
    if bits == 1:
        return "uint8"  # pydicom unpacks bit-packed data to one byte per pixel
    signed = int(ds.get("PixelRepresentation") or 0) == 1
    return f"{'int' if signed else 'uint'}{bits}"


def _check_pixel_data(
    path: PathLike, ds: Dataset, offset: int, size: int
) -> tuple[int, tuple[int, int] | None]:
    """Read the Pixel Data element header at ``offset``; the value must fit in the file.

    Returns the tag and, for a value that is not encapsulated, its (start, length).
    """
    if str(_transfer_syntax(ds)) == _DEFLATED:
        return 0x7FE00010, None  # offsets are inside the deflated stream; decoding will tell
    implicit, little = ds.original_encoding
    with open(path, "rb") as handle:
        handle.seek(offset)
        head = handle.read(12)
    if len(head) < 8:
        raise MediaError("truncated DICOM (pixel data missing)", path=path)
    endian = "<" if little in (True, None) else ">"
    group, element = struct.unpack_from(endian + "HH", head)
    tag = (group << 16) | element
    if tag not in _PIXEL_TAGS:
        raise MediaError("truncated DICOM (pixel data missing)", path=path)
    if not implicit and not (head[4:6].isalpha() and head[4:6].isupper()):
        implicit = True  # some writers encode Pixel Data implicitly despite the syntax
    if implicit:
        (length,), value_start = struct.unpack_from(endian + "I", head, 4), offset + 8
    elif head[4:6] in _LONG_VRS:
        (length,), value_start = struct.unpack_from(endian + "I", head, 8), offset + 12
    else:
        (length,), value_start = struct.unpack_from(endian + "H", head, 6), offset + 8
    if length == 0xFFFFFFFF:  # encapsulated: fragments end with a sequence delimiter
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped,
        ):
            found = mapped.rfind(_SEQUENCE_DELIMITER[endian == "<"], max(value_start, size - 65536))
        if found == -1:
            raise MediaError("truncated DICOM (compressed pixel data incomplete)", path=path)
        return tag, None
    if value_start + length > size:
        raise MediaError(
            f"truncated DICOM (pixel data ends at byte {value_start + length}, file has {size})",
            path=path,
        )
    return tag, (value_start, length) if endian == "<" else None


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm, from the file or its shared functional groups."""
    value = ds.get("PixelSpacing")
    if value is None:
        value = _shared_group_value(ds, "PixelMeasuresSequence", "PixelSpacing")
    if value is None:
        value = ds.get("ImagerPixelSpacing")
    try:
        row, col = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (row, col) if row > 0 and col > 0 else None


def slice_step(ds: Dataset) -> float | None:
    for key in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(key)
        if value is None:
            value = _shared_group_value(ds, "PixelMeasuresSequence", key)
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except (TypeError, ValueError):
            continue
    return None


def _shared_group_value(ds: Dataset, sequence: str, key: str) -> Any:
    try:
        return ds.SharedFunctionalGroupsSequence[0][sequence][0].get(key)
    except (AttributeError, IndexError, KeyError, TypeError):
        return None


def header_extra(header: DicomHeader) -> dict[str, Any]:
    ds = header.ds
    extra: dict[str, Any] = {
        "modality": str(ds.get("Modality", "")),
        "series_uid": str(ds.get("SeriesInstanceUID", "")),
        "photometric": str(ds.get("PhotometricInterpretation", "")),
    }
    transfer_syntax = _transfer_syntax(ds)
    if transfer_syntax is not None:
        extra["transfer_syntax"] = str(transfer_syntax.name)
    slope, intercept = rescale(ds)
    if (slope, intercept) != (1.0, 0.0):
        extra["rescale_slope"], extra["rescale_intercept"] = slope, intercept
    return extra


def rescale(ds: Dataset) -> tuple[float, float]:
    try:
        return float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
    except (TypeError, ValueError):
        return 1.0, 0.0


def probe(path: PathLike, *, max_pixels: int) -> MediaInfo:
    header = read_header(path, max_pixels=max_pixels)
    plane: tuple[int, ...] = (header.rows, header.cols)
    if header.channels > 1:
        plane += (header.channels,)
    pixel = pixel_spacing(header.ds)
    colour = "C" if header.channels > 1 else ""
    if header.frames > 1:
        z_step = slice_step(header.ds) or 1.0
        return MediaInfo(
            format="dicom",
            kind="volume",
            shape=(header.frames, *plane),
            dtype=header.dtype,
            pages=1,
            spacing=(z_step, *pixel) if pixel else None,
            axes="ZYX" + colour,
            extra={**header_extra(header), "frames": header.frames},
        )
    return MediaInfo(
        format="dicom",
        kind="image",
        shape=plane,
        dtype=header.dtype,
        pages=1,
        spacing=pixel,
        axes="YX" + colour,
        extra=header_extra(header),
    )


def read_frame(
    path: PathLike, *, max_side: int | None, max_pixels: int, header: DicomHeader | None = None
) -> np.ndarray:
    """Stored pixel values of the (middle) frame, (rows, cols) or (rows, cols, 3)."""
    header = header or read_header(path, max_pixels=max_pixels)
    array = _decode(header, index=header.frames // 2 if header.frames > 1 else None)
    return array if max_side is None else downscale(array, max_side=max_side)


def read_file_volume(path: PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """All frames of one file as (z, y, x[, C]), rescaled to modality units if declared."""
    header = read_header(path)
    frames = _decode(header, index=None)
    if header.frames == 1:
        frames = frames[None]
    pixel = pixel_spacing(header.ds) or (1.0, 1.0)
    spacing = (slice_step(header.ds) or 1.0, pixel[0], pixel[1])
    return rescaled_stack([frames], [header.ds]), spacing


def _decode(header: DicomHeader, *, index: int | None) -> np.ndarray:
    """Stored values of frame ``index`` (all frames if None), palette applied, native order."""
    path = header.path
    if header.raw_pixels is not None:  # plain samples: read them (pydicom would too)
        start, length = header.raw_pixels
        dt = np.dtype(header.dtype).newbyteorder("<")
        with translate_errors(path, "DICOM pixel data"):
            raw = np.fromfile(path, dtype=dt, count=length // dt.itemsize, offset=start)
        if raw.size * dt.itemsize != length:
            raise MediaError("truncated DICOM (pixel data missing)", path=path)
        raw = raw.reshape(header.rows, header.cols)
        return raw.astype(raw.dtype.newbyteorder("="), copy=False)
    syntax = _transfer_syntax(header.ds)
    with dicom_errors(path, "DICOM pixel data"):
        try:
            if str(syntax) == _DEFLATED:  # frame offsets only exist after inflating
                array = _decode_via_dataset(path, index)
            else:
                try:
                    with open(path, "rb") as handle:
                        array = pixel_array(handle, index=index, **_syntax_hint(header.ds))
                except ValueError:
                    # the streaming parser is strict about element encoding; the full
                    # dataset parser tolerates common writer mistakes
                    array = _decode_via_dataset(path, index)
        except (RuntimeError, NotImplementedError) as exc:
            name = getattr(syntax, "name", None) or "unknown transfer syntax"
            if "missing dependencies" in str(exc):
                reason = f"unsupported DICOM compression ({name}): no decoder installed"
            else:
                reason = f"cannot decode DICOM pixel data ({name})"
            raise MediaError(reason, path=path) from exc
        if _is_palette(header.ds):
            array = apply_color_lut(array, header.ds)
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _decode_via_dataset(path: Path, index: int | None) -> np.ndarray:
    return np.asarray(pixel_array(pydicom.dcmread(path, force=True), index=index))


def _syntax_hint(ds: Dataset) -> dict[str, Any]:
    """Files without a File Meta header do not name their transfer syntax: give pydicom
    the one the dataset was actually parsed with."""
    if _transfer_syntax(ds) is not None:
        return {}
    implicit, little = ds.original_encoding
    if implicit:
        return {"transfer_syntax_uid": ImplicitVRLittleEndian}
    return {"transfer_syntax_uid": ExplicitVRLittleEndian if little else ExplicitVRBigEndian}


def rescaled_stack(blocks: list[np.ndarray], datasets: list[Dataset]) -> np.ndarray:
    factors = [rescale(ds) for ds in datasets]
    if all(f == (1.0, 0.0) for f in factors):
        stacked = np.concatenate(blocks, axis=0)
        return stacked.astype(stacked.dtype.newbyteorder("="), copy=False)
    # One float32 array filled block by block: no per-block temporaries, no final copy.
    out = np.empty((sum(b.shape[0] for b in blocks), *blocks[0].shape[1:]), dtype=np.float32)
    start = 0
    for block, (slope, intercept) in zip(blocks, factors, strict=True):
        part = out[start : start + block.shape[0]]
        np.multiply(block, np.float32(slope), out=part, dtype=np.float32, casting="unsafe")
        part += np.float32(intercept)
        start += block.shape[0]
    return out


def group_series(paths: Iterable[PathLike]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file() or detect_format(path) != "dicom":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(
                    path, stop_before_pixels=True, force=True, specific_tags=["SeriesInstanceUID"]
                )
        except Exception:  # unreadable files are reported when probed, not grouped
            continue
        uid = ds.get("SeriesInstanceUID")
        if uid:
            groups.setdefault(str(uid), []).append(path)
    return {uid: sorted(files) for uid, files in groups.items()}
