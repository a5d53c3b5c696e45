"""JPEG, PNG and BMP through Pillow, with our own size limit and truncation checks."""

from __future__ import annotations

import mmap
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import BmpImagePlugin, ImageFile, JpegImagePlugin, PngImagePlugin

from loupe.media._core import MediaError, MediaInfo, ParameterError, PathLike, check_pixels
from loupe.media.budget import check_decode_bytes, decode_slot
from loupe.media.resample import downscale, target_shape

# We instantiate the plugin classes directly instead of calling Image.open: that skips
# Pillow's process-global MAX_IMAGE_PIXELS check, so our own ``max_pixels`` is the only
# limit and it is applied before any pixel is decoded.
_PLUGINS: dict[str, type[ImageFile.ImageFile]] = {
    "jpeg": JpegImagePlugin.JpegImageFile,
    "png": PngImagePlugin.PngImageFile,
    "bmp": BmpImagePlugin.BmpImageFile,
}
_LABELS = {"jpeg": "JPEG", "png": "PNG", "bmp": "BMP"}

# Pillow mode -> (mode we convert to or None, channels or 0 for 2-D, numpy dtype name)
_MODES: dict[str, tuple[str | None, int, str]] = {
    "1": ("L", 0, "uint8"),
    "L": (None, 0, "uint8"),
    "P": ("RGB", 3, "uint8"),
    "PA": ("RGBA", 4, "uint8"),
    "LA": ("RGBA", 4, "uint8"),
    "La": ("RGBA", 4, "uint8"),
    "RGB": (None, 3, "uint8"),
    "RGBA": (None, 4, "uint8"),
    "RGBa": ("RGBA", 4, "uint8"),
    "RGBX": ("RGB", 3, "uint8"),
    "CMYK": ("RGB", 3, "uint8"),
    "YCbCr": ("RGB", 3, "uint8"),
    "LAB": ("RGB", 3, "uint8"),
    "HSV": ("RGB", 3, "uint8"),
    "I;16": (None, 0, "uint16"),
    "I;16L": (None, 0, "uint16"),
    "I;16B": (None, 0, "uint16"),
    "I;16N": (None, 0, "uint16"),
    "I": (None, 0, "int32"),
    "F": (None, 0, "float32"),
}


@contextmanager
def _open(path: PathLike, fmt: str) -> Iterator[ImageFile.ImageFile]:
    label = _LABELS[fmt]
    with open(path, "rb") as handle, _pil_errors(path, label):
        image = _PLUGINS[fmt](handle, str(path))
        if image.mode not in _MODES:
            raise MediaError(f"unsupported {label} pixel mode {image.mode!r}", path=path)
        yield image


@contextmanager
def _pil_errors(path: PathLike, label: str) -> Iterator[None]:
    """Pillow signals bad data with several exception types; all mean 'corrupt file'."""
    try:
        with warnings.catch_warnings():
            # Pillow warns about odd metadata (EXIF, ICC); the pixels may still be fine and
            # real damage raises, so the warnings are noise here.
            warnings.simplefilter("ignore")
            yield
    except (MediaError, ParameterError):
        raise
    except MemoryError:
        raise MediaError(f"{label} too large to decode in memory", path=path) from None
    except (OSError, SyntaxError, ValueError, struct.error, IndexError, EOFError) as exc:
        message = str(exc)
        if "truncated" in message.lower() or isinstance(exc, EOFError):
            raise MediaError(f"truncated {label}", path=path) from exc
        raise MediaError(f"corrupt {label}: {message[:200]}", path=path) from exc


def _target_mode(image: ImageFile.ImageFile) -> tuple[str | None, int, str]:
    convert_to, channels, dtype = _MODES[image.mode]
    if image.mode == "P" and "transparency" in image.info:
        return "RGBA", 4, "uint8"
    return convert_to, channels, dtype


