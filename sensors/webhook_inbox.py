"""``webhook_inbox``: the safety net under the gateway's own launches.

Every tick it (1) records the runs it asked for on earlier ticks, (2) copies finished runs' outcomes onto
their inbox rows (``succeeded``, ``failed``, ``canceled``, ``ignored``): the outcome of the event's run
family, i.e. of the latest retry when Dagster's run retries launched the run again (a failed first
attempt whose retry succeeded makes the row ``succeeded``; a failure still to be retried leaves it
``launched``), and (3) launches every event still waiting for a run: unclaimed for longer than the grace
period (``OFFLOAD_WEBHOOK_SENSOR_GRACE``, 10 s: the gateway normally launches within a second), or claimed
by a launcher that has not finished within the claim timeout (``OFFLOAD_WEBHOOK_CLAIM_TIMEOUT``, 120 s: it
died). It claims each row as the gateway does, looks for a run tagged with the event first, and asks for
a run with ``run_key = <provider>:<id>``, so it never makes a second run (see
``offload/webhooks/launch.py`` for the whole argument).
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator

import dagster as dg

from offload.client.runs import RETRY_DECISION_GRACE, WILL_RETRY_TAG
from offload.webhooks.event import IGNORED, OUTCOME_TAG, event_key, run_tags
from offload.webhooks.inbox import (
    CANCELED,
    FAILED,
    LAUNCHED,
    SUCCEEDED,
    Inbox,
    InboxResource,
    InboxRow,
    now,
)
from offload.webhooks.launch import DEFAULT_CLAIM_TIMEOUT, existing_run, run_config
from offload.webhooks.providers import PROVIDERS
from pipelines.webhooks import clerk_webhook, github_webhook, stripe_webhook

INTERVAL_SECONDS = int(os.environ.get("OFFLOAD_WEBHOOK_SENSOR_INTERVAL", "15"))
BATCH = 200  # rows launched per tick at most: a tick stays well inside Dagster's 60 s evaluation limit
TOKEN_PREFIX = "sensor-"

_OUTCOMES = {
    dg.DagsterRunStatus.SUCCESS: SUCCEEDED,
    dg.DagsterRunStatus.FAILURE: FAILED,
    dg.DagsterRunStatus.CANCELED: CANCELED,
}


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else default


def record_requested_runs(instance: dg.DagsterInstance, inbox: Inbox) -> int:
    """Rows this sensor claimed on earlier ticks: note the run Dagster has since made for each."""
    recorded = 0
    for row in inbox.claimed_without_run(TOKEN_PREFIX, limit=BATCH):
        run_id = existing_run(instance, row.provider, row.event_id)
        if run_id is not None and inbox.record_run(row.id, run_id):
            recorded += 1
    return recorded


ROOT_RUN_TAG = "dagster/root_run_id"  # on every retry and re-execution: the family's first run


def _family_outcome(instance: dg.DagsterInstance, record: dg.RunRecord) -> str | None:
    """The outcome of the run family started by ``record``'s run: its latest run's, once that is final
    and no retry of it is coming; None while the family is still going."""
    retries = instance.get_run_records(dg.RunsFilter(tags={ROOT_RUN_TAG: record.dagster_run.run_id}), limit=1)
    latest = retries[0] if retries else record
    run = latest.dagster_run
    if run.status not in _OUTCOMES:
        return None
    if run.status == dg.DagsterRunStatus.FAILURE:
        will_retry = run.tags.get(WILL_RETRY_TAG)
        if will_retry == "true":
            return None
        # Dagster writes the failure first and its retry decision a moment later: wait for the decision.
        ended = latest.end_time or time.time()
        if will_retry is None and instance.run_retries_enabled and time.time() - ended < RETRY_DECISION_GRACE:
            return None
    outcome = _OUTCOMES[run.status]
    if outcome == SUCCEEDED and run.tags.get(OUTCOME_TAG) == IGNORED:
        outcome = IGNORED
    return outcome


def record_outcomes(instance: dg.DagsterInstance, inbox: Inbox) -> int:
    """Copy the outcome of every finished run family onto its row."""
    rows = {row.run_id: row for row in inbox.in_status(LAUNCHED, limit=1000) if row.run_id}
    if not rows:
        return 0
    finished = 0
    for record in instance.get_run_records(dg.RunsFilter(run_ids=list(rows), statuses=list(_OUTCOMES))):
        outcome = _family_outcome(instance, record)
        if outcome is not None:
            inbox.finish(rows[record.dagster_run.run_id].id, outcome)
            finished += 1
    return finished


def requests_for_waiting(instance: dg.DagsterInstance, inbox: Inbox) -> Iterator[dg.RunRequest]:
    """A run request for each waiting row this tick claims and finds no run for."""
    claim_timeout = _seconds("OFFLOAD_WEBHOOK_CLAIM_TIMEOUT", DEFAULT_CLAIM_TIMEOUT)
    current = now()
    stale_before = current - dt.timedelta(seconds=claim_timeout)
    received_before = current - dt.timedelta(seconds=_seconds("OFFLOAD_WEBHOOK_SENSOR_GRACE", 10.0))
    token = f"{TOKEN_PREFIX}{uuid.uuid4().hex[:20]}"
    for row in inbox.unlaunched(received_before, stale_before, limit=BATCH):
        if not inbox.claim(row.id, token, stale_before):
            continue  # the gateway (or another tick) has it
        run_id = existing_run(instance, row.provider, row.event_id)
        if run_id is not None:
            inbox.record_run(row.id, run_id)
            continue
        yield _request(row)


def _request(row: InboxRow) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=event_key(row.provider, row.event_id),
        job_name=PROVIDERS[row.provider].job_name,
        run_config=run_config(row.event()),
        tags={**run_tags(row.provider, row.event_id), "offload/launched_by": "webhook_inbox"},
    )


@dg.sensor(
    name="webhook_inbox",
    description="Launches webhook events the gateway did not (one run per event) and records run outcomes.",
    minimum_interval_seconds=INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    jobs=[stripe_webhook, github_webhook, clerk_webhook],
)
def webhook_inbox(
    context: dg.SensorEvaluationContext, webhook_inbox: InboxResource
) -> Iterator[dg.RunRequest | dg.SkipReason]:
    inbox = webhook_inbox.inbox()
    recorded = record_requested_runs(context.instance, inbox)
    finished = record_outcomes(context.instance, inbox)
    requested = 0
    for request in requests_for_waiting(context.instance, inbox):
        requested += 1
        yield request
    context.log.info(f"webhook inbox: {requested} runs requested, {recorded} recorded, {finished} finished")
    if requested == 0:
        yield dg.SkipReason(f"no event waiting ({recorded} runs recorded, {finished} outcomes copied)")
