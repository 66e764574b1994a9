"""``typed_task``: the seed's schema-validated task (zod there, a pydantic model here).

``{user_id, email, data}`` is checked before any step runs (one line per bad field), then stored as a JSON
record under ``records/{user_id}/{run_id}.json``; the result says where. One run per ``user_id`` at a time,
so two updates of one user's record never interleave.
"""

import json
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from offload.keys import check_id, id_rule
from offload.log import StepLog
from offload.payload import check_email, payload_mapping
from offload.result import job_result
from offload.runtime.concurrency import Queue
from resources.storage import Storage

QUEUE = Queue("records", key_field="user_id", key_limit=1)
MAX_DATA_BYTES = 64 * 1024


class TypedPayload(dg.Config):
    """A user's record: who, where to reach them, and a JSON object of data."""

    user_id: str = Field(description="1-64 of A-Z a-z 0-9 _ -; becomes part of the record's key.")
    email: str = Field(description="An email address.")
    data: dict[str, Any] = Field(default={}, description="Any JSON object, at most 64 KiB.")

    @field_validator("user_id")
    @classmethod
    def _user_id(cls, value: str) -> str:
        return id_rule(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return check_email(value)

    @field_validator("data")
    @classmethod
    def _data(cls, value: dict[str, Any]) -> dict[str, Any]:
        size = len(json.dumps(value).encode())
        if size > MAX_DATA_BYTES:
            raise ValueError(f"must be at most {MAX_DATA_BYTES // 1024} KiB as JSON, got {size:,} bytes")
        return value


@dg.op
def store_record(
    context: dg.OpExecutionContext, config: TypedPayload, storage: Storage
) -> dg.Output[dict[str, Any]]:
    """Write the validated record to storage as JSON."""
    key = f"records/{check_id('user_id', config.user_id)}/{context.run_id}.json"
    record = {"user_id": config.user_id, "email": config.email, "data": config.data, "run_id": context.run_id}
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "record.json"
        path.write_text(json.dumps(record, indent=2))
        stored = storage.put_file(key, path, "application/json")
    StepLog(context).info("record stored", {"key": key, "bytes": stored.size})
    return job_result({"user_id": config.user_id, "record": stored.url, "fields": sorted(config.data)})


@dg.job(
    description="Validate a typed payload and store it as a user's record.",
    config=payload_mapping(
        TypedPayload, lambda payload: {"ops": {"store_record": {"config": payload.model_dump()}}}
    ),
    tags=QUEUE.job_tags(),
)
def typed_task() -> None:
    store_record()
