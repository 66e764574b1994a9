"""Child runs in one process, with a client that records what it is asked: an interrupted parent cancels
every child it started, and a child that ends without output fails the parent's step. (tests/test_client.py
runs the same code against a real deployment, where whether a child finishes before the cancel lands is a
race; here the interruption is certain.)"""

import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import pytest

from offload.client import Run, RunHandle, Status
from offload.client.children import run_children

NOW = datetime.now(UTC)


class RecordingClient:
    def __init__(self, wait_error: BaseException | None = None, status: Status = Status.COMPLETED) -> None:
        self.wait_error = wait_error
        self.status = status
        self.triggered: list[tuple[str, str | None]] = []
        self.canceled: list[str] = []

    def trigger(self, job: str, payload: Mapping[str, Any], **options: Any) -> RunHandle:
        self.triggered.append((options["idempotency_key"], options["parent_run_id"]))
        return RunHandle(id=f"child-{len(self.triggered)}", job=job)

    def wait(self, run_id: str, timeout: float) -> Run:
        if self.wait_error is not None:
            raise self.wait_error
        output = {"run": run_id} if self.status is Status.COMPLETED else None
        return Run(run_id, "hello_world", self.status, output, None, NOW, NOW, NOW, 1, {})

    def cancel(self, run_id: str) -> None:
        self.canceled.append(run_id)


def run_parent(client: RecordingClient) -> dg.ExecuteInProcessResult:
    @dg.op
    def parent(context: dg.OpExecutionContext) -> list[Any]:
        children = [("hello_world", {"name": "Ada"}), ("typed_task", {"user_id": "u1"})]
        return run_children(context, children, client=client)  # type: ignore[arg-type]

    @dg.job
    def parent_job() -> None:
        parent()

    return parent_job.execute_in_process(raise_on_error=False)


def test_an_interrupted_parent_cancels_every_child_it_started():
    client = RecordingClient(wait_error=dg.DagsterExecutionInterruptedError())
    result = run_parent(client)
    assert not result.success
    assert client.canceled == ["child-1", "child-2"]
    assert {parent for _, parent in client.triggered} == {result.run_id}


def test_children_outputs_come_back_in_order_and_keys_differ():
    client = RecordingClient()
    result = run_parent(client)
    assert result.success and client.canceled == []
    assert result.output_for_node("parent") == [{"run": "child-1"}, {"run": "child-2"}]
    assert len({key for key, _ in client.triggered}) == 2


def test_a_child_that_ends_without_output_fails_the_parent():
    result = run_parent(RecordingClient(status=Status.FAILED))
    failure = result.failure_data_for_node("parent")
    assert failure is not None and "ended FAILED" in str(failure.error.message)


@pytest.mark.parametrize("error", [TimeoutError, KeyboardInterrupt])
def test_any_interruption_cancels_the_children(error):
    client = RecordingClient(wait_error=error())
    with contextlib.suppress(KeyboardInterrupt):
        run_parent(client)
    assert client.canceled == ["child-1", "child-2"]
