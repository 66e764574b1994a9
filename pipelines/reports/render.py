"""The daily report as one self-contained HTML page (the chart inlined), for storage and for email."""

from __future__ import annotations

import base64
import datetime as dt

from offload.templates import HtmlTemplate
from pipelines.reports.metrics import RunMetrics
from resources.database import Activity

TEMPLATE = HtmlTemplate(
    """<!doctype html>
<html><head><meta charset="utf-8"><title>offload daily report {{ day }}</title>
<style>
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; color: #222; max-width: 960px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.flag { color: #c62828; font-weight: bold; }
</style></head>
<body>
<h1>offload daily report: {{ day }}</h1>
<p>{{ start }} to {{ end }} ({{ timezone }})</p>

<h2>Runs</h2>
<p>{{ metrics.runs }} runs, {{ metrics.finished }} finished, {{ metrics.succeeded }} succeeded,
{{ metrics.failed }} failed: failure rate
<span class="{{ 'flag' if over_threshold else '' }}">{{ '%.1f' % (metrics.failure_rate * 100) }}%</span>
(threshold {{ '%.1f' % (threshold * 100) }}%{{ ', exceeded' if over_threshold else '' }}).</p>
<img alt="Runs per job and durations" src="data:image/png;base64,{{ chart }}" style="max-width: 100%">
<table>
<tr><th>job</th><th>runs</th><th>succeeded</th><th>failed</th><th>canceled</th><th>in progress</th>
<th>success rate</th><th>p50 (s)</th><th>p95 (s)</th></tr>
{% for job in metrics.jobs %}
<tr><td>{{ job.job_name }}</td><td>{{ job.runs }}</td><td>{{ job.succeeded }}</td><td>{{ job.failed }}</td>
<td>{{ job.canceled }}</td><td>{{ job.in_progress }}</td>
<td>{{ '-' if job.success_rate is none else '%.1f%%' % (job.success_rate * 100) }}</td>
<td>{{ '-' if job.p50_seconds is none else '%.2f' % job.p50_seconds }}</td>
<td>{{ '-' if job.p95_seconds is none else '%.2f' % job.p95_seconds }}</td></tr>
{% else %}
<tr><td colspan="9">no runs</td></tr>
{% endfor %}
</table>

{% if metrics.failures %}
<h2>Failures</h2>
<ul>
{% for failure in metrics.failures %}
<li><a href="{{ failure.url }}">{{ failure.job_name }} {{ failure.run_id[:8] }}</a>: {{ failure.error }}</li>
{% endfor %}
</ul>
{% endif %}

<h2>App</h2>
<table>
<tr><td>new users</td><td>{{ activity.new_users }}</td></tr>
<tr><td>active users (with usage)</td><td>{{ activity.active_users }}</td></tr>
<tr><td>payments</td><td>{{ activity.payments }}</td></tr>
{% for status, count in activity.payments_by_status.items() %}
<tr><td>&nbsp;&nbsp;{{ status }}</td><td>{{ count }}</td></tr>
{% endfor %}
{% for currency, amount in activity.revenue.items() %}
<tr><td>revenue ({{ currency | upper }})</td><td>{{ '%.2f' % (amount / 100) }}</td></tr>
{% endfor %}
</table>
<h3>Usage</h3>
<table>
<tr><th>kind</th><th>quantity</th><th>unit</th></tr>
{% for kind, (quantity, unit) in activity.usage.items() %}
<tr><td>{{ kind }}</td><td>{{ quantity }}</td><td>{{ unit }}</td></tr>
{% else %}
<tr><td colspan="3">no usage</td></tr>
{% endfor %}
</table>
</body></html>
"""
)


def report_html(
    day: str,
    timezone: str,
    start: dt.datetime,
    end: dt.datetime,
    metrics: RunMetrics,
    activity: Activity,
    chart: bytes,
    threshold: float,
) -> str:
    return TEMPLATE.render(
        day=day,
        timezone=timezone,
        start=start.isoformat(),
        end=end.isoformat(),
        metrics=metrics,
        activity=activity,
        chart=base64.b64encode(chart).decode(),
        threshold=threshold,
        over_threshold=metrics.failure_rate > threshold,
    )
