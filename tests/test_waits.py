"""Durable waits (offload/wait.py, offload/runtime/waits.py) against a real deployment: ``dagster dev``
(webserver, daemon, code location tests/wait_location.py), once on SQLite and once on Postgres, plus the
webhook gateway for token URLs.

A waiting run's worker exits and the client sees WAITING; it resumes as the same run with no finished step
run again; tokens complete once; cancel, token timeout, a failure after a wait, nested child waits and a
parent waiting on 50 children under a limit of 2; and waits survive the daemon being killed.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from offload.client import Client, Status
from tests.support import dagster_services
from tests.support.dagster_services import DagsterServices
from tests.support.services import wait_for

WORKSPACE = Path(__file__).parent / "wait_workspace.yaml"
RUN_TIMEOUT = 120


@dataclass
class Deployment:
    services: DagsterServices
    client: Client

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
            root, dagster_services.instance_yaml(), f"sqlite:///{root / 'idempotency.sqlite3'}"
        )
    else:
        with dagster_services.postgres_database() as url:
            instance = dagster_services.instance_yaml(dagster_services.postgres_storage(url))
            yield from _deploy(root, instance, url)


def _deploy(root: Path, instance: str, idempotency_db: str) -> Iterator[Deployment]:
    services = dagster_services.start(
        root, instance=instance, workspace=WORKSPACE, env={"OFFLOAD_IDEMPOTENCY_DB": idempotency_db}
    )
    client = Client(services.url, idempotency_db=idempotency_db)
    try:
        yield Deployment(services, client)
    finally:
        client.close()
        services.stop()


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
