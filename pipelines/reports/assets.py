"""``daily_report``: a daily-partitioned asset, one partition per day in the report's time zone.

Materializing a day reads that day's run history from the Dagster instance (runs per job, success rate,
p50/p95 durations, failures with links) and the app database (new users, payments, usage), draws the chart,
stores the report as HTML (chart inlined) and the chart as PNG under ``reports/daily/``, and emails the
report to ``OFFLOAD_REPORT_EMAILS``. The counts and the chart are the materialization's metadata; the
check ``failure_rate_below_threshold`` fails for a day whose failure rate exceeds
``OFFLOAD_REPORT_MAX_FAILURE_RATE``.
Any past day can be materialized again (a backfill): ``dagster asset materialize --partition 2026-03-07``.
"""

import base64
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

from offload.errors import ConfigurationError
from offload.keys import report_key
from offload.log import StepLog
from offload.payload import check_email
from offload.result import RESULT_LABEL
from offload.retry import retrying
from offload.runtime.concurrency import Queue
from pipelines.reports.chart import chart_png
from pipelines.reports.metrics import RunMetrics, run_metrics, run_summaries, with_failures
from pipelines.reports.render import report_html
from resources.database import Activity, AppDatabase
from resources.email import Email, EmailSender
from resources.storage import Storage

if TYPE_CHECKING:  # not exported by dagster; define_asset_job returns one
    from offload.runtime.dagster_internals import UnresolvedAssetJobDefinition

# One report run at a time: a backfill of many days queues instead of loading the machine.
QUEUE = Queue("reports", limit=1)


START_DATE = "2026-01-01"  # the first day that can be reported (and backfilled)
CHECK_NAME = "failure_rate_below_threshold"
DEFAULT_MAX_FAILURE_RATE = 0.1


def recipients(environ: dict[str, str] | None = None) -> list[str]:
    """``OFFLOAD_REPORT_EMAILS``: comma-separated addresses; none means the report is stored, not sent."""
    value = (os.environ if environ is None else environ).get("OFFLOAD_REPORT_EMAILS", "")
    addresses = [item.strip() for item in value.split(",") if item.strip()]
    for address in addresses:
        try:
            check_email(address)
        except ValueError as error:
            raise ConfigurationError(f"OFFLOAD_REPORT_EMAILS: {address!r} {error}") from None
    return addresses


def max_failure_rate(environ: dict[str, str] | None = None) -> float:
    """``OFFLOAD_REPORT_MAX_FAILURE_RATE``: the highest failure rate (0-1) a day passes the check with."""
    value = (os.environ if environ is None else environ).get("OFFLOAD_REPORT_MAX_FAILURE_RATE", "").strip()
    if not value:
        return DEFAULT_MAX_FAILURE_RATE
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if not 0 <= rate <= 1:
        raise ConfigurationError(
            f"OFFLOAD_REPORT_MAX_FAILURE_RATE: must be a number from 0 to 1, got {value!r}"
        )
    return rate


def _jobs_table(metrics: RunMetrics) -> str:
    def cell(value: Any, percent: bool = False) -> str:
        if value is None:
            return "-"
        return f"{value * 100:.1f}%" if percent else str(value)

    lines = [
        "| job | runs | succeeded | failed | success rate | p50 s | p95 s |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {j.job_name} | {j.runs} | {j.succeeded} | {j.failed} | {cell(j.success_rate, True)} "
        f"| {cell(j.p50_seconds)} | {cell(j.p95_seconds)} |"
        for j in metrics.jobs
    ]
    return "\n".join(lines)


def _failures_list(metrics: RunMetrics) -> str:
    return (
        "\n".join(f"- [{f.job_name} {f.run_id[:8]}]({f.url}): {f.error}" for f in metrics.failures) or "none"
    )


def _metadata(metrics: RunMetrics, activity: Activity, chart: bytes) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "runs": metrics.runs,
        "runs_succeeded": metrics.succeeded,
        "runs_failed": metrics.failed,
        "failure_rate": metrics.failure_rate,
        "new_users": activity.new_users,
        "active_users": activity.active_users,
        "payments": activity.payments,
        **{f"revenue_{currency}": amount for currency, amount in activity.revenue.items()},
        **{f"usage_{kind}": quantity for kind, (quantity, _unit) in activity.usage.items()},
        "jobs": dg.MetadataValue.md(_jobs_table(metrics)),
        "failures": dg.MetadataValue.md(_failures_list(metrics)),
        "chart": dg.MetadataValue.md(f"![chart](data:image/png;base64,{base64.b64encode(chart).decode()})"),
    }
    return metadata


