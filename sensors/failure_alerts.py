"""Ops alerts: a run that failed after its last attempt is posted to Slack, and emailed to ops if configured.

Step retries happen inside the run, so a run fails only once its steps are out of attempts. Every failed
run of the deployment is seen, those started with ``offload job execute`` / ``dagster job execute`` too.
Dagster's run retries (``run_retries`` in the instance config, tag ``dagster/max_retries``) may still
launch the run again: Dagster then marks the failed run ``dagster/will_retry=true`` as it records the
failure, and this sensor stays silent for it; the last run of the chain alerts. Dagster writes that tag
just after the failure itself: a failed run that may still be retried and has no decision yet is waited
for (at most ``RETRY_DECISION_GRACE`` after it ended, the client's window for the same gap), so a first
attempt whose retry then succeeds is never alerted. Each alert names the job,
summarises the error and links to the run in the UI (``OFFLOAD_UI_URL``). ``OFFLOAD_ALERT_EMAIL``, when
set, also gets the alert by email (one per run: the run id is the idempotency key).
"""

from __future__ import annotations

import os
import time
from html import escape

import dagster as dg

from offload.client.runs import RETRY_DECISION_GRACE
from offload.errors import CONFIGURATION_ERROR_TAG
from offload.log import redact
from offload.run_summary import run_failure_line, run_url, step_error_line
from offload.runtime import waits
from resources.email import Email, EmailSender
from resources.slack import SlackNotifier

WILL_RETRY_TAG = "dagster/will_retry"
MAX_RETRIES_TAG = "dagster/max_retries"
MAX_SUMMARY_CHARS = 1500
DECISION_POLL_SECONDS = 0.25


def will_be_retried(run: dg.DagsterRun) -> bool:
    """True when Dagster's run retries will launch this failed run again. Dagster tags a failed run
    ``will_retry`` by its failure alone, but its retry daemon can only launch a run that came from a code
    location: one started by ``dagster job execute`` / ``offload job execute`` has none, is never launched
    again, and is alerted at once."""
    tagged = run.tags.get(WILL_RETRY_TAG, "").strip().lower() == "true"
    return tagged and run.remote_job_origin is not None


def _relaunchable(run: dg.DagsterRun) -> bool:
    return run.remote_job_origin is not None and run.tags.get(MAX_RETRIES_TAG, "").strip() != "0"


def retry_decided(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun:
    """The failed ``run`` once Dagster has written whether it retries it (``will_retry``).

    Dagster records a failure, then tags it; a run read in between looks final though its retry may be on
    the way. With run retries on, a run they could launch again (one from a code location) is read again
    until the tag is there or ``RETRY_DECISION_GRACE`` has passed since the run ended (the process that was
    to write it died: nothing will retry the run, so it is alerted).
    """
    if not instance.run_retries_enabled:
        return run
    record = instance.get_run_record_by_id(run.run_id)
    ended = record.end_time if record is not None and record.end_time is not None else time.time()
    deadline = ended + RETRY_DECISION_GRACE
    while WILL_RETRY_TAG not in run.tags and _relaunchable(run) and time.time() < deadline:
        time.sleep(DECISION_POLL_SECONDS)
        run = instance.get_run_by_id(run.run_id) or run
    return run


def error_summary(context: dg.RunFailureSensorContext) -> str:
    """One line per failed step (``step: error``), or the run's failure message; secrets redacted."""
    reason = context.dagster_run.tags.get(CONFIGURATION_ERROR_TAG)
    lines = [reason] if reason else []  # a setting stopped the run before any step (offload.errors)
    lines = lines or [f"{e.step_key}: {step_error_line(e)}" for e in context.get_step_failure_events()]
    if not lines:
        lines = [run_failure_line(context.failure_event)]
    text = redact("\n".join(lines))
    return text if len(text) <= MAX_SUMMARY_CHARS else f"{text[: MAX_SUMMARY_CHARS - 3]}..."


def alert(context: dg.RunFailureSensorContext, slack: SlackNotifier, email: EmailSender) -> bool:
    """Send the alert for ``context``'s run unless run retries will take it again; True if sent."""
    run = context.instance.get_run_by_id(context.dagster_run.run_id) or context.dagster_run
    if waits.is_suspended(run):  # ended at a durable wait: it resumes, it did not fail
        context.log.info(f"run {run.run_id} of {run.job_name} is waiting: no alert")
        return False
    run = retry_decided(context.instance, run)
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
    # Also runs started from the command line: they belong to no code location, and a sensor that watches
    # only its own would never see them.
    monitor_all_code_locations=True,
)
def ops_failure_alert(context: dg.RunFailureSensorContext, slack: SlackNotifier, email: EmailSender) -> None:
    alert(context, slack, email)
