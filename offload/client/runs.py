"""What the client hands back: run handles, runs in Trigger.dev's status vocabulary, batch results.

Dagster's run statuses map onto offload's as follows (a pure function of the run record, so it is tested
without a server):

| offload | Dagster |
|---|---|
| DELAYED | NOT_STARTED tagged ``offload/delay_until`` (``trigger(delay=)``: held until due, then QUEUED) |
| QUEUED | QUEUED, NOT_STARTED, MANAGED; also FAILURE tagged ``dagster/will_retry`` (a retry is on its way), |
|   | and FAILURE of a run allowed retries whose ``will_retry`` is not yet written (RETRY_DECISION_GRACE); |
|   | never a run without a code location (``repositoryOrigin`` null: ``dagster job execute``), which |
|   | Dagster's retry daemon cannot launch again though it tags it ``will_retry`` |
| EXECUTING | STARTING, STARTED, SUSPENDED, CANCELING (a run stays EXECUTING until it has really stopped) |
| COMPLETED | SUCCESS |
| FAILED | FAILURE of a step or of the job's start-up: ``dagster/failure_reason`` STEP_FAILURE or |
|   | JOB_INITIALIZATION_FAILURE, or a resource that could not be set up for a missing or bad setting |
|   | (tag ``offload/configuration_error``, see ``offload.errors.configuration_checked``) |
| CRASHED | any other FAILURE: the run worker died or was lost (UNEXPECTED_TERMINATION, RUN_WORKER_RESTART, |
|   | START_TIMEOUT, RUN_EXCEPTION, or failed from outside the worker, e.g. by run monitoring) |
| TIMED_OUT | FAILURE or CANCELED of a run tagged ``dagster/max_runtime`` that ran at least that long |
| EXPIRED | CANCELED tagged ``offload/expired``: not started within its ``ttl``, never ran |
| CANCELED | CANCELED |
| WAITING | at a durable wait (offload/wait.py): FAILURE tagged ``offload/suspended`` (the attempt that |
|   | ended at the wait), NOT_STARTED tagged ``offload/resumes`` (the attempt that resumes it) |

A run retried by Dagster (``trigger(max_attempts=N)``) is one offload run: its id is the first attempt's,
its status, output and error are the latest attempt's, and ``attempts`` counts them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from offload.client.metadata_rules import decode
from offload.exceptions import CONFIGURATION_ERROR_TAG, ClientError
from offload.redaction import redact
from offload.trigger_options import DELAY_UNTIL_TAG, EXPIRED_TAG, first_attempt

RESULT_LABEL = "result"  # offload.result.RESULT_LABEL (that module needs Dagster; a test keeps them equal)
FAILURE_REASON_TAG = "dagster/failure_reason"
WILL_RETRY_TAG = "dagster/will_retry"
MAX_RETRIES_TAG = "dagster/max_retries"
# Dagster writes a failed run's status first and its ``will_retry`` tag just after, in another statement:
# a poll in between sees a failure that is about to be retried. A run allowed retries is therefore taken as
# final only once the tag is there, or this long after it ended (an instance with run retries off never
# writes the tag).
RETRY_DECISION_GRACE = 30.0
MAX_RUNTIME_TAG = "dagster/max_runtime"
FAILED_REASONS = {"STEP_FAILURE", "JOB_INITIALIZATION_FAILURE"}


class Status(StrEnum):
    DELAYED = "DELAYED"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    CRASHED = "CRASHED"
    TIMED_OUT = "TIMED_OUT"
    WAITING = "WAITING"  # at a durable wait: no worker, no slot (Run.waiting says until when / for what)
    EXPIRED = "EXPIRED"

    @property
    def is_final(self) -> bool:
        return self in FINAL

    @property
    def is_failure(self) -> bool:
        """Ended without its result; a failed run clears its idempotency key (a canceled one keeps it)."""
        return self in (Status.FAILED, Status.CRASHED, Status.TIMED_OUT)


FINAL = frozenset(
    {Status.COMPLETED, Status.FAILED, Status.CANCELED, Status.CRASHED, Status.TIMED_OUT, Status.EXPIRED}
)

_PLAIN = {
    "QUEUED": Status.QUEUED,
    "NOT_STARTED": Status.QUEUED,
    "MANAGED": Status.QUEUED,
    "STARTING": Status.EXECUTING,
    "STARTED": Status.EXECUTING,
    "SUSPENDED": Status.EXECUTING,
    "CANCELING": Status.EXECUTING,
    "SUCCESS": Status.COMPLETED,
}

# The Dagster statuses of the attempt that stands for a run in each status (its latest); the mapping above
# then picks the exact ones.
DAGSTER_STATUSES: dict[Status, list[str]] = {
    Status.DELAYED: ["NOT_STARTED"],
    Status.QUEUED: ["QUEUED", "NOT_STARTED", "MANAGED", "FAILURE"],
    Status.EXECUTING: ["STARTING", "STARTED", "SUSPENDED", "CANCELING"],
    Status.COMPLETED: ["SUCCESS"],
    Status.FAILED: ["FAILURE"],
    Status.CRASHED: ["FAILURE"],
    Status.TIMED_OUT: ["FAILURE", "CANCELED"],
    Status.CANCELED: ["CANCELED"],
    Status.WAITING: ["FAILURE", "NOT_STARTED"],
    Status.EXPIRED: ["CANCELED"],
}


def first_attempt_statuses(wanted: Status) -> list[str]:
    """The Dagster statuses the first attempt of a run in ``wanted`` can have now. A run's status is its
    latest attempt's, but a list names runs by their first attempts: a run with a single attempt has one of
    ``DAGSTER_STATUSES[wanted]``, and one with more ended its first as a FAILURE (Dagster retries a failed
    run; a durable wait ends its attempt as a FAILURE tagged ``offload/suspended``)."""
    return sorted({*DAGSTER_STATUSES[wanted], "FAILURE"})


SUSPENDED_TAG = "offload/suspended"  # offload/runtime/waits.py
RESUMES_TAG = "offload/resumes"


def waiting_for(record: Mapping[str, Any]) -> str | None:
    """What a run at a durable wait waits for (``until 2026-...Z``, ``token tok_...``), else None."""
    tags = tag_dict(record)
    if record["status"] == "FAILURE" and tags.get(SUSPENDED_TAG):
        return tags[SUSPENDED_TAG]
    if record["status"] == "NOT_STARTED" and tags.get(RESUMES_TAG):
        return tags[RESUMES_TAG]
    return None


def _timed_out(record: Mapping[str, Any], tags: Mapping[str, str]) -> bool:
    limit, start, end = tags.get(MAX_RUNTIME_TAG), record.get("startTime"), record.get("endTime")
    try:
        return limit is not None and start is not None and end is not None and end - start >= float(limit)
    except ValueError:
        return False


def _relaunchable(record: Mapping[str, Any]) -> bool:
    """Whether Dagster's retry daemon can launch the run again: it needs the code location the run came
    from, which a run started by ``dagster job execute`` / ``offload job execute`` does not have (the
    webserver then answers ``repositoryOrigin: null``; a record without the field counts as one)."""
    return record.get("repositoryOrigin", True) is not None


def _retry_undecided(record: Mapping[str, Any], tags: Mapping[str, str], now: float | None) -> bool:
    retries = tags.get(MAX_RETRIES_TAG, "0")
    if WILL_RETRY_TAG in tags or not retries.isdigit() or int(retries) == 0:
        return False
    end = record.get("endTime")
    now = time.time() if now is None else now
    return end is None or now - end < RETRY_DECISION_GRACE


def status_of(record: Mapping[str, Any], now: float | None = None) -> Status:
    """offload's status of one Dagster run record (``status``, ``tags``, ``startTime``, ``endTime``)."""
    dagster_status = record["status"]
    tags = tag_dict(record)
    if waiting_for(record) is not None:
        return Status.WAITING
    if dagster_status == "NOT_STARTED" and DELAY_UNTIL_TAG in tags and first_attempt(tags):
        return Status.DELAYED
    if dagster_status == "CANCELED" and EXPIRED_TAG in tags:
        return Status.EXPIRED
    if dagster_status in _PLAIN:
        return _PLAIN[dagster_status]
    if dagster_status in ("FAILURE", "CANCELED") and _timed_out(record, tags):
        return Status.TIMED_OUT
    if dagster_status == "CANCELED":
        return Status.CANCELED
    if dagster_status == "FAILURE":
        retry = tags.get(WILL_RETRY_TAG) == "true" or _retry_undecided(record, tags, now)
        if retry and _relaunchable(record):
            return Status.QUEUED
        if tags.get(FAILURE_REASON_TAG) in FAILED_REASONS or CONFIGURATION_ERROR_TAG in tags:
            return Status.FAILED
        return Status.CRASHED
    raise ClientError(f"unknown Dagster run status {dagster_status!r}: offload.client.runs needs updating")