def _store(storage: Storage, key: str, data: bytes, content_type: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "object"
        path.write_bytes(data)
        return storage.put_file(key, path, content_type).url


def build_daily_report(timezone: str) -> tuple[dg.AssetsDefinition, "UnresolvedAssetJobDefinition"]:
    """The asset and its job, with days in ``timezone`` (the schedule's, so "yesterday" is its yesterday)."""
    partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, timezone=timezone)

    @dg.asset(
        name="daily_report",
        partitions_def=partitions,
        group_name="reports",
        description="Runs, failures, payments, new users and usage of a day: HTML in storage and by email.",
        check_specs=[
            dg.AssetCheckSpec(
                CHECK_NAME,
                asset="daily_report",
                description="The day's failure rate (failed / finished runs) is at most "
                "OFFLOAD_REPORT_MAX_FAILURE_RATE (default 10%).",
            )
        ],
    )
    @retrying()  # storage and email errors: the report is rewritten and the emails keep their keys
    def daily_report(
        context: dg.AssetExecutionContext, database: AppDatabase, storage: Storage, email: EmailSender
    ) -> dg.MaterializeResult:
        log = StepLog(context)
        day = context.partition_key
        start, end = context.partition_time_window
        threshold, addresses = max_failure_rate(), recipients()

        runs = run_summaries(context.instance, start, end, exclude=context.run_id)
        metrics = with_failures(run_metrics(runs), runs, context.instance)
        activity = database.activity(start, end)
        chart = chart_png(metrics, f"offload {day} ({timezone})")
        html = report_html(day, timezone, start, end, metrics, activity, chart, threshold)
        report_url = _store(storage, report_key(day, "html"), html.encode(), "text/html; charset=utf-8")
        chart_url = _store(storage, report_key(day, "png"), chart, "image/png")
        log.info("report stored", {"day": day, "runs": metrics.runs, "failed": metrics.failed,
                                   "key": report_key(day, "html")})  # fmt: skip

        subject = f"offload daily report {day}: {metrics.runs} runs, {metrics.failure_rate:.1%} failed"
        text = f"{subject}\nnew users: {activity.new_users}, payments: {activity.payments}\n{report_url}"
        family = context.run.root_run_id or context.run_id
        for address in addresses:
            # One email per recipient and run family: a retried step does not send twice.
            email.send(Email(to=address, subject=subject, html=html, text=text),
                       idempotency_key=f"daily-report/{day}/{family}/{address}")  # fmt: skip
        log.info("report emailed" if addresses else "no OFFLOAD_REPORT_EMAILS: report not emailed",
                 {"recipients": len(addresses)})  # fmt: skip

        passed = metrics.failure_rate <= threshold
        return dg.MaterializeResult(
            metadata={
                **_metadata(metrics, activity, chart),
                "report_key": report_key(day, "html"),
                "report_url": dg.MetadataValue.url(report_url),
                "chart_url": dg.MetadataValue.url(chart_url),
                "emailed_to": len(addresses),
                # The job's result (offload.result): where the report is and what it counted.
                RESULT_LABEL: dg.MetadataValue.json({
                    "day": day, "report_key": report_key(day, "html"), "report_url": report_url,
                    "runs": metrics.runs, "failed": metrics.failed, "failure_rate": metrics.failure_rate,
                    "emailed_to": len(addresses),
                }),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=CHECK_NAME,
                    passed=passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=None if passed else (
                        f"{metrics.failed} of {metrics.finished} finished runs failed on {day} "
                        f"({metrics.failure_rate:.1%} > {threshold:.1%})"
                    ),
                    metadata={"failure_rate": metrics.failure_rate, "threshold": threshold,
                              "failed": metrics.failed, "finished": metrics.finished},
                )
            ],
        )  # fmt: skip

    job = dg.define_asset_job(
        "daily_report_job",
        selection=[daily_report],
        partitions_def=partitions,
        description="Materialize daily_report for one day (the daily_report schedule asks for yesterday).",
        tags={"offload/kind": "report", **QUEUE.job_tags()},
    )
    return daily_report, job
