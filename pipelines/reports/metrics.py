"""The numbers of the daily report, from the job system's own run history.

A run belongs to the day it was created (submitted) in the report's time zone. Rates count finished runs
only (succeeded, failed, canceled); durations are start to end of finished runs, as the run storage records
them. Percentiles interpolate linearly between the closest ranks (numpy's default), so the p95 of a handful
of runs is an honest value between the two slowest, not the slowest.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field

import dagster as dg

from offload.run_summary import run_error_lines, run_url

FINISHED = {
    dg.DagsterRunStatus.SUCCESS: "succeeded",
    dg.DagsterRunStatus.FAILURE: "failed",
    dg.DagsterRunStatus.CANCELED: "canceled",
}


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    job_name: str
    status: str  # succeeded, failed, canceled or in_progress
    created_at: dt.datetime
    seconds: float | None  # start to end, for finished runs that started


@dataclass(frozen=True)
class JobStats:
    job_name: str
    runs: int
    succeeded: int
    failed: int
    canceled: int
    in_progress: int
    success_rate: float | None  # of finished runs; None when none finished
    p50_seconds: float | None
    p95_seconds: float | None


@dataclass(frozen=True)
class Failure:
    run_id: str
    job_name: str
    url: str
    error: str


@dataclass(frozen=True)
class RunMetrics:
    runs: int
    finished: int
    succeeded: int
    failed: int
    failure_rate: float  # failed / finished; 0 when none finished
    jobs: list[JobStats]
    failures: list[Failure] = field(default_factory=list)


def run_summaries(
    instance: dg.DagsterInstance, start: dt.datetime, end: dt.datetime, exclude: str | None = None
) -> list[RunSummary]:
    """The runs created in ``[start, end)``, oldest first, except the run ``exclude`` (the report's own)."""
    # The run storage compares naive UTC (it drops the zone without converting), and its filter is
    # exclusive: one microsecond before the start keeps a run created at exactly midnight.
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            created_after=start.astimezone(dt.UTC) - dt.timedelta(microseconds=1),
            created_before=end.astimezone(dt.UTC),
        ),
        ascending=True,
    )
    summaries = []
    for record in records:
        run = record.dagster_run
        if run.run_id == exclude:
            continue
        status = FINISHED.get(run.status, "in_progress")
        seconds = None
        if status != "in_progress" and record.start_time is not None and record.end_time is not None:
            seconds = max(record.end_time - record.start_time, 0.0)
        summaries.append(RunSummary(run.run_id, run.job_name, status, record.create_timestamp, seconds))
    return summaries


def _percentile(values: list[float], q: float) -> float | None:
    import numpy as np  # here: half a second to import, for the report run only

    return round(float(np.percentile(values, q)), 3) if values else None


def run_metrics(runs: list[RunSummary]) -> RunMetrics:
    """Per-job counts, success rates and p50/p95 durations, and the day's totals."""
    by_job: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_job[run.job_name].append(run)
    jobs = []
    for job_name in sorted(by_job):
        group = by_job[job_name]
        count = {
            status: sum(r.status == status for r in group) for status in (*FINISHED.values(), "in_progress")
        }
        finished = count["succeeded"] + count["failed"] + count["canceled"]
        durations = [r.seconds for r in group if r.seconds is not None]
        jobs.append(
            JobStats(
                job_name=job_name,
                runs=len(group),
                succeeded=count["succeeded"],
                failed=count["failed"],
                canceled=count["canceled"],
                in_progress=count["in_progress"],
                success_rate=round(count["succeeded"] / finished, 4) if finished else None,
                p50_seconds=_percentile(durations, 50),
                p95_seconds=_percentile(durations, 95),
            )
        )
    finished = sum(j.succeeded + j.failed + j.canceled for j in jobs)
    failed = sum(j.failed for j in jobs)
    return RunMetrics(
        runs=len(runs),
        finished=finished,
        succeeded=sum(j.succeeded for j in jobs),
        failed=failed,
        failure_rate=round(failed / finished, 4) if finished else 0.0,
        jobs=jobs,
    )


def with_failures(metrics: RunMetrics, runs: list[RunSummary], instance: dg.DagsterInstance) -> RunMetrics:
    """``metrics`` with each failed run's link (``OFFLOAD_UI_URL``) and error, read from its event log."""
    failures = [
        Failure(
            run.run_id, run.job_name, run_url(run.run_id), "; ".join(run_error_lines(instance, run.run_id))
        )
        for run in runs
        if run.status == "failed"
    ]
    return RunMetrics(**{**metrics.__dict__, "failures": failures})
