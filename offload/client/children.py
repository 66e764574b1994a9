"""Child runs: a step triggers other jobs and waits for their outputs, like Trigger.dev's ``triggerAndWait``
and ``batchTriggerAndWait``.

    @dg.op
    def welcome(context) -> dict:
        profile = {"user_id": "u1", "email": "a@example.com"}
        hello, record = run_children(context, [("hello_world", {"name": "Ada"}), ("typed_task", profile)])
        ...

Each child is a run of its own (its own logs, retries and queue), tagged with its parent. It takes its
slot on the next nesting level (offload/runtime/concurrency.py), so a parent holding a slot (while it
triggers its children, and after it resumes) never starves its children of one, however small the limits.
Children not final at once suspend the parent
(``offload.wait.for_runs``: a durable wait, offload/runtime/waits.py): its worker exits and it holds no
slot until every child is final; then it resumes, this step starts again, finds its children by their
keys and returns their outputs. The idempotency key is derived from the parent's
run family, the step, the job and the payload, so re-executing the parent from failure picks up the
children it already started (or their outputs) instead of starting more; a child that failed is started
afresh. If the parent is interrupted while it waits (canceled, timed out), its children are canceled too.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from offload import wait
from offload.client import Client, RunHandle, Status
from offload.errors import RunTimeoutError
from offload.log import StepLog
from offload.runtime import waits


def child_key(context: dg.OpExecutionContext, job: str, payload: Mapping[str, Any]) -> str:
    family = context.run.root_run_id or context.run_id
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"child/{family}/{context.op_handle}/{job}/{digest}"


def run_children(
    context: dg.OpExecutionContext,
    children: Sequence[tuple[str, Mapping[str, Any]]],
    *,
    timeout: float = 3600.0,
    client: Client | None = None,
) -> list[Any]:
    """Run each ``(job, payload)`` as a child of this run, all at once; return their outputs in order, or
    fail this step with the first child's error that ended without one."""
    own_client = client is None
    client = client or Client()
    try:
        return _run_children(context, client, children, timeout)
    finally:
        if own_client:
            client.close()


def _run_children(
    context: dg.OpExecutionContext,
    client: Client,
    children: Sequence[tuple[str, Mapping[str, Any]]],
    timeout: float,
) -> list[Any]:
    log = StepLog(context)
    handles: list[RunHandle] = []
    try:
        for job, payload in children:
            key = child_key(context, job, payload)
            handles.append(client.trigger(job, payload, idempotency_key=key, parent_run_id=context.run_id))
            log.info("child run", {"job": job, "run_id": handles[-1].id, "existing": handles[-1].existing})
        wait.for_runs(context, [handle.id for handle in handles], lambda run_id: _final(client, run_id))
        deadline = time.monotonic() + timeout
        runs = [client.wait(handle.id, timeout=max(0.0, deadline - time.monotonic())) for handle in handles]
    except waits.Suspended:
        raise  # the children go on; the parent resumes when they are final
    except BaseException as error:
        for handle in handles:  # interrupted or gave up: their work is nobody's any more
            client.cancel(handle.id)
        if isinstance(error, RunTimeoutError):
            raise dg.Failure(description=f"children did not finish within {timeout:g} s") from None
        raise
    for run in runs:
        if run.status is not Status.COMPLETED:
            raise dg.Failure(
                description=f"child {run.job} run {run.id} ended {run.status}: {run.error or 'no error'}"
            )
    log.info("children done", {"runs": [run.id for run in runs]})
    return [run.output for run in runs]


def _final(client: Client, run_id: str) -> bool:
    try:
        client.wait(run_id, timeout=0)
    except RunTimeoutError:
        return False
    return True


def run_child(
    context: dg.OpExecutionContext,
    job: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = 3600.0,
    client: Client | None = None,
) -> Any:
    """Run ``job`` with ``payload`` as a child of this run and return its output."""
    return run_children(context, [(job, payload)], timeout=timeout, client=client)[0]
