"""From webhook to runs with the real thing: the gateway over HTTP (uvicorn, its own process), the Dagster
daemon (sensor and run queue), SQLite inbox and run storage in a temporary DAGSTER_HOME.

- a Stripe payment and a Clerk sign-up become one run each, launched by the gateway at once, executed,
  and their outcomes copied back to the inbox; the payment is in the app database and the receipt sent;
- 100 GitHub deliveries sent 3 times each, concurrently, make exactly 100 runs; 20 sent 3 times one after
  another make 20; 100 sent 3 times to a gateway that only stores (the sensor launches them, in one tick)
  make 100;
- ``kill -9`` of the gateway while a sender is busy: after a restart every delivery that got a 2xx (and
  every one the sender retried) has exactly one run;
- the daemon killed while its sensor is launching, then started again: nothing lost, nothing twice.

GitHub runs are held in the queue (a tag concurrency limit of 0), so these tests count runs without
paying for 400 run workers on a 2-core machine; the Stripe and Clerk runs execute.
"""

from __future__ import annotations

import collections
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster._core.instance.ref import InstanceRef

from benchmarks.support import services
from benchmarks.support.waiting import free_port, wait_for
from benchmarks.support.webhooks import (
    SECRETS_ENV,
    body_of,
    clerk_event,
    clerk_headers,
    github_headers,
    github_push,
    stripe_event,
    stripe_headers,
)
from offload.webhooks.event import EVENT_TAG, PROVIDER_TAG, event_key, run_id_for
from offload.webhooks.inbox import Inbox, Incoming, now
from offload.webhooks.launch import GatewayLauncher
from offload.webhooks.providers import PROVIDERS
from resources.database import AppDatabase

pytestmark = pytest.mark.timeout(900)

CLAIM_TIMEOUT = 15  # seconds before the sensor may take over a claim whose holder died


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    instance: dg.DagsterInstance
    inbox: Inbox
    daemon: services.Service
    port: int  # the gateway that launches at once
    store_only_port: int  # a gateway that only stores: the sensor launches

    def post(self, port: int, provider: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return httpx.post(f"http://127.0.0.1:{port}/webhooks/{provider}", content=body, headers=headers,
                          timeout=30)  # fmt: skip

    def runs_per_event(self, provider: str, event_ids: list[str]) -> collections.Counter[str]:
        keys = {event_key(provider, event_id) for event_id in event_ids}
        runs = self.instance.get_runs(dg.RunsFilter(tags={PROVIDER_TAG: provider}))
        return collections.Counter(run.tags[EVENT_TAG] for run in runs if run.tags.get(EVENT_TAG) in keys)

    def all_launched(self, provider: str, event_ids: list[str]) -> bool:
        rows = [self.inbox.find(provider, event_id) for event_id in event_ids]
        return all(row is not None and row.run_id is not None for row in rows)

    def sensor_tick_after_now(self) -> None:
        """Wait until the sensor has run a full tick that started after this call: a fresh event sent to the
        storing gateway gets its run from the sensor only then."""
        delivery = str(uuid.uuid4())
        body = body_of(github_push())
        assert self.post(
            self.store_only_port, "github", body, github_headers(body, delivery=delivery)
        ).is_success
        wait_for(lambda: self.all_launched("github", [delivery]), 90, "a sensor tick")


def start_gateway(stack_env: dict[str, str], root: Path, port: int, launch: str) -> services.Service:
    env = {**stack_env, "OFFLOAD_WEBHOOK_LAUNCH": launch}
    service = services.gateway(env, port, root / f"gateway-{port}.log").start()
    state = "ready" if launch == "immediate" else "off"
    try:
        wait_for(lambda: services.gateway_ready(port, state), 180, f"gateway on {port} ({state})")
    except AssertionError:
        service.stop()
        raise AssertionError(service.tail()) from None
    return service


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("delivery")
    home = services.write_instance(
        root / "home",
        run_queue={"max_concurrent_runs": 4,
                   "tag_concurrency_limits": [{"key": PROVIDER_TAG, "value": "github", "limit": 0}]},
    )  # fmt: skip
    inbox_url = f"sqlite:///{root / 'inbox.db'}"
    env = {
        **SECRETS_ENV,
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "DAGSTER_HOME": str(home),
        "OFFLOAD_DATA_DIR": str(root / "data"),
        "OFFLOAD_WEBHOOK_INBOX_URL": inbox_url,
        "OFFLOAD_WEBHOOK_SENSOR_INTERVAL": "5",
        "OFFLOAD_WEBHOOK_SENSOR_GRACE": "3",
        "OFFLOAD_WEBHOOK_CLAIM_TIMEOUT": str(CLAIM_TIMEOUT),
    }
    started: list[services.Service] = []
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    stack: Stack | None = None
    try:
        daemon = services.daemon(env, root / "daemon.log").start()
        started.append(daemon)
        port, store_only_port = free_port(), free_port()
        started.append(start_gateway(env, root, store_only_port, "sensor"))
        started.append(start_gateway(env, root, port, "immediate"))
        inbox = Inbox(inbox_url)
        stack = Stack(root, env, instance, inbox, daemon, port, store_only_port)
        yield stack
        inbox.dispose()
    finally:
        if stack is not None:
            stack.daemon.stop()  # the one running now: a test may have restarted it
        for service in reversed(started):
            service.stop()
        instance.dispose()


def github_deliveries(count: int) -> list[tuple[str, bytes, dict[str, str]]]:
    deliveries = []
    for _ in range(count):
        delivery = str(uuid.uuid4())
        body = body_of(github_push())
        deliveries.append((delivery, body, github_headers(body, delivery=delivery)))
    return deliveries


def send_all(
    stack: Stack, port: int, sends: list[tuple[str, bytes, dict[str, str]]], threads: int
) -> list[int]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda s: stack.post(port, "github", s[1], s[2]).status_code, sends))


