"""``hello_world``: the seed's first task. ``{name}`` -> ``{message, completed_at}``.

The smallest job there is, so it is also what the trigger-to-start benchmark measures
(benchmarks/trigger_to_start.py): anything slow about it is offload's or Dagster's overhead.
"""

from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from offload.log import StepLog
from offload.payload import payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue

QUEUE = Queue("default")


class HelloPayload(dg.Config):
    """Who to greet."""

    name: str = Field(description="1-100 characters, not only spaces.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip() or len(value) > 100:
            raise ValueError("must be 1-100 characters, not only spaces")
        return value.strip()


@dg.op
def greet(context: dg.OpExecutionContext, config: HelloPayload) -> dg.Output[dict[str, Any]]:
    message = f"Hello, {config.name}!"
    StepLog(context).info("greeted", {"name": config.name})
    return job_result({"message": message, "completed_at": datetime.now(UTC).isoformat()})


@dg.job(
    description="Greet someone: the seed's hello world.",
    config=payload_mapping(
        HelloPayload, lambda payload: {"ops": {"greet": {"config": payload.model_dump()}}}
    ),
    tags=QUEUE.job_tags(),
)
def hello_world() -> None:
    greet()
