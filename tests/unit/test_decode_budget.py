"""Image decoding under a memory budget (issue 11, item 3)."""

from __future__ import annotations

import struct
import threading
import time
import zlib
from pathlib import Path

import psutil
import pytest

from loupe.media import MediaError, budget, probe, read_image

MiB = 1 << 20


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def sparse_png(path: Path, side: int = 14_000) -> Path:
    """An RGBA PNG of zeros: under the 200 Mpx limit, ~800 kB on disk, ~1.6 GB to decode."""
    header = struct.pack(">IIBBBBB", side, side, 8, 6, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = bytes(1 + 4 * side)
    parts = [comp.compress(row) for _ in range(side)]
    parts.append(comp.flush())
    idat = b"".join(parts)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )
    return path


def test_a_small_png_that_needs_gigabytes_is_refused_before_decoding(tmp_path: Path) -> None:
    path = sparse_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 1 * MiB
    rss = psutil.Process()
    before = rss.memory_info().rss
    t0 = time.perf_counter()
    with pytest.raises(MediaError, match="memory budget"):
        probe(path)
    with pytest.raises(MediaError, match="memory budget"):
        read_image(path)
    assert time.perf_counter() - t0 < 2
    assert rss.memory_info().rss - before < 100 * MiB


def test_big_decodes_wait_for_a_slot() -> None:
    budget.set_decode_limits(max_bytes=1 << 30, concurrent=1)
    try:
        running, peak = 0, 0
        lock = threading.Lock()

        def decode() -> None:
            nonlocal running, peak
            with budget.decode_slot(budget.BIG_DECODE_BYTES, path="x.png"):
                with lock:
                    running += 1
                    peak = max(peak, running)
                time.sleep(0.05)
                with lock:
                    running -= 1

        threads = [threading.Thread(target=decode) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert peak == 1
        with pytest.raises(MediaError, match="memory budget"):
            with budget.decode_slot(2 << 30, path="x.png"):
                pass
    finally:
        budget.set_decode_limits()
