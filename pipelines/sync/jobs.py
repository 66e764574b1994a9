"""``data_pipeline``: the run config is the payload (``SyncPayload``); ``frequent_sync`` runs it."""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.runtime.concurrency import Queue
from pipelines.sync.payload import SyncPayload
from pipelines.sync.steps import extract, load, transform

# One sync at a time: runs every 15 minutes, so a slow one must not overlap the next.
QUEUE = Queue("sync", limit=1)


def _run_config(payload: SyncPayload) -> dict[str, Any]:
    return {"ops": {"extract": {"config": payload.model_dump()}}}


@dg.job(
    description="Copy new and changed rows of OFFLOAD_SYNC_SOURCE_TABLE into the destination table, "
    "incrementally by a watermark that only moves with a successful load.",
    config=payload_mapping(SyncPayload, _run_config),
    tags={"offload/kind": "sync", **QUEUE.job_tags()},
)
def data_pipeline() -> None:
    load(transform(extract()))