def test_payment_and_signup_each_become_one_executed_run(stack: Stack) -> None:
    event = stripe_event(receipt_email="payer@example.com", user_id="user_7")
    stripe_body = body_of(event)
    clerk_body = body_of(clerk_event(user_id="user_clerk_1", email="new.user@example.com"))
    headers = clerk_headers(clerk_body)
    sent = time.time()
    assert stack.post(stack.port, "stripe", stripe_body, stripe_headers(stripe_body)).status_code == 200
    assert stack.post(stack.port, "clerk", clerk_body, headers).status_code == 200

    def finished() -> bool:
        rows = [stack.inbox.find("stripe", event["id"]), stack.inbox.find("clerk", headers["svix-id"])]
        return all(row is not None and row.status == "succeeded" for row in rows)

    wait_for(finished, 240, "both runs to succeed and the sensor to record it")
    row = stack.inbox.find("stripe", event["id"])
    assert row is not None and row.run_id == run_id_for("stripe", event["id"])  # launched by the gateway
    record = stack.instance.get_run_record_by_id(row.run_id)
    assert record is not None and record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
    assert record.start_time is not None
    print(f"received -> run started: {record.start_time - sent:.2f} s")
    assert stack.runs_per_event("stripe", [event["id"]]) == {event_key("stripe", event["id"]): 1}
    database = AppDatabase(url=f"sqlite:///{stack.root / 'data' / 'offload.db'}")
    payment = database.get_payment(event["data"]["object"]["id"])
    assert payment is not None and payment.status == "succeeded" and payment.amount == 2500
    assert database.user_email("user_clerk_1") == "new.user@example.com"
    subjects = sorted(
        line for path in (stack.root / "data" / "outbox").glob("*.eml")
        for line in path.read_text().splitlines() if line.startswith("Subject:")
    )  # fmt: skip
    assert subjects == ["Subject: Receipt: 25.00 USD received", "Subject: Welcome!"]
    database.engine().dispose()


def test_100_events_sent_3_times_concurrently_make_100_runs(stack: Stack) -> None:
    deliveries = github_deliveries(100)
    sends = deliveries * 3
    random.Random(4).shuffle(sends)
    assert set(send_all(stack, stack.port, sends, threads=24)) == {200}
    ids = [delivery for delivery, _, _ in deliveries]
    wait_for(lambda: stack.all_launched("github", ids), 240, "100 runs recorded in the inbox")
    stack.sensor_tick_after_now()  # the safety net has looked at them too
    runs = stack.runs_per_event("github", ids)
    assert len(runs) == 100 and set(runs.values()) == {1}
    by_gateway = 0
    for delivery in ids:  # each row names its one run; the gateway made it unless the sensor got there first
        row = stack.inbox.find("github", delivery)
        [run_id] = stack.instance.get_run_ids(dg.RunsFilter(tags={EVENT_TAG: event_key("github", delivery)}))
        assert row is not None and row.run_id == run_id and row.status == "launched"
        by_gateway += run_id == run_id_for("github", delivery)
    print(f"launched by the gateway: {by_gateway} of 100, by the sensor: {100 - by_gateway}")
    assert by_gateway > 0