def tag_dict(record: Mapping[str, Any]) -> dict[str, str]:
    return {tag["key"]: tag["value"] for tag in record.get("tags") or []}


def timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value is not None else None


@dataclass(frozen=True)
class RunHandle:
    """What ``trigger`` returns as soon as the run exists. ``existing``: an idempotency key gave back a run
    created earlier instead of a new one."""

    id: str
    job: str
    existing: bool = False


@dataclass(frozen=True)
class Run:
    id: str
    job: str
    status: Status
    output: Any  # the job's declared result (offload.result), once COMPLETED; else None
    error: str | None  # why it FAILED, CRASHED or TIMED_OUT (redacted), else None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    attempts: int
    tags: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)  # what the run published (offload.metadata)
    waiting: str | None = None  # WAITING: until when (``until 2026-...Z``) or for what (``token tok_...``)

    @property
    def is_final(self) -> bool:
        return self.status.is_final


@dataclass(frozen=True)
class BatchResult:
    """``batch_trigger``'s answer, in the order of the items: a handle, or the error of that item."""

    items: list[RunHandle | ClientError]
    id: str = ""  # the batch's id (Client.batch reads it again)
    pending: tuple[int, ...] = ()  # indexes whose runs are still being created (their ids are known)

    @property
    def runs(self) -> list[RunHandle]:
        return [item for item in self.items if isinstance(item, RunHandle)]

    @property
    def errors(self) -> dict[int, ClientError]:
        return {index: item for index, item in enumerate(self.items) if isinstance(item, ClientError)}

    def __iter__(self) -> Iterator[RunHandle | ClientError]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def metadata_of(current: Mapping[str, Any], attempts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The run's metadata (offload/metadata.py): from the attempt that stands for the run, else from the
    newest attempt that published any (a resumed attempt that has not written yet shows its parent's)."""
    for record in [current, *reversed(attempts)]:
        found = decode(tag_dict(record))
        if found is not None:
            return found
    return {}


def _metadata_value(entry: Mapping[str, Any]) -> Any:
    if "jsonString" in entry:
        return json.loads(entry["jsonString"])
    for name in ("text", "intValue", "floatValue", "boolValue", "url", "path", "mdStr"):
        if name in entry:
            return entry[name]
    return None


def result_of(events: Sequence[Mapping[str, Any]]) -> Any:
    """The last ``result`` metadata attached to a step output in ``events``, or None."""
    found = None
    for event in events:
        for entry in event.get("metadataEntries") or []:
            if entry.get("label") == RESULT_LABEL:
                found = _metadata_value(entry)
    return found


# Dagster's own wrappers around the error a step raised; the error worth reporting is their cause.
_WRAPPERS = (
    "DagsterExecutionStepExecutionError",
    "DagsterUserCodeExecutionError",
    "DagsterResourceFunctionError",
    "RetryRequested",
)


def _is_wrapper(error: Mapping[str, Any]) -> bool:
    name = error.get("className") or ""
    message = (error.get("message") or "").strip()
    return name.rsplit(".", 1)[-1] in _WRAPPERS or message.startswith("Exceeded max_retries")


def cause_line(error: Mapping[str, Any] | None) -> str | None:
    """The first line of the error a Dagster ``PythonError`` stands for: past Dagster's wrappers
    (``DagsterExecutionStepExecutionError``, "Exceeded max_retries", ...) to the innermost cause, its class
    named without its module (``OSError: [Errno 30] Read-only file system``)."""
    if not error:
        return None
    chain = [error, *(error.get("causes") or [])]
    found = next((item for item in chain if not _is_wrapper(item)), chain[-1])
    text = (found.get("message") or "").strip()
    line = text.splitlines()[0] if text else found.get("className") or ""
    head, sep, rest = line.partition(": ")
    if sep and "." in head and " " not in head:  # "pkg.module.SomeError: text" -> "SomeError: text"
        line = f"{head.rsplit('.', 1)[-1]}: {rest}"
    return line or None


def error_of(events: Sequence[Mapping[str, Any]], tags: Mapping[str, str] | None = None) -> str | None:
    """Why a run failed, in one line: a setting that stopped its resources (``offload/configuration_error``),
    else a max runtime it ran over, else the first failed step's own error (``step: error``), else the run's
    failure reason."""
    tags = tags or {}
    if tags.get(CONFIGURATION_ERROR_TAG):
        return redact(tags[CONFIGURATION_ERROR_TAG])
    runs = [event for event in events if event.get("__typename") == "RunFailureEvent"]
    for event in runs:
        message = (event.get("message") or "").strip()
        if message.startswith("exceeded max runtime"):
            return redact(message.splitlines()[0])
    for event in events:
        if event.get("__typename") == "ExecutionStepFailureEvent":
            description = ((event.get("failureMetadata") or {}).get("description") or "").strip()
            line = description.splitlines()[0] if description else cause_line(event.get("error"))
            if line is None:
                message = (event.get("message") or "step failed").strip()
                line = message.splitlines()[0] if message else "step failed"
            return redact(f"{event.get('stepKey')}: {line}")
    for event in runs:
        line = cause_line(event.get("error"))
        if line is None:
            message = (event.get("message") or "run failed").strip()
            line = message.splitlines()[0] if message else "run failed"
        return redact(line)
    return None
