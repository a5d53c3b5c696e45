"""The case-report PDF builder on plain data: deterministic across processes, and
a case without labels says so."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from pypdf import PdfReader

from loupe.reports.case_report import (
    CaseReportData,
    Curator,
    FlaggedRow,
    ModelInfo,
    Thumb,
    ThumbGroup,
    build_case_pdf,
)

WHEN = dt.datetime(2025, 3, 1, 9, 30, tzinfo=dt.UTC)


def sample(thumb: Path) -> CaseReportData:
    return CaseReportData(
        project_name="Hémato study",
        task="classify",
        case_name="S-1 Müller",
        case_status="finished",
        generated_at=WHEN,
        loupe_version="0.1.0",
        finished_at=WHEN,
        finished_by="a@lab.org",
        curators=[Curator("a@lab.org", 3, WHEN - dt.timedelta(hours=2), WHEN)],
        model=ModelInfo(2, ["classic", "mobilenet_v2"], WHEN - dt.timedelta(days=1), "ECE 0.05"),
        items_total=3,
        labelled=3,
        counts=[("blast", 2, "#e69f00"), ("neutrophil", 1, "#56b4e9")],
        resolutions={"accepted draft": 1, "corrected": 1},
        flagged=[
            FlaggedRow(
                "x.png",
                "blast",
                0.51,
                "low confidence",
                "corrected: blast → neutrophil",
                "a@lab.org",
            )
        ],  # fmt: skip
        thumb_groups=[ThumbGroup("blast", 2, [Thumb("x.png", thumb), Thumb("y.png", None)])],
    )


def _thumb(tmp_path: Path) -> Path:
    path = tmp_path / "thumb.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_same_data_gives_the_same_bytes_in_any_process(tmp_path: Path) -> None:
    thumb = _thumb(tmp_path)
    here = hashlib.sha256(build_case_pdf(sample(thumb))).hexdigest()
    code = (
        "import hashlib, sys\n"
        "from pathlib import Path\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "import test_case_report as t\n"
        "from loupe.reports.case_report import build_case_pdf\n"
        f"print(hashlib.sha256(build_case_pdf(t.sample(Path({str(thumb)!r})))).hexdigest())\n"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
        )
        assert out.stdout.strip() == here


def test_pdf_carries_its_date_and_text(tmp_path: Path) -> None:
    pdf = build_case_pdf(sample(_thumb(tmp_path)))
    reader = PdfReader(io.BytesIO(pdf))
    assert reader.metadata is not None and reader.metadata.creation_date == WHEN
    text = " ".join(" ".join((p.extract_text() or "").split()) for p in reader.pages)
    assert "Case report: S-1 Müller" in text and "corrected: blast → neutrophil" in text
    assert "image unavailable" in text and "Page 1 of 1" in text


def test_a_case_without_labels_says_so() -> None:
    data = CaseReportData(
        project_name="P", task="score", case_name="C", case_status="open",
        generated_at=WHEN, loupe_version="0.1.0", items_total=0,
    )  # fmt: skip
    text = PdfReader(io.BytesIO(build_case_pdf(data))).pages[0].extract_text()
    assert "no labels" in " ".join(text.split())