def test_20_events_sent_3_times_one_after_another_make_20_runs(stack: Stack) -> None:
    deliveries = github_deliveries(20)
    answers = [
        stack.post(stack.port, "github", b, h).json()["duplicate"] for _ in range(3) for _, b, h in deliveries
    ]
    assert answers == [False] * 20 + [True] * 40
    ids = [delivery for delivery, _, _ in deliveries]
    wait_for(lambda: stack.all_launched("github", ids), 180, "20 runs recorded in the inbox")
    runs = stack.runs_per_event("github", ids)
    assert len(runs) == 20 and set(runs.values()) == {1}


def test_100_events_sent_3_times_within_one_sensor_tick_make_100_runs(stack: Stack) -> None:
    """The storing gateway launches nothing: all 300 deliveries land before the sensor's grace period is
    over, and the sensor turns the 100 rows into 100 runs (run_key = the event)."""
    deliveries = github_deliveries(100)
    sends = deliveries * 3
    random.Random(5).shuffle(sends)
    assert set(send_all(stack, stack.store_only_port, sends, threads=24)) == {200}
    ids = [delivery for delivery, _, _ in deliveries]
    wait_for(lambda: stack.all_launched("github", ids), 240, "the sensor to launch 100 events")
    stack.sensor_tick_after_now()
    runs = stack.runs_per_event("github", ids)
    assert len(runs) == 100 and set(runs.values()) == {1}
    tagged = stack.instance.get_runs(dg.RunsFilter(tags={EVENT_TAG: event_key("github", ids[0])}))
    assert [run.tags.get("offload/launched_by") for run in tagged] == ["webhook_inbox"]
    assert tagged[0].tags["dagster/run_key"] == event_key("github", ids[0])


class KilledBetweenCreateAndSubmit(BaseException):
    """Stands for ``kill -9`` of a gateway between creating an event's run and submitting it: nothing of
    the launcher's error handling runs (it catches ``Exception``)."""


