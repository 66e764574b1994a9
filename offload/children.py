"""Child runs: a step triggers another job and waits for its output, like Trigger.dev's ``triggerAndWait``.

    @dg.op
    def greet(context) -> str:
        return run_child(context, "hello_world", {"name": "Ada"})["message"]

The child is a run of its own (its own logs, retries and queue), tagged with its parent. It takes its slot
on the next nesting level (offload/concurrency.py), so a parent holding a slot while it waits never starves
its child of one, however small the limits. The idempotency key is derived from the parent's run family,
the step and the payload, so re-executing the parent from failure picks up the child it already started
(or its output) instead of starting another; a child that failed is started afresh. If the parent is
interrupted while it waits (canceled, timed out), the child is canceled too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg

from offload.client import Client, Status
from offload.log import StepLog


def child_key(context: dg.OpExecutionContext, job: str, payload: Mapping[str, Any]) -> str:
    family = context.run.root_run_id or context.run_id
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"child/{family}/{context.op_handle}/{job}/{digest}"


def run_child(
    context: dg.OpExecutionContext,
    job: str,
    payload: Mapping[str, Any],
    *,
    timeout: float = 3600.0,
    client: Client | None = None,
) -> Any:
    """Run ``job`` with ``payload`` as a child of this run; return its output, or fail this step with the
    child's error."""
    log = StepLog(context)
    client = client or Client()
    handle = client.trigger(
        job, payload, idempotency_key=child_key(context, job, payload), parent_run_id=context.run_id
    )
    log.info("child run", {"job": job, "run_id": handle.id, "existing": handle.existing})
    try:
        run = client.wait(handle.id, timeout=timeout)
    except BaseException:
        client.cancel(handle.id)  # interrupted or gave up: the child's work is nobody's any more
        raise
    if run.status is not Status.COMPLETED:
        raise dg.Failure(
            description=f"child {job} run {run.id} ended {run.status}: {run.error or 'no error message'}"
        )
    log.info("child done", {"job": job, "run_id": run.id})
    return run.output
