"""Durable waits (offload/wait.py, offload/runtime/waits.py) against a real deployment: ``dagster dev``
(webserver, daemon, code location tests/wait_location.py), once on SQLite and once on Postgres, plus the
webhook gateway for token URLs.

A waiting run's worker exits and the client sees WAITING; it resumes as the same run with no finished step
run again; tokens complete once; cancel, token timeout, a failure after a wait, nested child waits and a
parent waiting on 50 children under a limit of 2; and waits survive the daemon being killed.
"""

import contextlib
import email
import email.policy
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
import httpx
import psutil
import pytest
import sqlalchemy as sa

from benchmarks.support import dagster_deployment, postgres, services
from benchmarks.support.dagster_deployment import DagsterDeployment
from benchmarks.support.services import gateway_ready
from benchmarks.support.waiting import free_port, wait_for
from offload import paths, wait
from offload.client import Client, Status
from offload.client.runs import status_of, waiting_for
from offload.runtime import waits, waitstore

WORKSPACE = Path(__file__).parent / "wait_workspace.yaml"
RUN_TIMEOUT = 120


@dataclass
class Deployment:
    services: DagsterDeployment
    client: Client
    gateway_url: str
    root: Path
    instance: str
    idempotency_db: str
    waits_url: str

    def marks(self, name: str) -> list[list[Any]]:
        path = self.services.data_dir / "marks" / f"{name}.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def events(self, name: str) -> list[tuple[str, str]]:
        return [(step, event) for step, event, *_ in self.marks(name)]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(request, tmp_path_factory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"waits-{request.param}")
    if request.param == "sqlite":
        yield from _deploy(
            root,
            dagster_deployment.instance_yaml(),
            f"sqlite:///{root / 'idempotency.sqlite3'}",
            f"sqlite:///{root / 'home' / 'history' / 'offload_waits.db'}",
        )
    else:
        with postgres.temporary_database() as url:
            instance = dagster_deployment.instance_yaml(dagster_deployment.postgres_storage(url))
            yield from _deploy(root, instance, url, url)


def _deploy(root: Path, instance: str, idempotency_db: str, waits_url: str) -> Iterator[Deployment]:
    port = free_port()
    gateway_url = f"http://127.0.0.1:{port}"
    dagster = dagster_deployment.start(
        root,
        instance=instance,
        cli="offload",  # its webserver creates batch_trigger's runs
        workspace=WORKSPACE,
        env={"OFFLOAD_IDEMPOTENCY_DB": idempotency_db, "OFFLOAD_GATEWAY_URL": gateway_url},
    )
    gateway = None
    client = Client(dagster.url, idempotency_db=idempotency_db)
    deployment = Deployment(dagster, client, gateway_url, root, instance, idempotency_db, waits_url)
    try:
        gateway_env = dagster.env | {"OFFLOAD_WEBHOOK_LAUNCH": "sensor"}
        gateway = services.gateway(gateway_env, port, root / "gateway.log").start()
        wait_for(lambda: gateway_ready(port, "off"), 60, "the gateway")
        deployment = Deployment(dagster, client, gateway_url, root, instance, idempotency_db, waits_url)
        yield deployment
    finally:
        deployment.client.close()
        if gateway is not None:
            gateway.stop()
        deployment.services.stop()


def status_is(client: Client, run_id: str, status: Status):
    def check():
        run = client.retrieve(run_id)
        return run if run.status is status else None

    return check


