"""The webhook inbox on SQLite and on a throwaway Postgres database: a batch stores each event once (also
twice in one batch), many threads claiming one row get it exactly once, stale claims are visible to the
sensor only after the claim timeout, a row keeps its first run, and the group-commit writer answers each of
many concurrent stores after the commit."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from offload.webhooks.inbox import Inbox, Incoming, now
from offload.webhooks.writer import InboxWriter


@pytest.fixture(params=["sqlite", "postgres"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Inbox]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'inbox.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = Inbox(url)
    opened.create_schema()
    with opened.engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM webhook_inbox")  # the Postgres database lives per session
    yield opened
    opened.dispose()


def incoming(event_id: str, provider: str = "stripe") -> Incoming:
    return Incoming(provider, event_id, "payment_intent.succeeded", json.dumps({"id": event_id}), now())


def test_a_batch_stores_each_event_once(inbox: Inbox) -> None:
    first = inbox.store([incoming("evt_1"), incoming("evt_2"), incoming("evt_1")])
    assert [(s.new, s.unlaunched) for s in first] == [(True, True), (True, True), (False, True)]
    assert first[0].id == first[2].id != first[1].id
    again = inbox.store([incoming("evt_2"), incoming("evt_3"), incoming("evt_2", provider="github")])
    assert [s.new for s in again] == [False, True, True]
    assert again[0].id == first[1].id
    assert inbox.counts() == {"received": 4}
    row = inbox.find("stripe", "evt_1")
    assert row is not None and json.loads(row.body) == {"id": "evt_1"} and row.received_at.tzinfo is not None


def test_many_claimers_one_winner_and_the_run_is_recorded_once(inbox: Inbox) -> None:
    [stored] = inbox.store([incoming("evt_race")])
    winners: list[str] = []
    barrier = threading.Barrier(12)

    def claimer(token: str) -> None:
        barrier.wait()
        if inbox.claim(stored.id, token):
            winners.append(token)

    threads = [threading.Thread(target=claimer, args=(f"t{i}",)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    assert inbox.still_claimed(stored.id, winners[0]) and not inbox.still_claimed(stored.id, "someone-else")
    assert inbox.record_run(stored.id, "run-1") and not inbox.record_run(stored.id, "run-2")
    row = inbox.get(stored.id)
    assert row is not None and (row.run_id, row.status, row.attempts) == ("run-1", "launched", 1)
    assert not inbox.claim(
        stored.id, "late", stale_before=now() + dt.timedelta(days=1)
    )  # launched: never again
    assert inbox.store([incoming("evt_race")])[0].unlaunched is False
    inbox.finish(stored.id, "ignored")
    assert inbox.counts() == {"ignored": 1}


def test_only_a_stale_claim_is_taken_over(inbox: Inbox) -> None:
    [stored] = inbox.store([incoming("evt_stale")])
    assert inbox.claim(stored.id, "gateway-1")
    assert not inbox.claim(stored.id, "gateway-2")  # a gateway never takes a held claim
    recent, later = now() - dt.timedelta(seconds=60), now() + dt.timedelta(seconds=1)
    assert not inbox.claim(stored.id, "sensor-1", stale_before=recent)
    waiting = inbox.unlaunched(received_before=later, stale_before=recent, limit=10)
    assert waiting == []  # claimed a moment ago: nobody else's
    assert [row.id for row in inbox.unlaunched(received_before=later, stale_before=later, limit=10)] == [
        stored.id
    ]
    assert inbox.claim(stored.id, "sensor-1", stale_before=later)
    assert not inbox.still_claimed(stored.id, "gateway-1")  # the first claimer now gives up
    assert [row.id for row in inbox.claimed_without_run("sensor-", limit=10)] == [stored.id]


def test_a_failed_launch_gives_the_claim_back_with_its_error(inbox: Inbox) -> None:
    [stored] = inbox.store([incoming("evt_fail")])
    assert inbox.claim(stored.id, "gateway-1")
    inbox.release(stored.id, "gateway-1", "LookupError: job 'stripe_webhook' is not in any code location")
    row = inbox.get(stored.id)
    assert (
        row is not None and row.claim_token is None and row.error is not None and "LookupError" in row.error
    )
    assert inbox.claim(stored.id, "sensor-1")


def test_group_commit_answers_each_concurrent_store(inbox: Inbox) -> None:
    writer = InboxWriter(inbox)

    async def deliver() -> list[bool]:
        ids = [f"evt_{uuid.uuid4().hex}" for _ in range(150)]
        events = [incoming(event_id) for event_id in ids * 2]  # each twice, in flight together
        results = await asyncio.gather(*(writer.store(event) for event in events))
        return [result.new for result in results]

    try:
        news = asyncio.run(deliver())
    finally:
        writer.close()
    assert sum(news) == 150 and len(news) == 300
    assert inbox.counts() == {"received": 150}


def test_a_row_follows_its_run_family_to_the_latest_retry(tmp_path: Path) -> None:
    """Dagster's run retries: a first attempt that failed and will be retried leaves its row ``launched``;
    the row then takes the outcome of the latest retry (succeeded), not of the failed first attempt."""
    import dagster as dg

    from sensors.webhook_inbox import record_outcomes

    inbox = Inbox(f"sqlite:///{tmp_path / 'inbox.db'}")
    inbox.create_schema()
    failure, started, success = (
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.SUCCESS,
    )
    families = {  # event: (first attempt's status and will_retry, its retry's status or None)
        "evt_retried_ok": ((failure, "true"), success),
        "evt_retrying": ((failure, "true"), started),
        "evt_final": ((failure, "false"), None),
    }
    with dg.DagsterInstance.ephemeral() as instance:
        for event_id, ((status, will_retry), retry) in families.items():
            [stored] = inbox.store([incoming(event_id)])
            first = f"run-{event_id}"
            instance.add_run(dg.DagsterRun(job_name="stripe_webhook", run_id=first, status=status,
                                           tags={"dagster/will_retry": will_retry}))  # fmt: skip
            inbox.record_run(stored.id, first)
            if retry is not None:
                tags = {
                    "dagster/root_run_id": first,
                    "dagster/parent_run_id": first,
                    "dagster/retry_number": "1",
                }
                instance.add_run(dg.DagsterRun(job_name="stripe_webhook", run_id=f"retry-{event_id}",
                                               status=retry, tags=tags))  # fmt: skip
        assert record_outcomes(instance, inbox) == 2
    statuses = {event_id: row.status for event_id in families if (row := inbox.find("stripe", event_id))}
    assert statuses == {"evt_retried_ok": "succeeded", "evt_retrying": "launched", "evt_final": "failed"}
    inbox.dispose()


def test_the_docs_name_exactly_the_row_statuses_the_code_writes() -> None:
    """docs/webhooks.md lists a row's statuses as the inbox writes them (``succeeded``, not ``completed``):
    ops query the table by these names."""
    from offload import paths
    from offload.webhooks import inbox as inbox_module

    text = (paths.PROJECT_ROOT / "docs" / "webhooks.md").read_text()
    [line] = [line for line in text.replace("\n", " ").split(". ") if "A row goes" in line]
    documented = re.findall(r"`([a-z_]+)`", line)
    documented.remove("run_id")
    code = [inbox_module.RECEIVED, inbox_module.LAUNCHED, *inbox_module.FINISHED]
    assert documented == code
    assert "completed" not in text
