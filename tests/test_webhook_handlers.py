"""The webhook handler jobs run in process on real events (the bodies the gateway stores) with the offline
resources: Stripe payments recorded and payers emailed (once per outcome, however often Stripe sends),
Clerk users stored and welcomed once, GitHub pushes and pull requests recorded and posted to Slack once
even when the run is repeated; unhandled types ignored (tagged, not failed); unreadable payloads fail for
good."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from benchmarks.support.webhooks import clerk_event, github_pull_request, github_push, stripe_event
from offload.webhooks.event import IGNORED, OUTCOME_TAG, WebhookEvent
from offload.webhooks.launch import run_config
from pipelines.webhooks import clerk_webhook, github_webhook, stripe_webhook
from pipelines.webhooks.stripe_events import money
from resources.database import AppDatabase
from resources.email import OutboxEmail
from resources.slack import OutboxSlack
from tests.support.runs import failure_text


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, Any]:
    database = AppDatabase(url=f"sqlite:///{tmp_path / 'app.db'}")
    database.migrate()
    return {
        "database": database,
        "email": OutboxEmail(directory=str(tmp_path / "outbox")),
        "slack": OutboxSlack(directory=str(tmp_path / "slack")),
    }


def event(
    provider: str, event_type: str, payload: dict[str, Any], event_id: str | None = None
) -> WebhookEvent:
    return WebhookEvent(
        provider=provider, event_id=event_id or f"id_{uuid.uuid4().hex}", event_type=event_type,
        received_at=dt.datetime.now(dt.UTC).isoformat(), body=json.dumps(payload),
    )  # fmt: skip


@pytest.fixture(scope="module")
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def run(instance: dg.DagsterInstance, resources: dict[str, Any]) -> Callable[..., Any]:
    """Execute a handler job on an event in process; returns the result and the run's tags."""

    def execute(job: dg.JobDefinition, webhook: WebhookEvent) -> tuple[dg.ExecuteInProcessResult, dict]:
        result = job.execute_in_process(
            run_config=run_config(webhook), resources=resources, instance=instance, raise_on_error=False
        )
        tags = dict(instance.get_run_by_id(result.run_id).tags)  # type: ignore[union-attr]
        return result, tags

    return execute


def emails(resources: dict[str, Any]) -> list[str]:
    outbox = Path(resources["email"].directory)
    return sorted(p.read_text() for p in outbox.glob("*.eml")) if outbox.exists() else []


def slack_posts(resources: dict[str, Any]) -> list[dict[str, Any]]:
    outbox = Path(resources["slack"].directory)
    return [json.loads(p.read_text()) for p in sorted(outbox.glob("*.json"))] if outbox.exists() else []


def test_payment_succeeded_is_recorded_and_a_receipt_sent_once(run, resources: dict[str, Any]) -> None:
    payload = stripe_event(amount=4999, receipt_email="payer@example.com", user_id="user_9")
    webhook = event("stripe", "payment_intent.succeeded", payload, payload["id"])
    for _ in range(2):  # a redelivery (or a re-execution) records the same row and sends no second email
        result, _ = run(stripe_webhook, webhook)
        assert result.success
    payment = resources["database"].get_payment(payload["data"]["object"]["id"])
    assert payment is not None
    assert (payment.status, payment.amount, payment.currency, payment.user_id) == (
        "succeeded",
        4999,
        "USD",
        "user_9",
    )
    assert payment.data["event_id"] == payload["id"]
    [message] = emails(resources)
    assert "To: payer@example.com" in message and "Subject: Receipt: 49.99 USD received" in message
    assert result.output_for_node("handle_stripe")["outcome"] == "handled"


