"""``batch_processor``: ``{items | source, batch_size}`` -> ``{total_processed, failed, failures, results}``.

split -> process_batch per batch (DynamicOut fan-out) -> summarize (fan-in). Two runs at a time: each
streams its whole input through storage, and more would only compete for the same disk.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from offload.payload import payload_mapping
from offload.runtime.concurrency import Queue
from pipelines.batch.payload import BatchPayload
from pipelines.batch.steps import process_batch, split, summarize

QUEUE = Queue("batch", limit=2)


def _run_config(payload: BatchPayload) -> dict[str, Any]:
    return {"ops": {"split": {"config": payload.model_dump()}}}


@dg.job(
    description="Normalize contact records in batches; report every bad item; summarize.",
    config=payload_mapping(BatchPayload, _run_config),
    tags=QUEUE.job_tags(),
)
def batch_processor() -> None:
    summarize(split().map(process_batch).collect())
