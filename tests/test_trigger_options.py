"""Trigger options (``delay``, ``ttl``, ``priority``, ``max_duration``) on a real deployment: ``dagster dev``
(webserver, daemon, code location tests/options_location.py) on SQLite and on Postgres, through the client.

The rules themselves (durations, tags, statuses) are tested as pure functions at the top.
"""

import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_origin import GrpcServerCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from benchmarks.support import dagster_deployment, postgres
from benchmarks.support.dagster_deployment import DagsterDeployment
from benchmarks.support.waiting import wait_for
from offload.client import Client, Status
from offload.client.runs import status_of
from offload.runtime import concurrency, debounce, delays
from offload.runtime.coordinator import OffloadRunCoordinator
from offload.trigger_options import (
    DEBOUNCE_KEY_TAG,
    DELAY_UNTIL_TAG,
    EXPIRED_TAG,
    EXPIRES_AT_TAG,
    PARENT_RUN_TAG,
    PRIORITY_TAG,
    duration_seconds,
    is_expired,
    is_held,
    option_tags,
)

HERE = Path(__file__).parent
RUN_TIMEOUT = 120

# -- the rules, as pure functions --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("2h", 7200), ("1h30m", 5400), ("500ms", 0.5), (12, 12), (timedelta(minutes=2), 120)],
)
def test_durations(value, seconds):
    assert duration_seconds("delay", value) == seconds


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delay": "soon"}, "delay: 'soon' must be a duration"),
        ({"delay": -5}, "delay: -5 must be positive"),
        ({"delay": datetime(2030, 1, 1)}, "delay: 2030-01-01T00:00:00 must be timezone-aware"),
        ({"ttl": "0s"}, "ttl: '0s' must be positive"),
        ({"priority": 1.5}, "priority: 1.5 must be a whole number"),
        ({"priority": True}, "priority: True must be a whole number"),
        ({"max_duration": "forever"}, "max_duration: 'forever' must be a duration"),
        ({"debounce": ("k",)}, "debounce: must be"),
        ({"debounce": {"key": "k"}}, "debounce: must be"),
        ({"debounce": ("", "5s")}, "debounce: key '' must be"),
        ({"debounce": ("k", "5s"), "delay": "1s"}, "debounce: give either delay or debounce"),
    ],
)
def test_bad_options_are_refused_naming_the_field(options, message):
    with pytest.raises(ValueError, match=message):
        option_tags(**options)


def test_option_tags():
    tags = option_tags(delay="10s", ttl="1m", priority=5, max_duration=90.2, now=1000.0)
    assert tags == {
        DELAY_UNTIL_TAG: "1010.000",
        EXPIRES_AT_TAG: "1070.000",  # the TTL counts from the due time
        "dagster/priority": "5",
        "dagster/max_runtime": "91",
    }
    assert is_held(tags, 1009.9) and not is_held(tags, 1010.0)
    assert not is_expired(tags, 1070.0) and is_expired(tags, 1070.1)
    past = datetime.fromtimestamp(990.0, tz=UTC)
    assert option_tags(delay=past, ttl=5, now=1000.0) == {EXPIRES_AT_TAG: "1005.000"}  # due: no delay


def test_debounce_tags():
    tags = option_tags(debounce={"key": "user-1", "delay": "5s"}, ttl=10, now=1000.0)
    assert tags == {DEBOUNCE_KEY_TAG: "user-1", DELAY_UNTIL_TAG: "1005.000", EXPIRES_AT_TAG: "1015.000"}
    assert option_tags(debounce=("user-1", 5), now=1000.0) == {
        k: tags[k] for k in (DEBOUNCE_KEY_TAG, DELAY_UNTIL_TAG)
    }


