"""Reading runs for people: a run's link in the UI and the one line that says why it failed.

Shared by the ops alert (``sensors/failure_alerts.py``) and the daily report, so both name a failure the
same way and link to the same page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import dagster as dg

DEFAULT_UI_URL = "http://127.0.0.1:3000"

_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "RetryRequested")


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str:
    """The run's page in the Dagster UI (``OFFLOAD_UI_URL``, default the local UI)."""
    env = os.environ if environ is None else environ
    base = (env.get("OFFLOAD_UI_URL") or DEFAULT_UI_URL).rstrip("/")
    return f"{base}/runs/{run_id}"


def step_error_line(event: dg.DagsterEvent) -> str:
    """A failed step's own error: a ``Failure``'s description, else the innermost cause past Dagster's
    wrappers ("Error occurred while executing op ...", "Exceeded max_retries of 2"), first line only."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    if error is None:
        return "unknown error"
    while error.cause is not None and (
        error.cls_name in _WRAPPERS or error.message.startswith("Exceeded max_retries")
    ):
        error = error.cause
    lines = error.message.strip().splitlines()
    return lines[0] if lines else error.cls_name or "unknown error"


def run_error_lines(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """One ``step: error`` line per failed step of the run, or the run's own failure message."""
    steps = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    lines = [
        f"{record.event_log_entry.step_key}: {step_error_line(record.event_log_entry.get_dagster_event())}"
        for record in steps
        if record.event_log_entry.dagster_event is not None
    ]
    if lines:
        return lines
    failures = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
    return [record.event_log_entry.message or "run failed" for record in failures[-1:]] or ["run failed"]
