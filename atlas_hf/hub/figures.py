"""The statistics figure of a dataset card, drawn with matplotlib (the `figures` extra)."""

from __future__ import annotations

import io
import logging
from typing import Any, Mapping

from atlas_hf.annotation.oracles.base import CATEGORIES

logger = logging.getLogger(__name__)

RATIO_BINS = 10
_CATEGORY_COLORS = ("#4285f4", "#34a853", "#ea4335", "#fbbc05")
_OTHER_COLOR = "#808080"
_RATIO_COLOR = "#673ab7"


def statistics_figure(stats: Mapping[str, Any]) -> Any:
    """Critical steps per category (left) and a histogram of each row's critical ratio (right).

    Args:
        stats (`Mapping`): `annotation_statistics(dataset)`.

    Returns:
        `matplotlib.figure.Figure`: The figure (the bars' heights are the counts).

    Raises:
        `ImportError`: matplotlib is not installed (`pip install "atlas-hf[figures]"`).
    """
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 3.4), dpi=100, layout="constrained")
    by_category, by_ratio = figure.subplots(1, 2)
    names = list(stats["categories"])
    counts = [stats["categories"][c] for c in names]
    colors = [_CATEGORY_COLORS[CATEGORIES.index(c)] if c in CATEGORIES else _OTHER_COLOR for c in names]
    bars = by_category.bar([n.replace(" ", "\n", 1) for n in names], counts, color=colors)
    by_category.bar_label(bars)
    by_category.set_title("Critical steps by category")
    by_category.set_ylabel("steps")
    bins = [0] * RATIO_BINS
    for ratio in stats["row_ratios"]:
        bins[min(int(ratio * RATIO_BINS + 1e-9), RATIO_BINS - 1)] += 1
    width = 100 / RATIO_BINS
    by_ratio.bar([width * (i + 0.5) for i in range(RATIO_BINS)], bins, width=0.9 * width, color=_RATIO_COLOR)
    by_ratio.set_xlim(0, 100)
    by_ratio.set_title("Critical ratio per row")
    by_ratio.set_xlabel("critical steps / steps (%)")
    by_ratio.set_ylabel("rows")
    for axes in (by_category, by_ratio):
        axes.spines[["top", "right"]].set_visible(False)
    return figure


def statistics_png(stats: Mapping[str, Any]) -> bytes | None:
    """`statistics_figure(stats)` as PNG bytes; `None` (and a log line) when matplotlib is not installed."""
    try:
        figure = statistics_figure(stats)
    except ImportError:
        logger.info('matplotlib is not installed, so the dataset card has no figure: pip install "atlas-hf[figures]".')
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()