def probe(path: PathLike, fmt: str, *, size: int, max_pixels: int) -> MediaInfo:
    label = _LABELS[fmt]
    with _open(path, fmt) as image:
        cols, rows = image.size
        check_pixels(rows, cols, max_pixels, path=path)
        _, channels, dtype = _target_mode(image)
        check_decode_bytes(_decode_bytes(image, rows, cols), path=path)
        extra: dict[str, object] = {"mode": image.mode}
        if fmt == "jpeg":
            extra["progressive"] = bool(image.info.get("progressive"))
        if fmt == "png":
            extra["interlaced"] = bool(image.info.get("interlace"))
    if fmt == "jpeg" and not _jpeg_has_eoi(path):
        raise MediaError(f"truncated {label} (no end-of-image marker)", path=path)
    if fmt == "bmp":
        _check_bmp_length(path, size)
    if fmt == "png":
        with _open(path, fmt) as image:
            image.verify()  # walks all chunks and checks CRCs without inflating IDAT
    shape = (rows, cols, channels) if channels else (rows, cols)
    return MediaInfo(
        format=fmt,
        kind="image",
        shape=shape,
        dtype=dtype,
        pages=1,
        spacing=None,
        axes="YXC" if channels else "YX",
        extra=extra,
    )


def read(path: PathLike, fmt: str, *, max_side: int | None, max_pixels: int) -> np.ndarray:
    """Decode to (rows, cols) or (rows, cols, C); JPEGs are DCT-downscaled when possible."""
    with _open(path, fmt) as image:
        cols, rows = image.size
        if fmt == "jpeg" and max_side is not None:
            new_rows, new_cols = target_shape(rows, cols, max_side)
            # draft() picks the largest 1/2^k DCT scale that is still >= the request,
            # so only a fraction of the coefficients are ever inverse-transformed.
            image.draft(image.mode, (new_cols, new_rows))
        draft_cols, draft_rows = image.size
        check_pixels(draft_rows, draft_cols, max_pixels, path=path)
        convert_to, _, dtype = _target_mode(image)
        with decode_slot(_decode_bytes(image, draft_rows, draft_cols), path=path):
            image.load()
            loaded = image.convert(convert_to) if convert_to else image
            array = np.asarray(loaded)
    if array.dtype.byteorder not in ("=", "|") or array.dtype.name != dtype:
        array = array.astype(dtype)
    if max_side is not None:
        array = downscale(array, max_side=max_side)
    return array


def _decode_bytes(image: ImageFile.ImageFile, rows: int, cols: int) -> int:
    """Peak bytes of decoding ``image``: Pillow's buffer, its conversion, the numpy copy."""
    convert_to, channels, dtype = _target_mode(image)
    decoded = rows * cols * max(len(image.getbands()), 1) * (2 if "16" in image.mode else 1)
    if image.mode in ("I", "F"):
        decoded = rows * cols * 4
    converted = rows * cols * max(channels, 1) * np.dtype(dtype).itemsize
    return decoded + (converted if convert_to else 0) + converted


def _jpeg_has_eoi(path: PathLike) -> bool:
    """True when an EOI marker follows the first scan.

    Marker segments before the first SOS are skipped by their lengths, so an EXIF
    thumbnail's EOI cannot be mistaken for ours; inside entropy-coded data 0xFF is always
    stuffed, so the first FFD9 after SOS is the real end. Data appended after EOI
    (e.g. motion-photo trailers) is allowed.
    """
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        end = len(m)
        pos = 2
        while pos + 4 <= end:
            if m[pos] != 0xFF:
                return False
            marker = m[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack_from(">H", m, pos + 2)
            if marker == 0xDA:
                return m.find(b"\xff\xd9", pos + 2 + length) != -1
            pos += 2 + length
        return False


def _check_bmp_length(path: PathLike, size: int) -> None:
    """Uncompressed BMP rows have a fixed stride, so the expected length is known."""
    with open(path, "rb") as handle:
        head = handle.read(34)
    if len(head) < 26:
        raise MediaError("truncated BMP (header incomplete)", path=path)
    (data_offset,) = struct.unpack_from("<I", head, 10)
    (header_size,) = struct.unpack_from("<I", head, 14)
    if header_size == 12:
        width, height, _, bits = struct.unpack_from("<HHHH", head, 18)
        compression = 0
    else:
        if len(head) < 34:
            raise MediaError("truncated BMP (header incomplete)", path=path)
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", head, 18)
    if compression not in (0, 3, 6):  # RLE/JPEG/PNG payloads have no fixed length
        return
    stride = ((abs(width) * bits + 31) // 32) * 4
    expected = data_offset + stride * abs(height)
    if size < expected:
        raise MediaError(
            f"truncated BMP ({size} bytes, header declares {expected})",
            path=path,
        )
