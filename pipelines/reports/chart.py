"""The daily report's chart: runs per job by outcome, and p50/p95 durations, as a PNG.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so it is
safe in any run worker and in threads. Run counts are whole numbers, so the runs axis only has integer
ticks; each legend sits below its panel, outside the bars, so it hides none of them however long the bars
are; a day without runs says so instead of drawing empty axes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from pipelines.reports.metrics import RunMetrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "canceled": "#9e9e9e", "in_progress": "#1565c0"}
NO_RUNS = "No runs on this day"


def chart_png(metrics: RunMetrics, title: str) -> bytes:
    buffer = io.BytesIO()
    chart_figure(metrics, title).savefig(buffer, format="png")
    return buffer.getvalue()


def chart_figure(metrics: RunMetrics, title: str) -> Figure:
    # Imported here: matplotlib costs about a second to import, paid by the report run, not by every
    # process that loads the code location.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    runs_axis, time_axis = figure.subplots(1, 2)
    figure.suptitle(title)
    runs_axis.set_title("Runs per job")
    time_axis.set_title("Run duration")
    if not metrics.jobs:
        for axis in (runs_axis, time_axis):
            axis.text(0.5, 0.5, NO_RUNS, ha="center", va="center", color="#616161", transform=axis.transAxes)
            axis.set_xticks([])
            axis.set_yticks([])
        return figure

    names = [job.job_name for job in metrics.jobs]
    positions = list(range(len(names)))
    bottom = [0] * len(names)
    for outcome, color in COLORS.items():
        values = [getattr(job, outcome) for job in metrics.jobs]
        runs_axis.barh(positions, values, left=bottom, color=color, label=outcome.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    runs_axis.set_yticks(positions, names)
    runs_axis.invert_yaxis()
    runs_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    runs_axis.set_xlabel("runs")
    _legend_below(runs_axis, columns=len(COLORS))

    width = 0.4
    p50 = [job.p50_seconds or 0 for job in metrics.jobs]
    p95 = [job.p95_seconds or 0 for job in metrics.jobs]
    time_axis.barh([p - width / 2 for p in positions], p50, height=width, color="#90caf9", label="p50")
    time_axis.barh([p + width / 2 for p in positions], p95, height=width, color="#1565c0", label="p95")
    time_axis.set_yticks(positions, names)
    time_axis.invert_yaxis()
    time_axis.set_xlabel("seconds")
    _legend_below(time_axis, columns=2)
    return figure


def _legend_below(axis: Axes, columns: int) -> None:
    """The legend under the axis label: outside the plotting area, so no bar is hidden behind it
    (constrained layout makes room for it)."""
    axis.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=columns, fontsize="small", frameon=False
    )
