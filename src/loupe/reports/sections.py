"""What a task kind tells the case report about its sections (plain data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportText:
    """Headings of the case report's sections, and whether counts get a bar chart."""

    counts_title: str = "Labels"
    counts_chart: bool = False
    thumbs_title: str = "Thumbnails"
