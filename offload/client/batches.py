"""Batches: a whole ``batch_trigger`` written in one transaction, its runs created server-side afterwards.

Creating runs one GraphQL request at a time made a batch take ~0.2-0.5 s per run, longer than a request
timeout for a few hundred runs: the call raised while the runs went on being created, and a caller that
retried got them twice. Here the client writes the batch (one row) and its items (one row each: payload,
tags, options) in a single transaction and returns; a creator next to the Dagster workspace
(``offload/runtime/batch_creator.py``, in the webserver process of ``offload dev``) creates the runs.

Why a retry never duplicates:

* **The batch key.** ``(job, batch_key)`` is unique: a second call with the same key inserts nothing and
  gets the first call's batch id, whatever happened to the first call's answer.
* **The run ids.** Each item's run id is fixed when the batch is written (:func:`run_id_for`, from the
  batch id and the index), so a run storage refuses a second run for an item, whichever creator (or
  retried creation) asks. The client can hand the ids back before the runs exist.
* **Claims are only for sharing the work.** A creator claims pending items (:meth:`BatchStore.claim`), and
  takes over claims older than ``STALE_CLAIM_SECONDS`` (a creator that died); two creators that race for an
  item both try to create the same run id, and the second is refused.

The tables live in the idempotency keys' database (``OFFLOAD_IDEMPOTENCY_DB``: SQLite under the data
directory by default, the instance's Postgres database in production), which client and creator share.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from offload.client import idempotency

STALE_CLAIM_SECONDS = 60.0
PENDING, CREATED, FAILED = "pending", "created", "failed"
BATCH_TAG = "offload/batch"
BATCH_INDEX_TAG = "offload/batch_index"
_NAMESPACE = uuid.UUID("6f1f4c1e-3b5e-4d35-9a5e-0ff10ad0ba7c")


@dataclass(frozen=True)
class BatchItem:
    """One item of ``Client.batch_trigger`` with options of its own (a plain payload has none): these
    five of ``Client.trigger``'s (no delay, ttl, priority, max_duration or debounce). Its ``tags``
    override the call's key by key, its ``max_attempts`` the call's."""

    payload: Mapping[str, Any]
    idempotency_key: str | None = None
    idempotency_ttl: float | timedelta | str = idempotency.DEFAULT_TTL
    tags: Mapping[str, str] | None = None
    max_attempts: int | None = None
    concurrency_key: str | None = None


def run_id_for(batch_id: str, index: int) -> str:
    """The run id of a batch's item, fixed when the batch is written."""
    return str(uuid.uuid5(_NAMESPACE, f"{batch_id}/{index}"))


@dataclass(frozen=True)
class NewItem:
    """One item as the client checked it: a run to create, or the lines of why it is refused."""

    config: Mapping[str, Any] | None = None
    tags: Mapping[str, str] | None = None
    idempotency_key: str | None = None
    idempotency_ttl: float | None = None
    error: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ItemRow:
    batch_id: str
    index: int
    job: str
    run_id: str
    state: str
    config: dict[str, Any]
    tags: dict[str, str]
    idempotency_key: str | None
    idempotency_ttl: float | None
    error: dict[str, Any] | None
    claim: str | None
