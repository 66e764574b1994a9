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
from html import escape

import dagster as dg

from offload.log import redact
from offload.run_summary import run_url, step_error_line
from offload.runtime import waits
from resources.email import Email, EmailSender
from resources.slack import SlackNotifier

WILL_RETRY_TAG = "dagster/will_retry"
MAX_SUMMARY_CHARS = 1500


def will_be_retried(run: dg.DagsterRun) -> bool:
    """True when Dagster's run retries will launch this failed run again."""
    return run.tags.get(WILL_RETRY_TAG, "").strip().lower() == "true"


def error_summary(context: dg.RunFailureSensorContext) -> str:
    """One line per failed step (``step: error``), or the run's failure message; secrets redacted."""
    lines = [f"{event.step_key}: {step_error_line(event)}" for event in context.get_step_failure_events()]
    if not lines:
        lines = [context.failure_event.message or "run failed"]
    text = redact("\n".join(lines))
    return text if len(text) <= MAX_SUMMARY_CHARS else f"{text[: MAX_SUMMARY_CHARS - 3]}..."


def alert(context: dg.RunFailureSensorContext, slack: SlackNotifier, email: EmailSender) -> bool:
    """Send the alert for ``context``'s run unless run retries will take it again; True if sent."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    if waits.is_suspended(run):  # ended at a durable wait: it resumes, it did not fail
        context.log.info(f"run {run.run_id} of {run.job_name} is waiting: no alert")
        return False
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
