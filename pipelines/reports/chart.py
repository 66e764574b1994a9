"""The daily report's chart: runs per job by outcome, and p50/p95 durations, as a PNG.

Drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, no global state), so it is
safe in any run worker and in threads.
"""

from __future__ import annotations

import io

from pipelines.reports.metrics import RunMetrics

COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "canceled": "#9e9e9e", "in_progress": "#1565c0"}


def chart_png(metrics: RunMetrics, title: str) -> bytes:
    # Imported here: matplotlib costs about a second to import, paid by the report run, not by every
    # process that loads the code location.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    runs_axis, time_axis = figure.subplots(1, 2)
    names = [job.job_name for job in metrics.jobs] or ["(no runs)"]
    positions = list(range(len(names)))
    bottom = [0] * len(names)
    for outcome, color in COLORS.items():
        values = [getattr(job, outcome) for job in metrics.jobs] or [0]
        runs_axis.barh(positions, values, left=bottom, color=color, label=outcome.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    runs_axis.set_yticks(positions, names)
    runs_axis.invert_yaxis()
    runs_axis.set_xlabel("runs")
    runs_axis.set_title("Runs per job")
    runs_axis.legend(loc="best", fontsize="small")

    width = 0.4
    p50 = [job.p50_seconds or 0 for job in metrics.jobs] or [0]
    p95 = [job.p95_seconds or 0 for job in metrics.jobs] or [0]
    time_axis.barh([p - width / 2 for p in positions], p50, height=width, color="#90caf9", label="p50")
    time_axis.barh([p + width / 2 for p in positions], p95, height=width, color="#1565c0", label="p95")
    time_axis.set_yticks(positions, names)
    time_axis.invert_yaxis()
    time_axis.set_xlabel("seconds")
    time_axis.set_title("Run duration")
    time_axis.legend(loc="best", fontsize="small")
    figure.suptitle(title)

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
