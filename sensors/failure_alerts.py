"""Ops alerts: a run that failed after its last attempt is posted to Slack, and emailed to ops if configured.

Step retries happen inside the run, so a run fails only once its steps are out of attempts. Dagster's run
retries (``run_retries`` in the instance config, tag ``dagster/max_retries``) may still launch the run
again: Dagster then marks the failed run ``dagster/will_retry=true`` as it records the failure, and this
sensor stays silent for it; the last run of the chain alerts. Each alert names the job, summarises the
error and links to the run in the UI (``OFFLOAD_UI_URL``). ``OFFLOAD_ALERT_EMAIL``, when set, also gets
the alert by email (one per run: the run id is the idempotency key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from html import escape

import dagster as dg

from offload.log import redact
from resources.email import Email, EmailSender
from resources.slack import SlackNotifier

WILL_RETRY_TAG = "dagster/will_retry"
DEFAULT_UI_URL = "http://127.0.0.1:3000"
MAX_SUMMARY_CHARS = 1500


def run_url(run_id: str, environ: Mapping[str, str] | None = None) -> str:
    """The run's page in the Dagster UI."""
    env = os.environ if environ is None else environ
    base = (env.get("OFFLOAD_UI_URL") or DEFAULT_UI_URL).rstrip("/")
    return f"{base}/runs/{run_id}"


def will_be_retried(run: dg.DagsterRun) -> bool:
    """True when Dagster's run retries will launch this failed run again."""
    return run.tags.get(WILL_RETRY_TAG, "").strip().lower() == "true"


_WRAPPERS = ("DagsterExecutionStepExecutionError", "DagsterUserCodeExecutionError", "RetryRequested")


def _error_line(event: dg.DagsterEvent) -> str:
    """The step's own error: a ``Failure``'s description, else the innermost cause past Dagster's wrappers
    ("Error occurred while executing op ...", "Exceeded max_retries of 2"), first line only."""
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


def error_summary(context: dg.RunFailureSensorContext) -> str:
    """One line per failed step (``step: error``), or the run's failure message; secrets redacted."""
    lines = [f"{event.step_key}: {_error_line(event)}" for event in context.get_step_failure_events()]
    if not lines:
        lines = [context.failure_event.message or "run failed"]
    text = redact("\n".join(lines))
    return text if len(text) <= MAX_SUMMARY_CHARS else f"{text[: MAX_SUMMARY_CHARS - 3]}..."


def alert(context: dg.RunFailureSensorContext, slack: SlackNotifier, email: EmailSender) -> bool:
    """Send the alert for ``context``'s run unless run retries will take it again; True if sent."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    if will_be_retried(run):
        context.log.info(f"run {run.run_id} of {run.job_name} failed and will be retried: no alert")
        return False
    link, summary = run_url(run.run_id), error_summary(context)
    text = f"Run of {run.job_name} failed: {summary}\n{link}"
    blocks: list[dict] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: *{run.job_name}* failed"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"```{summary}```"}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open run {run.run_id}>"}},
    ]
    errors: list[str] = []
    try:
        slack.post(None, text, blocks)
    except Exception as error:  # still try the email, then report both
        errors.append(f"slack: {error}")
    recipient = os.environ.get("OFFLOAD_ALERT_EMAIL", "").strip()
    if recipient:
        html = (
            f"<p>Run of <b>{escape(run.job_name)}</b> failed.</p><pre>{escape(summary)}</pre>"
            f'<p><a href="{escape(link)}">{escape(link)}</a></p>'
        )
        message = Email(to=recipient, subject=f"[offload] {run.job_name} failed", html=html, text=text)
        try:
            email.send(message, idempotency_key=f"run-failed/{run.run_id}")
        except Exception as error:
            errors.append(f"email: {error}")
    if errors:
        # Dagster shows the error on the sensor's tick and moves on: a run is never alerted twice.
        raise RuntimeError(f"alert for run {run.run_id} not delivered: {'; '.join(errors)}")
    return True


@dg.run_failure_sensor(
    name="ops_failure_alert",
    description="Alerts ops (Slack, and email when OFFLOAD_ALERT_EMAIL is set) when a run fails for good.",
    minimum_interval_seconds=10,
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def ops_failure_alert(context: dg.RunFailureSensorContext, slack: SlackNotifier, email: EmailSender) -> None:
    alert(context, slack, email)