def test_a_sleeping_run_waits_without_a_worker_and_resumes_as_the_same_run(deployment):
    client = deployment.client
    handle = client.trigger("sleeper", {"seconds": 8, "mark": "core"})
    waiting = wait_for(status_is(client, handle.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    assert waiting.id == handle.id and waiting.waiting and waiting.waiting.startswith("until ")
    assert any(run.id == handle.id for run in client.list(job="sleeper", status=Status.WAITING))
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.id == handle.id and run.status is Status.COMPLETED, run
    assert run.output == {"slept": 8}
    events = deployment.events("core")
    # prepare ran once; pause started twice (before the wait, and on resume) and got past it once.
    assert events.count(("prepare", "run")) == 1
    assert events.count(("pause", "enter")) == 2 and events.count(("pause", "after")) == 1
    resumed_at = next(when for step, event, _, when in deployment.marks("core") if event == "after")
    entered = next(when for step, event, _, when in deployment.marks("core") if event == "enter")
    assert resumed_at >= entered + 8


def token_of(deployment: Deployment, mark: str) -> dict[str, str]:
    found = [data for step, event, data, _ in deployment.marks(mark) if event == "token"]
    return found[-1] if found else {}


def test_a_token_completed_twenty_times_at_once_resumes_its_run_once_with_the_first_data(deployment):
    client = deployment.client
    handle = client.trigger("approval", {"mark": "token20"})
    waiting = wait_for(status_is(client, handle.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    token = wait_for(lambda: token_of(deployment, "token20"), 30, "the token")
    assert waiting.waiting == f"token {token['id']}"
    assert token["url"].startswith(deployment.gateway_url + "/tokens/")
    # A wrong secret completes nothing.
    wrong = httpx.post(token["url"].rsplit("/", 1)[0] + "/not-the-secret", json={"x": 1}, timeout=10)
    assert wrong.status_code == 404
    answers: list[httpx.Response] = []
    start = threading.Barrier(20)

    def complete(index: int) -> None:
        start.wait()
        answers.append(httpx.post(token["url"], json={"approved": True, "by": index}, timeout=30))

    threads = [threading.Thread(target=complete, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer.status_code for answer in answers) == [200] * 20
    first = [answer.json() for answer in answers if answer.json()["completed_now"]]
    assert len(first) == 1
    run = client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED, run
    winner = next(answer for answer in answers if answer.json()["completed_now"])
    assert run.output["ok"] is True and run.output["data"] == json.loads(winner.request.content)
    assert deployment.events("token20").count(("decide", "after")) == 1
    assert deployment.events("token20").count(("ask", "token")) == 1  # the step before the wait ran once
    # Completing it again, through the client, is a no-op that succeeds.
    assert client.complete_token(token["url"], {"late": True}) is False


def test_a_token_that_times_out_resumes_the_run_with_a_timeout_result(deployment):
    handle = deployment.client.trigger("approval", {"mark": "timeout", "timeout": 8})
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED, run
    assert run.output == {"ok": False, "data": None, "timed_out": True}
    token = token_of(deployment, "timeout")
    assert httpx.post(token["url"], json={"late": True}, timeout=10).status_code == 409


def test_canceling_a_waiting_run_cancels_it_at_once_and_it_never_resumes(deployment):
    client = deployment.client
    handle = client.trigger("sleeper", {"seconds": 8, "mark": "cancel"})
    wait_for(status_is(client, handle.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    client.cancel(handle.id)
    assert client.retrieve(handle.id).status is Status.CANCELED
    # Well past the due time it has not resumed.
    wait_for(lambda: time.time() > deployment.marks("cancel")[0][3] + 14, 30, "the due time to pass")
    assert client.retrieve(handle.id).status is Status.CANCELED
    assert ("pause", "after") not in deployment.events("cancel")
    assert deployment.events("cancel").count(("pause", "enter")) == 1


def test_a_wait_in_a_step_that_then_fails_is_passed_by_the_steps_retry(deployment):
    handle = deployment.client.trigger("flaky_after_wait", {"seconds": 7, "mark": "flaky"})
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output == {"attempt": 1}, run
    # Entered before the wait, on resume (then failed), and on the step's retry: which did not wait again.
    events = deployment.marks("flaky")
    assert [(event, data) for _, event, data, _ in events] == [
        ("enter", 0),
        ("enter", 0),
        ("fail", None),
        ("enter", 1),
    ]
    assert events[3][3] - events[2][3] < 6  # the retry passed the wait at once


def test_child_waits_nest_two_levels_deep(deployment):
    handle = deployment.client.trigger("nest", {"levels": 2, "seconds": 7, "mark": "nest"})
    wait_for(status_is(deployment.client, handle.id, Status.WAITING), RUN_TIMEOUT, "the parent to wait")
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED, run
    assert run.output == {"level": 2, "child": {"level": 1, "child": {"level": 0}}}
    events = deployment.events("nest")
    # Each level's step: once before its wait, once on resume; no child started twice.
    assert events.count(("level2", "enter")) == 2 and events.count(("level1", "enter")) == 2
    assert events.count(("level0", "enter")) == 2
    assert len(deployment.client.list(job="nest", limit=10)) == 3


def test_a_parent_waiting_on_fifty_children_under_a_limit_of_two_finishes(deployment):
    handle = deployment.client.trigger("fan_out", {"children": 50})
    run = deployment.client.wait(handle.id, timeout=600)
    assert run.status is Status.COMPLETED, run
    assert run.output == {"indexes": list(range(50))}


def _daemon_process(services: DagsterDeployment) -> psutil.Process:
    for child in psutil.Process(services.pid).children(recursive=True):
        if "dagster-daemon" in " ".join(child.cmdline()) or "_daemon" in " ".join(child.cmdline()):
            return child
    raise AssertionError("no daemon process under dagster dev")


def _restart(deployment: Deployment) -> None:
    """Kill -9 everything of ``dagster dev`` and start it again on the same instance."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(deployment.services.pid, signal.SIGKILL)
    assert deployment.services.process is not None
    deployment.services.process.wait(timeout=30)
    deployment.client.close()
    deployment.services = dagster_deployment.start(
        deployment.root,
        instance=deployment.instance,
        cli="offload",
        workspace=WORKSPACE,
        env={
            "OFFLOAD_IDEMPOTENCY_DB": deployment.idempotency_db,
            "OFFLOAD_GATEWAY_URL": deployment.gateway_url,
        },
    )
    deployment.client = Client(deployment.services.url, idempotency_db=deployment.idempotency_db)


def test_a_wait_survives_the_daemon_and_then_everything_being_killed(deployment):
    client = deployment.client
    handle = client.trigger("sleeper", {"seconds": 8, "mark": "restart"})
    wait_for(status_is(client, handle.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    due = deployment.marks("restart")[-1][3] + 8
    _daemon_process(deployment.services).kill()
    # (dagster dev shuts its webserver down when its daemon dies: the marks tell what ran meanwhile.)
    wait_for(lambda: time.time() > due + 3, 60, "the due time to pass with no daemon")
    assert ("pause", "after") not in deployment.events("restart")  # nobody resumed it
    _restart(deployment)
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.id == handle.id, run
    events = deployment.events("restart")
    assert events.count(("prepare", "run")) == 1 and events.count(("pause", "after")) == 1


# -- the product's jobs that wait -------------------------------------------------------------------------


def _link(outbox: Path, word: str) -> str:
    for path in outbox.glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        body = message.get_body(("plain",))
        for line in (body.get_content() if body is not None else "").splitlines():
            if line.startswith(f"{word}: "):
                return line.split(": ", 1)[1]
    return ""


def test_publish_article_waits_for_the_editor_and_acts_on_the_decision(deployment, monkeypatch):
    monkeypatch.setenv("OFFLOAD_DATA_DIR", str(deployment.services.data_dir))
    storage = paths.storage_dir()
    (storage / "drafts").mkdir(parents=True, exist_ok=True)
    (storage / "drafts" / "waits.md").write_text("# Durable waits\\n")
    outbox = paths.outbox_dir()
    payload = {"article_key": "drafts/waits.md", "title": "Durable waits", "editor_email": "ed@example.com"}
    approved = deployment.client.trigger("publish_article", payload)
    wait_for(status_is(deployment.client, approved.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    approve = wait_for(lambda: _link(outbox, "Approve"), 30, "the approval email")
    page = httpx.get(approve, timeout=10)  # what a click does: a page, no decision yet
    assert page.status_code == 200 and "Confirm" in page.text
    assert deployment.client.retrieve(approved.id).status is Status.WAITING
    form = dict(parse_qsl(urlsplit(approve).query))
    assert httpx.post(approve.split("?")[0], data=form, timeout=10).status_code == 200
    run = deployment.client.wait(approved.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output["decision"] == "approve", run
    assert (storage / "published" / "durable-waits.md").read_text() == "# Durable waits\\n"
    assert len(list(outbox.glob("*.eml"))) == 1  # resuming did not email again

    timed_out = deployment.client.trigger(
        "publish_article", payload | {"title": "Late", "timeout_seconds": 8}
    )
    run = deployment.client.wait(timed_out.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output == {"decision": "timeout", "notified": "ops"}, run
    assert any("Late" in path.read_text() for path in (outbox / "slack").glob("*"))


def test_welcome_user_waits_for_its_children_without_a_worker(deployment):
    payload = {"user_id": "u-wait", "email": "ada@example.com", "name": "Ada"}
    handle = deployment.client.trigger("welcome_user", payload)
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output["greeting"] == "Hello, Ada!", run
    assert run.attempts == 2  # the attempt that ended at the wait, and the one that resumed it


def test_batch_processor_waits_between_batches(deployment):
    items = [{"email": f"user{i}@example.com", "name": f"User {i}"} for i in range(6)]
    handle = deployment.client.trigger(
        "batch_processor", {"items": items, "batch_size": 2, "delay_seconds": 7}
    )
    wait_for(status_is(deployment.client, handle.id, Status.WAITING), RUN_TIMEOUT, "the run to wait")
    run = deployment.client.wait(handle.id, timeout=RUN_TIMEOUT)
    assert run.status is Status.COMPLETED and run.output["total_processed"] == 6, run
    assert run.attempts == 3  # batch 1 at once; batches 2 and 3 each after a wait


# -- many at once ----------------------------------------------------------------------------------------

MANY = 200


def test_two_hundred_runs_wait_at_once_with_no_worker_and_all_resume_on_time(deployment):
    client = deployment.client
    later = time.time() + 3600
    # The batch goes to the keys database that offload dev's batch creator reads.
    patient = Client(deployment.services.url, timeout=180, idempotency_db=deployment.idempotency_db)
    try:
        handles = [
            handle
            for start in range(0, MANY, 50)
            for handle in patient.batch_trigger("nap", [{"until": later}] * 50).runs
        ]
    finally:
        patient.close()
    assert len(handles) == MANY
    store = waitstore.WaitStore(deployment.waits_url)
    table = waitstore.waits_table

    def waiting_rows() -> list[waitstore.WaitRow]:
        rows = [row for row in store.waits_in(waitstore.WAITING) if row.due_at == later]
        return rows if len(rows) == MANY else []

    rows = wait_for(waiting_rows, 600, f"{MANY} runs to wait at once")
    # Not one worker process for 200 waiting runs (the last ones' workers may be exiting still).
    wait_for(lambda: not dagster_deployment.run_workers(deployment.services.pid), 30, "no run worker alive")
    listed = client.list(job="nap", status=Status.WAITING, limit=20)
    assert len(listed) == 20 and {run.id for run in listed} <= {handle.id for handle in handles}
    assert all(client.retrieve(handle.id).status is Status.WAITING for handle in handles)
    # Bring the due times forward (the machine took its time to start them all): five a second from now.
    first = time.time() + 3
    with store.engine.begin() as connection:
        for index, row in enumerate(rows):
            connection.execute(table.update().where(table.c.id == row.id).values(due_at=first + index / 5))
    wait_for(
        lambda: all(client.retrieve(h.id).is_final for h in handles[-5:]), 300, "the last runs to finish"
    )
    wait_for(lambda: store.counts().get(waitstore.RESUMED, 0) >= MANY, 300, "every wait to be resumed")
    with store.engine.connect() as connection:
        found = connection.execute(
            sa.select(table.c.due_at, table.c.resumed_at).where(table.c.id.in_([row.id for row in rows]))
        ).all()
    lags = sorted(row.resumed_at - row.due_at for row in found)
    print(f"resume lag of {MANY} runs: p50 {lags[len(lags) // 2]:.2f} s, max {lags[-1]:.2f} s")
    assert len(lags) == MANY and lags[0] >= 0 and lags[-1] <= 5, lags
    for handle in handles:
        run = client.wait(handle.id, timeout=300)
        assert run.status is Status.COMPLETED and run.output == {"woke": True}, run


# -- pure pieces (no services) ----------------------------------------------------------------------------


def test_waiting_attempts_read_as_waiting_and_a_later_real_failure_does_not():
    suspended = {
        "status": "FAILURE",
        "tags": [{"key": "offload/suspended", "value": "until 2026-12-04T18:00:00Z"}],
    }
    resumes = {"status": "NOT_STARTED", "tags": [{"key": "offload/resumes", "value": "token tok_1"}]}
    # The resumed attempt failed for real: its inherited tags are emptied, so it is a failure again.
    tags = [
        {"key": "offload/suspended", "value": ""},
        {"key": "dagster/failure_reason", "value": "STEP_FAILURE"},
    ]
    failed = {"status": "FAILURE", "tags": tags}
    assert status_of(suspended) is Status.WAITING and waiting_for(suspended) == "until 2026-12-04T18:00:00Z"
    assert status_of(resumes) is Status.WAITING and waiting_for(resumes) == "token tok_1"
    assert (
        status_of(failed) is Status.FAILED and not Status.WAITING.is_final and not Status.WAITING.is_failure
    )


def job_that_sleeps(seconds: float) -> dg.JobDefinition:
    @dg.op
    def sleeper(context: dg.OpExecutionContext) -> float:
        started = time.monotonic()
        wait.sleep(context, seconds)
        return time.monotonic() - started

    @dg.job(name=f"sleeps_{str(seconds).replace('.', '_')}")
    def sleeps() -> None:
        sleeper()

    return sleeps


def test_a_wait_of_five_seconds_or_less_sleeps_in_the_worker_and_a_longer_one_suspends_the_run():
    """In process on a real SQLite instance: a 0.2 s wait sleeps in the step (the run completes, no wait is
    recorded, the run is not tagged suspended); one just over IN_PROCESS_SECONDS records its wait and ends
    the step suspended."""
    assert wait.IN_PROCESS_SECONDS == 5.0
    with dg.instance_for_test() as instance:
        store = waitstore.for_instance(instance)
        every_state = (waitstore.SUSPENDING, waitstore.WAITING, waitstore.RESUMING, waitstore.RESUMED,
                       waitstore.CANCELED)  # fmt: skip
        short = job_that_sleeps(0.2).execute_in_process(instance=instance)
        assert short.success and short.output_for_node("sleeper") >= 0.15
        assert store.waits_in(*every_state) == []
        done = instance.get_run_by_id(short.run_id)
        assert done is not None and waits.SUSPENDED_TAG not in done.tags
        long = job_that_sleeps(wait.IN_PROCESS_SECONDS + 0.5).execute_in_process(
            instance=instance, raise_on_error=False
        )
        assert not long.success
        [row] = store.waits_in(*every_state)
        assert (row.run_id, row.kind, row.state) == (long.run_id, "sleep", waitstore.SUSPENDING)
        run = instance.get_run_by_id(long.run_id)
        assert run is not None and run.tags[waits.SUSPENDED_TAG].startswith("until ")


def test_a_token_completes_once_and_keeps_its_first_data(tmp_path):
    store = waitstore.WaitStore(f"sqlite:///{tmp_path / 'waits.db'}")
    token = store.create_token(60, {"kind": "test"}, idempotency_key="k1")
    assert store.create_token(60, idempotency_key="k1").id == token.id  # same key, same token
    assert store.complete_token(token.id, {"n": 1}) is True
    assert store.complete_token(token.id, {"n": 2}) is False
    found = store.get_token(token.id)
    assert found is not None and found.state == waitstore.TOKEN_COMPLETED and found.data == {"n": 1}
    late = store.create_token(1)
    store.expire_tokens(time.time() + 2)
    assert store.complete_token(late.id, {"n": 3}) is False
    token = store.get_token(late.id)
    assert token is not None and token.state == waitstore.TOKEN_TIMED_OUT


def test_bad_wait_arguments_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="duration: -1 must be a non-negative duration"):
        wait.sleep(None, -1)
    with pytest.raises(ValueError, match=r"when: .* must be timezone-aware"):
        wait.until(None, datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="timeout: 0 must be positive"):
        wait.create_token(timeout=0)
