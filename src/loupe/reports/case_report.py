"""The case report PDF (fpdf2): who curated the case and when, the model, counts
per class with a bar chart, score summaries, the flagged items and how each was
resolved, thumbnails per class, and page numbers in the footer.

:func:`build_case_pdf` takes a :class:`CaseReportData` (plain data, no
database) and returns the PDF bytes. The output depends only on that data: the
PDF's creation date is ``data.generated_at`` and every list arrives sorted, so
the same data gives byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loupe.reports import charts
from loupe.reports.sections import ReportText

A4_W, MARGIN = 210.0, 15.0
CONTENT_W = A4_W - 2 * MARGIN
THUMB, THUMB_GAP, THUMB_COLS = 27.0, 3.5, 6
THUMBS_PER_GROUP = 36
INK, MUTED, ACCENT = (25, 25, 25), (100, 100, 100), (0, 90, 150)
WARN_FILL = (255, 243, 205)


@dataclass(frozen=True)
class Curator:
    email: str
    labels: int
    first_at: dt.datetime | None
    last_at: dt.datetime | None


@dataclass(frozen=True)
class FlaggedRow:
    filename: str
    draft: str
    confidence: float | None
    reason: str
    resolution: str
    by: str


@dataclass(frozen=True)
class Thumb:
    filename: str
    path: Path | None  # None: the image could not be read


@dataclass(frozen=True)
class ThumbGroup:
    title: str
    total: int
    thumbs: list[Thumb]
    color: str | None = None


@dataclass(frozen=True)
class MetricSummary:
    name: str
    values: list[float]
    min: float
    max: float
    step: float
    draft_mean: float | None = None


@dataclass(frozen=True)
class ModelInfo:
    number: int
    members: list[str]
    finished_at: dt.datetime | None
    summary: str  # e.g. "cross-validated accuracy 0.93, ECE 0.04"


@dataclass
class CaseReportData:
    project_name: str
    task: str
    case_name: str
    case_status: str
    generated_at: dt.datetime
    loupe_version: str
    finished_at: dt.datetime | None = None
    finished_by: str | None = None
    curators: list[Curator] = field(default_factory=list)
    model: ModelInfo | None = None
    items_total: int = 0
    labelled: int = 0
    counts: list[tuple[str, int, str]] = field(default_factory=list)  # (name, n, #rrggbb)
    resolutions: dict[str, int] = field(default_factory=dict)
    flagged: list[FlaggedRow] = field(default_factory=list)
    thumb_groups: list[ThumbGroup] = field(default_factory=list)
    metrics: list[MetricSummary] = field(default_factory=list)
    text: ReportText = field(default_factory=ReportText)


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _hex_rgb(color: str | None) -> tuple[int, int, int]:
    if not color or len(color) != 7:
        return (78, 121, 167)
    return (int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def _make_pdf(data: CaseReportData) -> Any:
    from fpdf import FPDF

    footer_left = f"Loupe {data.loupe_version} · {data.project_name} · case {data.case_name}"

    class _PDF(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font("DejaVu", size=7)
            self.set_text_color(*MUTED)
            self.cell(CONTENT_W * 0.75, 5, footer_left[:140], align="L")
            self.cell(CONTENT_W * 0.25, 5, f"Page {self.page_no()} of {{nb}}", align="R")

    pdf = _PDF(orientation="P", unit="mm", format="A4")
    fonts = _font_dir()
    pdf.add_font("DejaVu", "", str(fonts / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
    pdf.set_margins(MARGIN, MARGIN, MARGIN)
    pdf.set_auto_page_break(True, margin=18)
    pdf.alias_nb_pages()
    pdf.set_creation_date(data.generated_at.astimezone(dt.UTC))
    pdf.set_title(f"Case report {data.case_name} - {data.project_name}")
    pdf.set_subject(f"Loupe case report: {data.project_name} / {data.case_name}")
    pdf.set_author(", ".join(c.email for c in data.curators) or "Loupe")
    pdf.set_creator(f"Loupe {data.loupe_version}")
    pdf.set_lang("en")
    return pdf


def _heading(pdf: Any, text: str) -> None:
    if pdf.get_y() > 250:
        pdf.add_page()
    pdf.ln(3)
    pdf.set_font("DejaVu", "B", 12)
    pdf.set_text_color(*ACCENT)
    pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(*ACCENT)
    pdf.line(MARGIN, pdf.get_y(), A4_W - MARGIN, pdf.get_y())
    pdf.ln(2)
    pdf.set_text_color(*INK)
    pdf.set_font("DejaVu", size=9)


def _para(pdf: Any, text: str, *, size: float = 9, color: tuple[int, int, int] = INK) -> None:
    pdf.set_font("DejaVu", size=size)
    pdf.set_text_color(*color)
    pdf.multi_cell(0, 5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*INK)


def _facts(pdf: Any, rows: list[tuple[str, str]]) -> None:
    pdf.set_font("DejaVu", size=9)
    with pdf.table(
        col_widths=(38, CONTENT_W - 38),
        first_row_as_headings=False,
        line_height=5.2,
        borders_layout="HORIZONTAL_LINES",
        text_align=("LEFT", "LEFT"),
    ) as table:
        for key, value in rows:
            row = table.row()
            pdf.set_font("DejaVu", "B", 9)
            row.cell(key)
            pdf.set_font("DejaVu", size=9)
            row.cell(value)


def _table(pdf: Any, header: list[str], rows: list[list[str]], widths: tuple[float, ...]) -> None:
    pdf.set_font("DejaVu", size=8)
    with pdf.table(
        col_widths=widths,
        line_height=4.6,
        headings_style=_headings_style(),
        borders_layout="HORIZONTAL_LINES",
        text_align="LEFT",
    ) as table:
        head = table.row()
        for h in header:
            head.cell(h)
        for values in rows:
            row = table.row()
            for v in values:
                row.cell(v)


def _headings_style() -> Any:
    from fpdf.fonts import FontFace

    return FontFace(emphasis="BOLD", color=INK, fill_color=(232, 238, 244))


def _title_block(pdf: Any, data: CaseReportData) -> None:
    pdf.set_font("DejaVu", "B", 18)
    pdf.set_text_color(*INK)
    pdf.multi_cell(0, 9, f"Case report: {data.case_name}", new_x="LMARGIN", new_y="NEXT")
    _para(pdf, f"{data.project_name} · {data.task} project", size=10, color=MUTED)
    pdf.ln(2)
    if data.case_status == "finished":
        status = f"Finished {_when(data.finished_at)}" + (
            f" by {data.finished_by}" if data.finished_by else ""
        )
    else:
        status = "Open: this is a draft report, labels may still change"
    curators = (
        "; ".join(
            f"{c.email} ({c.labels} label{'s' if c.labels != 1 else ''}, "
            f"{_when(c.first_at)} – {_when(c.last_at)})"
            for c in data.curators
        )
        or "nobody yet"
    )
    model = "no model trained"
    if data.model is not None:
        model = (
            f"version {data.model.number} ({' + '.join(data.model.members)}), trained "
            f"{_when(data.model.finished_at)}"
            + (f"; {data.model.summary}" if data.model.summary else "")
        )
    _facts(
        pdf,
        [
            ("Project", data.project_name),
            ("Case", data.case_name),
            ("Status", status),
            ("Items", f"{data.items_total} ({data.labelled} labelled)"),
            ("Curated by", curators),
            ("Model", model),
            ("Report date", _when(data.generated_at)),
        ],
    )


def _no_labels(pdf: Any, data: CaseReportData) -> None:
    pdf.ln(4)
    pdf.set_fill_color(*WARN_FILL)
    pdf.set_font("DejaVu", "B", 11)
    what = "no items" if data.items_total == 0 else f"{data.items_total} items but no labels"
    pdf.multi_cell(
        0,
        8,
        f"This case has no labels yet ({what}): there are no counts, flagged items or "
        "thumbnails to report.",
        fill=True,
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.set_font("DejaVu", size=9)


def _counts_section(pdf: Any, data: CaseReportData) -> None:
    _heading(pdf, data.text.counts_title)
    total = sum(n for _, n, _ in data.counts) or 1
    rows = [[name, str(n), f"{100 * n / total:.1f} %"] for name, n, _ in data.counts]
    _table(pdf, ["Class", "Items", "Share"], rows, (90, 40, 50))
    if data.text.counts_chart:
        png = charts.class_counts_png(
            [c[0] for c in data.counts], [c[1] for c in data.counts], [c[2] for c in data.counts]
        )
        _image(pdf, png, width=150)


def _image(pdf: Any, png: bytes, *, width: float) -> None:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        height = width * im.height / im.width
    if pdf.get_y() + height > pdf.h - 20:
        pdf.add_page()
    pdf.ln(2)
    pdf.image(io.BytesIO(png), x=MARGIN + (CONTENT_W - width) / 2, w=width, h=height)
    pdf.ln(2)


def _scores_section(pdf: Any, data: CaseReportData) -> None:
    _heading(pdf, "Score summary")
    rows = []
    for m in data.metrics:
        v = sorted(m.values)
        if v:
            mean = sum(v) / len(v)
            sd = (sum((x - mean) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0
            mid = len(v) // 2
            median = v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2
            stats = [f"{mean:.2f}", f"{sd:.2f}", f"{median:g}", f"{v[0]:g}", f"{v[-1]:g}"]
        else:
            stats = ["-"] * 5
        draft = f"{m.draft_mean:.2f}" if m.draft_mean is not None else "-"
        rows.append([m.name, f"{m.min:g}–{m.max:g}", str(len(v)), *stats, draft])
    header = ["Metric", "Range", "n", "Mean", "SD", "Median", "Min", "Max", "Model mean"]
    _table(pdf, header, rows, (34, 18, 12, 16, 16, 18, 14, 14, 38))
    if any(m.values for m in data.metrics):
        png = charts.score_histograms_png(
            [(m.name, m.values, m.min, m.max, m.step) for m in data.metrics]
        )
        _image(pdf, png, width=CONTENT_W)


def _flagged_section(pdf: Any, data: CaseReportData) -> None:
    _heading(pdf, f"Flagged items ({len(data.flagged)})")
    if data.resolutions:
        parts = [f"{k}: {v}" for k, v in data.resolutions.items()]
        _para(pdf, "Model drafts in this case: " + "; ".join(parts) + ".", color=MUTED)
        pdf.ln(1)
    if not data.flagged:
        _para(pdf, "The model flagged no item of this case for review.")
        return
    rows = [
        [
            f.filename,
            f.draft + (f" ({f.confidence:.2f})" if f.confidence is not None else ""),
            f.reason,
            f.resolution,
            f.by,
        ]
        for f in data.flagged
    ]
    _table(
        pdf,
        ["File", "Draft (conf.)", "Why flagged", "Resolution", "By"],
        rows,
        (50, 30, 27, 45, 28),
    )


def _thumbs_section(pdf: Any, data: CaseReportData) -> None:
    _heading(pdf, data.text.thumbs_title)
    for group in data.thumb_groups:
        if pdf.get_y() + THUMB + 16 > pdf.h - 20:
            pdf.add_page()
        pdf.set_font("DejaVu", "B", 10)
        pdf.set_fill_color(*_hex_rgb(group.color))
        pdf.cell(3, 5, "", fill=True)
        shown = len(group.thumbs)
        more = (
            f" (showing {shown} of {group.total})" if shown < group.total else f" ({group.total})"
        )
        pdf.cell(0, 5, f" {group.title}{more}", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
        for start in range(0, shown, THUMB_COLS):
            if pdf.get_y() + THUMB + 6 > pdf.h - 20:
                pdf.add_page()
            y = pdf.get_y()
            for k, thumb in enumerate(group.thumbs[start : start + THUMB_COLS]):
                x = MARGIN + k * (THUMB + THUMB_GAP)
                _thumb(pdf, thumb, x, y)
            pdf.set_y(y + THUMB + 5)
        pdf.ln(2)


def _thumb(pdf: Any, thumb: Thumb, x: float, y: float) -> None:
    pdf.set_draw_color(200, 200, 200)
    if thumb.path is not None:
        pdf.image(str(thumb.path), x=x, y=y, w=THUMB, h=THUMB, keep_aspect_ratio=True)
    else:
        pdf.set_xy(x, y + THUMB / 2 - 3)
        pdf.set_font("DejaVu", size=6)
        pdf.cell(THUMB, 6, "image unavailable", align="C")
    pdf.rect(x, y, THUMB, THUMB)
    pdf.set_xy(x, y + THUMB + 0.5)
    pdf.set_font("DejaVu", size=5.5)
    pdf.set_text_color(*MUTED)
    name = (
        thumb.filename
        if len(thumb.filename) <= 28
        else thumb.filename[:12] + "…" + thumb.filename[-14:]
    )
    pdf.cell(THUMB, 3.5, name, align="C")
    pdf.set_text_color(*INK)


def build_case_pdf(data: CaseReportData) -> bytes:
    """The case report as PDF bytes (deterministic for the same ``data``)."""
    pdf = _make_pdf(data)
    pdf.add_page()
    _title_block(pdf, data)
    if data.labelled == 0:
        _no_labels(pdf, data)
    else:
        _counts_section(pdf, data)
        if data.metrics:
            _scores_section(pdf, data)
        _flagged_section(pdf, data)
        if data.thumb_groups:
            _thumbs_section(pdf, data)
    return bytes(pdf.output())