def test_payment_failed_is_recorded_and_the_payer_told(run, resources: dict[str, Any]) -> None:
    resources["database"].ensure_user("user_3", "known@example.com")
    payload = stripe_event(
        kind="payment_intent.payment_failed", amount=1200, receipt_email=None, user_id="user_3"
    )
    result, _ = run(stripe_webhook, event("stripe", "payment_intent.payment_failed", payload))
    assert result.success
    payment = resources["database"].get_payment(payload["data"]["object"]["id"])
    assert payment is not None and payment.status == "failed" and payment.amount == 1200
    [message] = emails(resources)
    assert "To: known@example.com" in message  # no receipt_email: the stored user's address
    assert "Subject: Payment of 12.00 USD failed" in message and "Your card was declined." in message


def test_payment_without_any_address_is_recorded_without_email(run, resources: dict[str, Any]) -> None:
    payload = stripe_event(receipt_email=None, user_id=None)
    result, _ = run(stripe_webhook, event("stripe", "payment_intent.succeeded", payload))
    assert result.success and emails(resources) == []
    assert resources["database"].get_payment(payload["data"]["object"]["id"]) is not None


def test_money_in_minor_and_zero_decimal_currencies() -> None:
    assert money(1234, "usd") == "12.34 USD"
    assert money(1234, "jpy") == "1234 JPY"


def test_clerk_user_created_stores_the_user_and_welcomes_once(run, resources: dict[str, Any]) -> None:
    payload = clerk_event(user_id="user_2xyz", email="ada@example.com")
    for _ in range(2):
        result, _ = run(clerk_webhook, event("clerk", "user.created", payload))
        assert result.success
    assert resources["database"].user_email("user_2xyz") == "ada@example.com"
    [message] = emails(resources)
    assert "Subject: Welcome!" in message and "Hi Ada," in message


def test_clerk_user_id_that_breaks_the_id_rule_fails_for_good(run, resources: dict[str, Any]) -> None:
    result, _ = run(clerk_webhook, event("clerk", "user.created", clerk_event(user_id="../etc")))
    assert not result.success
    assert "data.id = '../etc': must be 1-64 characters" in failure_text(result)
    assert emails(resources) == []


def test_github_push_is_recorded_and_posted_to_slack_once(run, resources: dict[str, Any]) -> None:
    webhook = event("github", "push", github_push(commits=3))
    for _ in range(2):
        result, _ = run(github_webhook, webhook)
        assert result.success
    stored = resources["database"].github_event(webhook.event_id)
    assert stored is not None and stored.repository == "octo/app" and stored.notified_at is not None
    assert stored.summary == "ada pushed 3 commits to main in octo/app: Fix the <login> page & tests"
    [post] = slack_posts(resources)
    assert post["text"].startswith(
        "ada pushed 3 commits to main in octo/app: Fix the &lt;login&gt; page &amp;"
    )
    assert "<https://github.com/octo/app/compare/000...aaa|Compare on GitHub>" in post["text"]
    assert post["ts"] == stored.slack_ts


def test_github_merged_pull_request(run, resources: dict[str, Any]) -> None:
    webhook = event("github", "pull_request", github_pull_request(action="closed", number=12, merged=True))
    result, _ = run(github_webhook, webhook)
    assert result.success
    [post] = slack_posts(resources)
    assert post["text"].startswith("grace merged pull request #12 in octo/app: Add webhooks")


@pytest.mark.parametrize(
    ("job", "provider", "event_type"),
    [(stripe_webhook, "stripe", "charge.refunded"), (clerk_webhook, "clerk", "session.created"),
     (github_webhook, "github", "ping")],
)  # fmt: skip
def test_unhandled_event_types_are_ignored_not_failed(run, resources, job, provider, event_type) -> None:
    result, tags = run(job, event(provider, event_type, {"zen": "Keep it logically awesome."}))
    assert result.success
    assert tags[OUTCOME_TAG] == IGNORED
    assert emails(resources) == [] and slack_posts(resources) == []


def test_a_payload_missing_what_the_handler_needs_fails_for_good(run, resources: dict[str, Any]) -> None:
    result, _ = run(github_webhook, event("github", "push", {"ref": "refs/heads/main"}))
    assert not result.success
    assert "payload repository.full_name: missing or not a str" in failure_text(result)