def test_statuses_of_delayed_and_expired_runs():
    def record(status: str, **tags: str) -> dict:
        return {"status": status, "tags": [{"key": k, "value": v} for k, v in tags.items()]}

    assert status_of(record("NOT_STARTED", **{DELAY_UNTIL_TAG: "1.0"})) is Status.DELAYED
    assert status_of(record("QUEUED", **{DELAY_UNTIL_TAG: "1.0"})) is Status.QUEUED  # released
    assert status_of(record("CANCELED", **{EXPIRED_TAG: "1.0"})) is Status.EXPIRED
    assert status_of(record("CANCELED")) is Status.CANCELED
    assert Status.EXPIRED.is_final and not Status.DELAYED.is_final


def test_delay_ttl_and_debounce_apply_to_a_runs_first_attempt_only():
    """A retry or the run that resumes a wait carries the first attempt's tags: none of them may hold it
    (released before its wait was due), expire it (a started run outliving its TTL) or fold it away."""
    options = {DELAY_UNTIL_TAG: "9999999999", EXPIRES_AT_TAG: "1.0", DEBOUNCE_KEY_TAG: "k"}
    later = {**options, PARENT_RUN_TAG: "first-attempt-id"}
    assert is_held(options, now=2.0) and is_expired(options, now=2.0)
    assert not is_held(later, now=2.0) and not is_expired(later, now=2.0)
    assert debounce.key_of(dg.DagsterRun(job_name="j", tags=options)) == "k"
    assert debounce.key_of(dg.DagsterRun(job_name="j", tags=later)) is None
    waiting = dg.DagsterRun(job_name="j", tags=later, status=dg.DagsterRunStatus.NOT_STARTED)
    assert not delays.is_delayed(waiting)

    def record(**tags: str) -> dict:
        return {"status": "NOT_STARTED", "tags": [{"key": k, "value": v} for k, v in tags.items()]}

    assert status_of(record(**options)) is Status.DELAYED
    assert status_of(record(**later)) is Status.QUEUED


def test_the_daemon_reads_only_delayed_runs_among_not_started_ones():
    """Runs that resume waits are NOT_STARTED too; the daemon's every-second pass reads none of them."""
    with dg.instance_for_test() as instance:
        not_started = dg.DagsterRunStatus.NOT_STARTED
        delayed = dg.DagsterRun(job_name="j", status=not_started, tags={DELAY_UNTIL_TAG: "1.0"})
        instance.add_run(delayed)
        for _ in range(3):
            instance.add_run(dg.DagsterRun(job_name="j", status=not_started, tags={"offload/resumes": "x"}))
        assert [run.run_id for run in delays._delayed_runs(instance)] == [delayed.run_id]


def test_equal_priorities_are_dequeued_in_trigger_order_after_higher_ones():
    """The daemon's own choice of runs to start (Dagster's ``_get_runs_to_dequeue`` with offload's sort
    installed by its coordinator) on queued runs of a real instance, created in trigger order."""
    with dg.instance_for_test(
        overrides={"run_coordinator": concurrency.run_coordinator_config()}
    ) as instance:
        assert isinstance(instance.run_coordinator, OffloadRunCoordinator)
        assert (
            QueuedRunCoordinatorDaemon._priority_sort is delays._priority_sort
        )  # offload's, installed by it
        location = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=4000, location_name="loc")
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(location, "repo"), "j")  # never contacted
        for name, priority in [("a", 0), ("b", 5), ("c", 0), ("d", 0), ("e", 5), ("f", -1), ("g", 0)]:
            tags = {PRIORITY_TAG: str(priority), "name": name}
            queued = dg.DagsterRunStatus.QUEUED
            instance.add_run(dg.DagsterRun(job_name="j", status=queued, tags=tags, remote_job_origin=origin))
        daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
        order = daemon._get_runs_to_dequeue(instance, instance.get_concurrency_config(), None)
        assert [run.tags["name"] for run in order] == ["b", "e", "a", "c", "d", "g", "f"]