def test_a_run_created_but_never_submitted_is_submitted_by_the_running_gateways_sweep(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launcher (in this process, on the stack's instance) creates an event's run and dies before
    submitting it. The gateway that is already running, not restarted, submits it: the run is queued (not
    left NOT_STARTED until Dagster's start timeout), and it stays the event's one run."""
    for name, value in stack.env.items():  # the launcher's code server loads the code as the stack's does
        monkeypatch.setenv(name, value)
    launcher = GatewayLauncher(
        stack.inbox, stack.instance, {name: p.job_name for name, p in PROVIDERS.items()}, claim_timeout=600
    )
    try:
        launcher.workspace.request_context(timeout=180)
        delivery, body, _headers = github_deliveries(1)[0]
        [stored] = stack.inbox.store([Incoming("github", delivery, "push", body.decode(), now())])

        def killed(*args: object, **kwargs: object) -> None:
            raise KilledBetweenCreateAndSubmit

        with monkeypatch.context() as patch:
            patch.setattr(stack.instance, "submit_run", killed)
            with pytest.raises(KilledBetweenCreateAndSubmit):
                launcher.launch(stored.id)
    finally:
        launcher.close()
    run_id = run_id_for("github", delivery)
    run = stack.instance.get_run_by_id(run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.NOT_STARTED

    def submitted() -> bool:
        current = stack.instance.get_run_by_id(run_id)
        return current is not None and current.status != dg.DagsterRunStatus.NOT_STARTED

    wait_for(submitted, 120, "the running gateway's sweep to submit the orphaned run")
    current = stack.instance.get_run_by_id(run_id)
    assert current is not None and current.status == dg.DagsterRunStatus.QUEUED  # github runs are held
    # The sensor takes the dead launcher's claim over after the claim timeout and records the same run.
    wait_for(lambda: stack.all_launched("github", [delivery]), CLAIM_TIMEOUT + 120, "the row's run")
    row = stack.inbox.find("github", delivery)
    assert row is not None and row.run_id == run_id
    assert stack.runs_per_event("github", [delivery]) == {event_key("github", delivery): 1}


def test_the_sweep_submits_first_attempts_only(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run that resumes a webhook run's wait (or retries it) is NOT_STARTED with the webhook's tags until
    its turn: the orphan sweep must leave it (it submitted such runs, resuming waits before they were due)."""
    job = PROVIDERS["github"].job_name
    first, later = (
        dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED,
                      tags={PROVIDER_TAG: "github", **extra})
        for extra in ({}, {"dagster/parent_run_id": str(uuid.uuid4())})
    )  # fmt: skip
    launcher = GatewayLauncher(stack.inbox, stack.instance, {"github": job}, claim_timeout=600)
    submitted: list[str] = []
    monkeypatch.setattr(launcher, "_submit_if_not_started", submitted.append)  # record, launch nothing
    try:
        stack.instance.add_run(first)
        stack.instance.add_run(later)
        found = launcher.resubmit_orphans(older_than=0)
        assert first.run_id in found and first.run_id in submitted  # the query does find such runs
        assert later.run_id not in found and later.run_id not in submitted
    finally:
        launcher.close()
        for run in (first, later):
            stack.instance.delete_run(run.run_id)


class Sender:
    """A provider that retries each delivery until it gets a 2xx (as Stripe and Svix do)."""

    def __init__(self, stack: Stack, port: int, deliveries: list[tuple[str, bytes, dict[str, str]]]):
        self.stack, self.port = stack, port
        self.pending = list(deliveries)
        self.acked: list[str] = []
        self.failures = 0
        self.lock = threading.Lock()

    def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            with self.lock:
                if not self.pending:
                    return
                item = self.pending.pop(0)
            try:
                ok = self.stack.post(self.port, "github", item[1], item[2]).status_code == 200
            except httpx.HTTPError:
                ok = False
            with self.lock:
                if ok:
                    self.acked.append(item[0])
                else:
                    self.failures += 1
                    self.pending.append(item)  # sent again later, like a provider's retry
            if not ok:
                time.sleep(0.2)


def test_gateway_killed_under_load_loses_nothing_and_duplicates_nothing(stack: Stack) -> None:
    port = free_port()
    gateway = start_gateway(stack.env, stack.root, port, "immediate")
    deliveries = github_deliveries(50)
    sender = Sender(stack, port, deliveries)
    deadline = time.monotonic() + 300
    threads = [threading.Thread(target=sender.run, args=(deadline,)) for _ in range(4)]
    try:
        for thread in threads:
            thread.start()
        wait_for(lambda: len(sender.acked) >= 15, 60, "15 acknowledged deliveries")
        gateway.kill_hard()
        acked_before_crash = list(sender.acked)
        time.sleep(0.5)  # not synchronisation: lets the sender meet the dead port (its retries are the test)
        gateway.stop()  # the killed gateway's code server goes with its group
        gateway = start_gateway(stack.env, stack.root, port, "immediate")
        for thread in threads:
            thread.join()
    finally:
        gateway.stop()
    assert not sender.pending and len(sender.acked) == 50
    assert sender.failures > 0, "the crash should have cost the sender some attempts"
    ids = [delivery for delivery, _, _ in deliveries]
    wait_for(
        lambda: stack.all_launched("github", ids), CLAIM_TIMEOUT + 180, "every acknowledged event launched"
    )
    stack.sensor_tick_after_now()
    runs = stack.runs_per_event("github", ids)
    assert set(acked_before_crash) <= {key.split(":", 1)[1] for key in runs}
    assert len(runs) == 50 and set(runs.values()) == {1}


def test_daemon_restarted_while_the_sensor_launches_loses_and_duplicates_nothing(stack: Stack) -> None:
    deliveries = github_deliveries(40)
    assert set(send_all(stack, stack.store_only_port, deliveries, threads=8)) == {200}
    ids = [delivery for delivery, _, _ in deliveries]
    wait_for(lambda: sum(stack.runs_per_event("github", ids).values()) >= 1, 120, "the first runs")
    stack.daemon.stop(timeout=0)  # SIGTERM then, at once, SIGKILL of the daemon's whole group
    midway = sum(stack.runs_per_event("github", ids).values())
    stack.daemon = services.daemon(stack.env, stack.root / "daemon-2.log").start()
    wait_for(lambda: stack.all_launched("github", ids), CLAIM_TIMEOUT + 240, "all 40 launched")
    stack.sensor_tick_after_now()
    runs = stack.runs_per_event("github", ids)
    assert len(runs) == 40 and set(runs.values()) == {1}, (midway, runs.most_common(3))
    print(f"runs made before the daemon was killed: {midway} of 40")
