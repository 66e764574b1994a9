"""GitHub: ``push`` and ``pull_request`` are recorded in ``github_events`` and posted to Slack.

The row is keyed by the delivery id and written first; the Slack post is made only while the row has no
``notified_at``, which is set right after the post. A retried step therefore posts once, unless it died
in the instant between the post and that update (Slack's API takes no idempotency key).
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.log import StepLog
from offload.webhooks.event import WebhookEvent
from pipelines.webhooks.outcome import Handled, field_of, ignore, payload
from resources.database import AppDatabase, GithubEvent
from resources.slack import SlackNotifier

HANDLED = ("push", "pull_request")


def slack_escape(text: str) -> str:
    """Slack's mrkdwn control characters, escaped as Slack asks."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _first_line(text: Any) -> str:
    return text.strip().splitlines()[0][:200] if isinstance(text, str) and text.strip() else ""


def describe(event: WebhookEvent, data: dict[str, Any]) -> GithubEvent:
    """The delivery as a row: who did what where, in one line."""
    repository = field_of(data, "repository.full_name")
    sender = field_of(data, "sender.login", required=False)
    if event.event_type == "push":
        ref = field_of(data, "ref")
        branch = ref.removeprefix("refs/heads/")
        listed = data.get("commits")
        commits: list[Any] = listed if isinstance(listed, list) else []
        who = field_of(data, "pusher.name", required=False) or sender or "someone"
        head = _first_line(field_of(data, "head_commit.message", required=False))
        noun = "commit" if len(commits) == 1 else "commits"
        summary = f"{who} pushed {len(commits)} {noun} to {branch} in {repository}"
        return GithubEvent(
            delivery_id=event.event_id, event="push", repository=repository, sender=sender,
            summary=f"{summary}: {head}" if head else summary,
            url=field_of(data, "compare", required=False), received_at=event.received(),
            data={"ref": ref, "after": data.get("after"), "commits": len(commits),
                  "forced": bool(data.get("forced"))},
        )  # fmt: skip
    action = field_of(data, "action")
    number = field_of(data, "number", int)
    title = _first_line(field_of(data, "pull_request.title"))
    merged = action == "closed" and data["pull_request"].get("merged") is True
    return GithubEvent(
        delivery_id=event.event_id, event="pull_request", action=action, repository=repository,
        sender=sender,
        summary=f"{sender or 'someone'} {'merged' if merged else action} pull request #{number} "
        f"in {repository}: {title}",
        url=field_of(data, "pull_request.html_url", required=False), received_at=event.received(),
        data={"number": number, "merged": merged, "state": data["pull_request"].get("state")},
    )  # fmt: skip


def handle(
    context: dg.OpExecutionContext, event: WebhookEvent, database: AppDatabase, slack: SlackNotifier
) -> Handled:
    if event.event_type not in HANDLED:
        return ignore(context, event)
    log = StepLog(context)
    stored = database.record_github_event(describe(event, payload(event)))
    log.info("github event recorded", {"delivery_id": stored.delivery_id, "summary": stored.summary})
    if stored.notified_at is not None:
        log.info("already posted to Slack", {"slack_ts": stored.slack_ts})
        return Handled("handled", {"delivery_id": stored.delivery_id, "slack_ts": stored.slack_ts or ""})
    text = slack_escape(stored.summary)
    if stored.url:
        text = f"{text}\n<{stored.url}|{'Compare' if stored.event == 'push' else 'Open'} on GitHub>"
    ts = slack.post(None, text)
    database.mark_github_notified(stored.delivery_id, ts)
    log.info("posted to Slack", {"delivery_id": stored.delivery_id, "slack_ts": ts})
    return Handled("handled", {"delivery_id": stored.delivery_id, "slack_ts": ts})