def debounced_run(due: float, **tags: str) -> dg.DagsterRun:
    """A debounced trigger's run as the coordinator sees it: NOT_STARTED, due at ``due``."""
    tags = {DEBOUNCE_KEY_TAG: "k", DELAY_UNTIL_TAG: f"{due:.3f}", **tags}
    return dg.DagsterRun(job_name="j", status=dg.DagsterRunStatus.NOT_STARTED, tags=tags)


def test_a_debounced_run_takes_triggers_until_its_last_second_and_ten_minutes_after_the_first():
    now = 10_000.0
    assert (debounce.JOIN_MARGIN, debounce.MAX_WAIT) == (1.0, 600.0)

    def joinable(due: float, first_at: float) -> bool:
        return debounce._joinable(debounced_run(due), first_at, now)

    assert joinable(now + 1.001, now - 5)
    assert not joinable(now + 1.0, now - 5)  # the last second before it is due: the trigger starts a new run
    assert not joinable(now + 0.2, now - 5)
    assert joinable(now + 30, now - 599.999)
    assert not joinable(now + 30, now - 600)  # ten minutes after the key's first trigger: a new run
    canceled = dg.DagsterRun(
        job_name="j", status=dg.DagsterRunStatus.CANCELED, tags=debounced_run(now + 30).tags
    )
    assert not debounce._joinable(canceled, now - 5, now)  # released or canceled: a new run


def test_a_debounced_run_is_pushed_back_at_most_ten_minutes_after_the_keys_first_trigger():
    with dg.instance_for_test() as instance:
        storage = debounce._storage(instance)
        first_at = 1_900_000_000.0
        held = instance.add_run(debounced_run(first_at + 5))
        assert debounce._rewrite(storage, held, debounced_run(first_at + 700, n="2"), first_at)
        stored = instance.get_run_by_id(held.run_id)
        assert stored is not None and stored.tags["n"] == "2"
        assert stored.tags[DELAY_UNTIL_TAG] == f"{first_at + 600:.3f}"  # capped, not first_at + 700
        assert debounce._rewrite(storage, stored, debounced_run(first_at + 20, n="3"), first_at)
        stored = instance.get_run_by_id(held.run_id)
        assert stored is not None and stored.tags["n"] == "3"
        assert stored.tags[DELAY_UNTIL_TAG] == f"{first_at + 20:.3f}"  # under the cap: the trigger's own


def test_a_trigger_in_the_last_second_before_the_run_is_due_starts_a_new_run():
    """``collapse`` on a real SQLite instance: the key's first run, due in under a second, takes no more
    triggers; the next one collects them from then on."""
    with dg.instance_for_test() as instance:
        first = instance.add_run(debounced_run(time.time() + 0.5))
        assert debounce.collapse(instance, first).run_id == first.run_id  # claims the key
        second = instance.add_run(debounced_run(time.time() + 60, n="2"))
        assert debounce.collapse(instance, second).run_id == second.run_id  # a new run, not folded in
        untouched = instance.get_run_by_id(first.run_id)
        assert untouched is not None and "n" not in untouched.tags
        third = instance.add_run(debounced_run(time.time() + 60, n="3"))
        assert debounce.collapse(instance, third).run_id == second.run_id  # the new run collects the key
        assert instance.get_run_by_id(third.run_id) is None
        collecting = instance.get_run_by_id(second.run_id)
        assert collecting is not None and collecting.tags["n"] == "3"


# -- on a real deployment -----------------------------------------------------------------------------------


@dataclass
class Deployment:
    root: Path
    instance: str
    services: DagsterDeployment
    client: Client

    def restart(self) -> None:
        """Stop every service (the daemon with them) and start them again on the same instance."""
        self.services.stop()
        self.services = start(self.root, self.instance)
        self.client.close()
        self.client = Client(self.services.url, idempotency_db=f"sqlite:///{self.root / 'keys.sqlite3'}")

    def gate(self, name: str) -> Path:
        return self.root / f"gate-{name}"


