"""A job's result: what ``Client.retrieve(run_id).output`` returns once the run is COMPLETED.

A step declares it by returning ``job_result(value)``: its output, with the value also attached as JSON
metadata labelled ``result``. Dagster stores that metadata with the step's output event in the run's event
log, where the client reads it over GraphQL, and the UI shows it on the step. If several steps declare a
result, the last one wins. Results are JSON objects or arrays of at most 10 MB (Trigger.dev's output
limit); bigger data belongs in storage, and the result says where (see ``batch_processor``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

RESULT_LABEL = "result"
MAX_RESULT_BYTES = 10 * 1024 * 1024


def job_result(
    value: Mapping[str, Any] | Sequence[Any], metadata: Mapping[str, Any] | None = None
) -> dg.Output[Any]:
    """The step's output ``value``, declared as the job's result (plus any other ``metadata``)."""
    size = len(json.dumps(value).encode())
    if size > MAX_RESULT_BYTES:
        raise ValueError(
            f"result: {size:,} bytes is over the {MAX_RESULT_BYTES:,}-byte limit; store it, return where"
        )
    return dg.Output(value, metadata={RESULT_LABEL: dg.MetadataValue.json(value), **(metadata or {})})
