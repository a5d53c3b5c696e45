"""Charts for reports, drawn by matplotlib (Agg, no display) as PNG bytes.

Figures are built with the object API (``Figure`` + ``FigureCanvasAgg``), not
pyplot, so they are thread-safe and leave no global state. The PNGs carry no
software or date metadata: the same data gives the same bytes, which keeps
regenerated reports identical.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

DPI = 150
_PNG_METADATA: dict[str, Any] = {"Software": None}


def _figure(width_in: float, height_in: float) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Any) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI, metadata=_PNG_METADATA)
    return out.getvalue()


def class_counts_png(
    names: Sequence[str],
    counts: Sequence[int],
    colors: Sequence[str],
    *,
    title: str = "Items per class",
) -> bytes:
    """A horizontal bar chart of counts per class (first class on top), as PNG."""
    if not (len(names) == len(counts) == len(colors)):
        raise ValueError("names, counts and colors must have the same length")
    fig = _figure(6.5, max(1.6, 0.42 * len(names) + 0.9))
    ax = fig.add_subplot()
    positions = list(range(len(names)))[::-1]
    bars = ax.barh(positions, counts, color=list(colors), edgecolor="#333333", linewidth=0.5)
    ax.set_yticks(positions, labels=list(names))
    ax.bar_label(bars, labels=[str(c) for c in counts], padding=3, fontsize=9)
    ax.set_xlabel("items")
    ax.set_title(title, fontsize=11, loc="left")
    ax.set_xlim(0, max([*counts, 1]) * 1.15)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def score_histograms_png(
    metrics: Sequence[tuple[str, Sequence[float], float, float, float]],
) -> bytes:
    """One histogram per metric, ``(name, values, min, max, step)``, side by side, as PNG.

    Bars sit on the metric's step grid, so a 0-4 grade shows five bars.
    """
    if not metrics:
        raise ValueError("metrics must not be empty")
    cols = min(3, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig = _figure(6.5, 2.3 * rows + 0.3)
    for k, (name, values, lo, hi, step) in enumerate(metrics):
        ax = fig.add_subplot(rows, cols, k + 1)
        n_bins = max(1, round((hi - lo) / step) + 1)
        grid = [lo + i * step for i in range(n_bins)]
        counts = [0] * n_bins
        for v in values:
            i = min(n_bins - 1, max(0, round((v - lo) / step)))
            counts[i] += 1
        ax.bar(grid, counts, width=step * 0.8, color="#4e79a7", edgecolor="#333333", linewidth=0.5)
        if n_bins <= 12:
            ax.set_xticks(grid, labels=[f"{g:g}" for g in grid])
        mean = sum(values) / len(values) if values else None
        if mean is not None:
            ax.axvline(mean, color="#d55e00", linewidth=1.2, linestyle="--")
        title = f"{name} (n={len(values)}" + (f", mean {mean:.2f})" if mean is not None else ")")
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("items", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