def start(root: Path, instance: str) -> DagsterDeployment:
    return dagster_deployment.start(root, instance=instance, workspace=HERE / "options_workspace.yaml")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"options-{request.param}")
    if request.param == "sqlite":
        yield from _deploy(root, dagster_deployment.instance_yaml())
    else:
        with postgres.temporary_database() as url:
            yield from _deploy(
                root, dagster_deployment.instance_yaml(dagster_deployment.postgres_storage(url))
            )


def _deploy(root: Path, instance: str) -> Iterator[Deployment]:
    services = start(root, instance)
    deployment = Deployment(root, instance, services, Client(services.url))
    try:
        yield deployment
    finally:
        deployment.client.close()
        deployment.services.stop()


def test_a_delayed_run_waits_then_starts_when_due(deployment):
    client = deployment.client
    handle = client.trigger("free_nap", {"label": "later"}, delay="4s")
    due = float(client.retrieve(handle.id).tags[DELAY_UNTIL_TAG])
    assert client.retrieve(handle.id).status is Status.DELAYED
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output == {"label": "later"}
    assert run.started_at is not None and run.started_at.timestamp() >= due


def test_a_delayed_run_can_be_canceled_and_never_starts(deployment):
    client = deployment.client
    handle = client.trigger("free_nap", {"label": "never"}, delay=timedelta(seconds=3))
    client.cancel(handle.id)
    assert client.retrieve(handle.id).status is Status.CANCELED
    due = float(client.retrieve(handle.id).tags[DELAY_UNTIL_TAG])
    wait_for(lambda: time.time() > due + 3, RUN_TIMEOUT, "the canceled run's due time to pass")
    run = client.retrieve(handle.id)
    assert run.status is Status.CANCELED and run.started_at is None


def test_a_run_not_started_within_its_ttl_expires_and_never_runs(deployment):
    client = deployment.client
    gate = deployment.gate("ttl")
    holder = client.trigger("nap_job", {"label": "holder", "gate": str(gate)})
    wait_for(
        lambda: client.retrieve(holder.id).status is Status.EXECUTING, RUN_TIMEOUT, "the holder to start"
    )
    late = client.trigger("nap_job", {"label": "late"}, ttl="2s")
    expired = lambda: (r := client.retrieve(late.id)).status is Status.EXPIRED and r  # noqa: E731
    run = wait_for(expired, RUN_TIMEOUT, "the TTL to expire")
    gate.touch()
    assert client.wait(holder.id, timeout=RUN_TIMEOUT).status is Status.COMPLETED
    assert run.started_at is None and client.retrieve(late.id).status is Status.EXPIRED


def test_higher_priority_starts_first_among_runs_waiting_for_one_slot(deployment):
    client = deployment.client
    gate = deployment.gate("priority")
    holder = client.trigger("nap_job", {"label": "holder", "gate": str(gate)})
    wait_for(
        lambda: client.retrieve(holder.id).status is Status.EXECUTING, RUN_TIMEOUT, "the holder to start"
    )
    waiting = {
        priority: client.trigger("nap_job", {"label": f"p{priority}"}, priority=priority)
        for priority in (0, 5, -3, 10)  # triggered in this order: FIFO would start them in it
    }
    for handle in waiting.values():
        assert client.retrieve(handle.id).status is Status.QUEUED
    gate.touch()
    runs = {priority: client.wait(handle.id, timeout=RUN_TIMEOUT) for priority, handle in waiting.items()}
    assert all(run.status is Status.COMPLETED for run in runs.values())
    started = sorted(runs, key=lambda priority: runs[priority].started_at)
    assert started == [10, 5, 0, -3]


def test_max_duration_ends_a_run_over_it(deployment):
    client = deployment.client
    handle = client.trigger("free_nap", {"label": "long", "seconds": 300}, max_duration="2s")
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.TIMED_OUT
    assert run.tags["dagster/max_runtime"] == "2"
    assert run.error == "exceeded max runtime of 2 s"


def test_fifty_debounced_triggers_are_one_run_with_the_last_payload(deployment):
    client = deployment.client
    handles = [
        client.trigger("free_nap", {"label": f"n{n}"}, debounce=("doc-7", "5s"), tags={"n": str(n)})
        for n in range(50)
    ]
    assert {handle.id for handle in handles} == {handles[0].id}
    assert client.retrieve(handles[0].id).status is Status.DELAYED
    run = client.wait(handles[0].id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output == {"label": "n49"}
    assert run.tags["n"] == "49" and run.payload == {"label": "n49"}
    collected = client.list(job="free_nap", tag=(DEBOUNCE_KEY_TAG, "doc-7"), limit=100)
    assert [r.id for r in collected] == [run.id]
    # The window has passed and the run started: the next trigger with the key is a new run.
    again = client.trigger("free_nap", {"label": "again"}, debounce=("doc-7", "1s"))
    assert again.id != run.id
    assert client.wait(again.id, timeout=RUN_TIMEOUT).output == {"label": "again"}


def test_concurrent_debounced_triggers_are_one_run(deployment):
    client = deployment.client
    ids: list[str] = []

    def trigger(n: int) -> None:
        for m in range(4):
            payload = {"label": f"t{n}-{m}"}
            ids.append(client.trigger("free_nap", payload, debounce=("burst", "6s")).id)

    threads = [threading.Thread(target=trigger, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 32 and len(set(ids)) == 1
    run = client.wait(ids[0], timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output["label"].startswith("t")
    assert [r.id for r in client.list(job="free_nap", tag=(DEBOUNCE_KEY_TAG, "burst"))] == [run.id]


def test_a_queue_limit_changed_while_runs_wait_applies_without_a_restart(deployment):
    """``naps`` declares one run at once: five gated runs, one executes. Raised to 2 with the command, then
    to 4 with the client, more start while the services run on; back to the declared limit after."""
    client = deployment.client
    gate = deployment.gate("limits")
    handles = [client.trigger("nap_job", {"label": f"l{n}", "gate": str(gate)}) for n in range(5)]

    def executing() -> int:
        return sum(client.retrieve(h.id).status is Status.EXECUTING for h in handles)

    try:
        wait_for(lambda: executing() == 1, RUN_TIMEOUT, "the first run to start")
        command = [str(dagster_deployment.BIN / "offload"), "queues", "set", "naps", "2"]
        env = deployment.services.env
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        wait_for(
            lambda: executing() == 2, RUN_TIMEOUT, "a second run to start under the limit set by the command"
        )
        client.set_queue_limit("naps", 4)
        wait_for(
            lambda: executing() == 4, RUN_TIMEOUT, "four runs to execute under the limit set by the client"
        )
        assert sum(client.retrieve(h.id).status is Status.QUEUED for h in handles) == 1
    finally:
        client.clear_queue_limit("naps")
        gate.touch()
    runs = [client.wait(h.id, timeout=RUN_TIMEOUT) for h in handles]
    assert all(run.status is Status.COMPLETED for run in runs)


def test_a_delayed_run_starts_after_a_restart_of_the_daemon(deployment):
    """Due while every service is down: released on the daemon's first look once it is back."""
    handle = deployment.client.trigger("free_nap", {"label": "survivor"}, delay="2s")
    due = float(deployment.client.retrieve(handle.id).tags[DELAY_UNTIL_TAG])
    assert deployment.client.retrieve(handle.id).status is Status.DELAYED
    deployment.services.stop()
    wait_for(lambda: time.time() > due + 1, RUN_TIMEOUT, "the due time to pass with every service down")
    deployment.restart()
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output == {"label": "survivor"}
    assert run.started_at is not None and run.started_at.timestamp() >= due
