"""Trigger runs from any Python app, Trigger.dev style, through the Dagster webserver's GraphQL API.

    from offload.client import Client

    client = Client()                                   # OFFLOAD_DAGSTER_URL, default http://127.0.0.1:3000
    handle = client.trigger("video_pipeline", payload, idempotency_key=f"upload-{upload_id}")
    run = client.retrieve(handle.id)                    # run.status, run.output once COMPLETED

``trigger`` returns as soon as the run exists (queued); Dagster's daemon starts it when its queue has a
slot (offload/runtime/concurrency.py). Statuses are offload's (offload/client/runs.py, with the mapping from
Dagster's);
``output`` is what the job declared with ``offload.result.job_result``. The payload is the run config
(offload/payload.py): the webserver checks it against the job's rules and a bad one raises
``InvalidPayloadError`` with the CLI's lines, starting nothing. The client refuses payloads that carry
secrets (the run config is shown in the UI) or ``{env: NAME}`` values (which would read the server's
environment). Behind an authenticating proxy, set ``OFFLOAD_API_TOKEN`` (bearer) or ``OFFLOAD_API_USER``
and ``OFFLOAD_API_PASSWORD`` (basic auth); a refusal raises ``AuthenticationError``. Idempotency keys are
kept in a small table (offload/client/idempotency.py).
"""

from __future__ import annotations

import builtins
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from offload import trigger_options
from offload.client import batches, idempotency, subscribe, tokens
from offload.client.batches import BatchItem
from offload.client.documents import (
    CLEAR_LIMIT,
    EVENTS_QUERY,
    JOBS_QUERY,
    LAUNCH,
    RUN_QUERY,
    RUNS_QUERY,
    SET_LIMIT,
    TERMINATE,
)
from offload.client.runs import (
    MAX_RETRIES_TAG,
    BatchResult,
    Run,
    RunHandle,
    Status,
    error_of,
    first_attempt_statuses,
    metadata_of,
    result_of,
    status_of,
    tag_dict,
    timestamp,
    waiting_for,
)
from offload.exceptions import (
    ClientError,
    GraphQLError,
    InvalidPayloadError,
    RunNotFoundError,
    RunTimeoutError,
    UnknownJobError,
)
from offload.labels import label_tags
from offload.payload_rules import config_error_line, payload_problems, tag_problem
from offload.runtime import concurrency, max_runtime

if TYPE_CHECKING:
    import httpx

    from offload.client.batch_store import BatchStore

__all__ = ["BatchItem", "BatchResult", "Client", "Run", "RunHandle", "Status"]

IDEMPOTENCY_TAG = "offload/idempotency_key"
CONCURRENCY_KEY_TAG = "offload/concurrency_key"
PARENT_TAG = "offload/parent_run"
REPLAY_TAG = "offload/replay_of"
RETRY_ON_FAILURE_TAG = "dagster/retry_on_asset_or_op_failure"
ROOT_RUN_TAG = "dagster/root_run_id"
RESERVED_TAG_PREFIXES = ("dagster/", ".dagster/", "offload/")
MAX_BATCH = 1000  # Trigger.dev's limit per batch_trigger call
JOBS_TTL = 60.0  # seconds the job list is trusted before the code location is asked again
STARTING_GRACE = 30.0  # seconds cancel waits for a STARTING run (worker being started) to be cancelable


@dataclass(frozen=True)
class _Job:
    name: str
    location: str
    repository: str
    tags: dict[str, str]

    def selector(self) -> dict[str, str]:
        return {
            "repositoryLocationName": self.location,
            "repositoryName": self.repository,
            "jobName": self.name,
        }


def _payload_lines(error: Mapping[str, Any]) -> list[str] | None:
    """The lines of a ``PayloadError`` raised by a job's payload mapping (offload/payload.py), if that is
    what the webserver's error is."""
    chain = [error, *(link["error"] for link in error.get("errorChain") or [])]
    for item in chain:
        if item.get("className") == "PayloadError":
            text = item["message"].split("PayloadError: ", 1)[-1]
            return [line for line in text.splitlines() if line.strip()]
    return None


class Client:
    """The offload client. Thread-safe: make one per process and share it."""

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = 30.0,
        idempotency_db: str | None = None,
        auth: httpx.Auth | None = None,
    ):
        """``auth``: credentials for the proxy in front of the webserver; default from the environment
        (``OFFLOAD_API_TOKEN``, or ``OFFLOAD_API_USER`` and ``OFFLOAD_API_PASSWORD``;
        offload/client/transport.py)."""
        from offload.client.transport import GraphQL  # httpx: loaded by the first Client, not the import

        self._graphql = GraphQL(url, timeout=timeout, auth=auth)
        self.url = self._graphql.url
        self._idempotency_db = idempotency_db
        self._store: idempotency.IdempotencyStore | None = None
        self._batches: BatchStore | None = None
        self._lock = threading.Lock()
        self._jobs: dict[str, _Job] = {}
        self._jobs_loaded = 0.0
        self._load_errors: builtins.list[str] = []

    # -- jobs ----------------------------------------------------------------------------------------

    def _load_jobs(self) -> None:
        data = self._graphql(JOBS_QUERY)
        repositories = data["repositoriesOrError"]
        if repositories["__typename"] != "RepositoryConnection":
            raise GraphQLError(f"listing jobs at {self.url}: {repositories.get('message')}")
        jobs = {}
        for repo in repositories["nodes"]:
            for job in repo["pipelines"]:
                jobs[job["name"]] = _Job(job["name"], repo["location"]["name"], repo["name"], tag_dict(job))
        self._jobs, self._jobs_loaded = jobs, time.monotonic()
        self._load_errors = [
            f"code location {entry['name']!r} failed to load: "
            + entry["locationOrLoadError"]["message"].strip().splitlines()[-1]
            for entry in (data["workspaceOrError"].get("locationEntries") or [])
            if (entry.get("locationOrLoadError") or {}).get("__typename") == "PythonError"
        ]

    def _job(self, name: str) -> _Job:
        with self._lock:
            if name not in self._jobs or time.monotonic() - self._jobs_loaded > JOBS_TTL:
                self._load_jobs()
            if name in self._jobs:
                return self._jobs[name]
        known = ", ".join(sorted(self._jobs)) or "none"
        problem = f" ({'; '.join(self._load_errors)})" if self._load_errors else ""
        raise UnknownJobError(f"unknown job {name!r} at {self.url}; jobs there: {known}{problem}")

    # -- triggering ----------------------------------------------------------------------------------

    def trigger(
        self,
        job: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        idempotency_ttl: float | timedelta | str = idempotency.DEFAULT_TTL,
        tags: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        concurrency_key: str | None = None,
        parent_run_id: str | None = None,
        delay: trigger_options.Duration | datetime | None = None,
        ttl: trigger_options.Duration | None = None,
        priority: int | None = None,
        max_duration: trigger_options.Duration | None = None,
        debounce: tuple[str, trigger_options.Duration] | Mapping[str, Any] | None = None,
    ) -> RunHandle:
        """Create a run of ``job`` with ``payload`` and return its handle at once (the run is QUEUED, or
        DELAYED with a ``delay``).

        ``idempotency_key``: the same key (per job) within ``idempotency_ttl`` returns the run it created,
        unless that run failed (FAILED, CRASHED, TIMED_OUT), which frees the key. ``max_attempts``: runs
        in all, counting the first (Dagster run retries). ``concurrency_key``: the key of the job's
        queue's per-key limit (else the payload's ``key_field``). ``parent_run_id``: the run is a child of
        that run (offload/client/children.py) and takes its slot on the next nesting level.

        ``delay`` (``"30s"``, ``"2h"``, seconds, a ``timedelta`` or an aware ``datetime``): the run is DELAYED
        until then. ``ttl``: a run not started within it of becoming due is EXPIRED and never runs.
        ``priority``: among runs waiting for the same slots, higher starts first. ``max_duration``: the
        run's max runtime, over the job's own. ``debounce=(key, window)``: triggers of this job with the
        same key, each within ``window`` of the previous one, are one run (every trigger gets its id),
        which starts ``window`` after the last trigger with the last trigger's payload and options
        (offload/trigger_options.py, offload/runtime/debounce.py).
        """
        info = self._job(job)
        options = trigger_options.option_tags(
            delay=delay, ttl=ttl, priority=priority, max_duration=max_duration, debounce=debounce
        )
        params = self._params(info, payload, tags, max_attempts, concurrency_key, parent_run_id, options)
        if idempotency_key is None:
            return RunHandle(self._launch(info, params), job)
        key = idempotency.check_key(idempotency_key)
        ttl = idempotency.ttl_seconds(idempotency_ttl)
        _add_tags(params, {IDEMPOTENCY_TAG: key})
        store = self._idempotency()
        while True:
            claim = store.claim(job, key, ttl)
            run_id = claim.run_id or (self._tagged_run(job, key, claim.since) if claim.took_over else None)
            if run_id is not None:
                if claim.run_id is None:
                    store.record(job, key, claim.token, run_id)
                status = self._status(run_id)
                if status is None or status.is_failure:
                    store.clear(job, key, run_id)  # a failed run frees its key: launch afresh
                    continue
                return RunHandle(run_id, job, existing=True)
            try:
                run_id = self._launch(info, params)
            except BaseException:
                store.release(job, key, claim.token)
                raise
            store.record(job, key, claim.token, run_id)
            return RunHandle(run_id, job)

    def batch_trigger(
        self,
        job: str,
        items: Iterable[Mapping[str, Any] | BatchItem],
        *,
        batch_idempotency_key: str | None = None,
        tags: Mapping[str, str] | None = None,
        max_attempts: int | None = None,
        wait: bool = True,
        timeout: float = 600.0,
    ) -> BatchResult:
        """Create one run per item (at most 1,000): a payload, or a ``BatchItem`` with its own options
        (idempotency key, tags, attempts, concurrency key). Returns a ``BatchResult`` in item order: a
        handle, or that item's error (the others are created all the same); ``.id`` is the batch's.

        The batch is written in one transaction and its runs are created server-side
        (offload/client/batches.py): no request lasts longer than that write, and a call repeated with the
        same ``batch_idempotency_key`` (after a timeout, a crash) returns the first call's batch, creating
        nothing twice. ``wait``: return once every run is created or refused (at most ``timeout`` seconds;
        items still pending are in ``.pending``, their handles already carry the runs' ids); ``False``
        returns at once (then ``batch(id)`` reads the outcome).
        """
        listed = builtins.list(items)
        if len(listed) > MAX_BATCH:
            raise ValueError(f"batch_trigger: at most {MAX_BATCH:,} items per call, got {len(listed):,}")
        key = None if batch_idempotency_key is None else idempotency.check_key(batch_idempotency_key)
        common_tags = _user_tags(tags)
        info = self._job(job)
        store = self._batch_store()
        batch_id = store.find(job, key) if key is not None else None
        if batch_id is None:
            new = [self._batch_item(info, item, common_tags, max_attempts) for item in listed]
            batch_id, _ = store.submit(job, new, key)
        deadline = time.monotonic() + timeout
        delay = 0.05
        while wait and store.pending(batch_id) and time.monotonic() < deadline:
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 1.0)
        return self.batch(batch_id)

    def batch(self, batch_id: str) -> BatchResult:
        """A batch's items now: each a handle (its run, created or about to be: see ``.pending``) or its
        error."""
        store = self._batch_store()
        job = store.job_of(batch_id)
        if job is None:
            raise RunNotFoundError(f"no batch {batch_id!r} in {store.url.split('://')[0]} database")
        results: list[RunHandle | ClientError] = []
        pending = []
        for row in store.items(batch_id):
            if row.state == batches.FAILED:
                error = row.error or {}
                lines = error.get("lines") or ["failed"]
                kind = error.get("kind")
                results.append(
                    InvalidPayloadError(job, lines) if kind == "payload"
                    else UnknownJobError(lines[0]) if kind == "job" else ClientError(lines[0])
                )  # fmt: skip
                continue
            if row.state == batches.PENDING:
                pending.append(row.index)
            own = batches.run_id_for(batch_id, row.index)  # else an idempotency key's earlier run
            results.append(RunHandle(row.run_id, job, existing=row.run_id != own))
        return BatchResult(results, id=batch_id, pending=tuple(pending))

    def _batch_item(
        self, info: _Job, item: Mapping[str, Any] | BatchItem, common_tags: Mapping[str, str],
        max_attempts: int | None,
    ) -> batches.NewItem:  # fmt: skip
        """An item checked as ``trigger`` checks its arguments; a refused one carries its error lines."""
        entry = item if isinstance(item, BatchItem) else BatchItem(item)
        try:
            params = self._params(
                info, entry.payload, {**common_tags, **(entry.tags or {})},
                entry.max_attempts if entry.max_attempts is not None else max_attempts,
                entry.concurrency_key, None, {},
            )  # fmt: skip
            key = None if entry.idempotency_key is None else idempotency.check_key(entry.idempotency_key)
            ttl = idempotency.ttl_seconds(entry.idempotency_ttl)
        except InvalidPayloadError as error:
            return batches.NewItem(error={"kind": "payload", "lines": error.lines})
        except (ClientError, ValueError) as error:
            return batches.NewItem(error={"kind": "error", "lines": [str(error)]})
        run_tags = {tag["key"]: tag["value"] for tag in params["executionMetadata"]["tags"]}
        if key is not None:
            run_tags[IDEMPOTENCY_TAG] = key
        return batches.NewItem(
            config=params["runConfigData"], tags=run_tags, idempotency_key=key, idempotency_ttl=ttl
        )

    def _batch_store(self) -> BatchStore:
        from offload.client.batch_store import BatchStore

        with self._lock:
            if self._batches is None:
                self._batches = BatchStore(self._idempotency_db)
            return self._batches

    def trigger_and_wait(self, job: str, payload: Mapping[str, Any], *, timeout: float = 600.0,
                         **options: Any) -> Run:  # fmt: skip
        """``trigger`` then ``wait``: the finished run (any final status; check ``status``)."""
        return self.wait(self.trigger(job, payload, **options).id, timeout=timeout)

    def replay(self, run_id: str) -> RunHandle:
        """A new run of the same job with the same payload, tags, attempts and concurrency key."""
        run = self.retrieve(run_id)
        info = self._job(run.job)
        tags = {
            k: v
            for k, v in run.tags.items()
            if not k.startswith(RESERVED_TAG_PREFIXES) and k not in info.tags
        }
        retries = run.tags.get(MAX_RETRIES_TAG)
        params = self._params(
            info, run.payload, tags, int(retries) + 1 if retries else None,
            run.tags.get(CONCURRENCY_KEY_TAG), run.tags.get(PARENT_TAG), {REPLAY_TAG: run_id},
        )  # fmt: skip
        return RunHandle(self._launch(info, params), run.job)

    def _params(
        self,
        info: _Job,
        payload: Mapping[str, Any],
        tags: Mapping[str, str] | None,
        max_attempts: int | None,
        concurrency_key: str | None,
        parent_run_id: str | None,
        internal_tags: Mapping[str, str],
    ) -> dict[str, Any]:
        problems = payload_problems(payload)
        if problems:
            raise InvalidPayloadError(info.name, problems)
        # The payload's ids as tags people find the run by in the UI; a tag the caller gives wins.
        run_tags = label_tags(payload) | _user_tags(tags)
        depth = 0
        if parent_run_id is not None:
            parent = self._records(parent_run_id)[0]
            depth = int(tag_dict(parent).get(concurrency.DEPTH_TAG, "0")) + 1
            run_tags[PARENT_TAG] = parent_run_id
        try:
            run_tags |= concurrency.run_tags(info.tags, payload, concurrency_key=concurrency_key, depth=depth)
        except ValueError as error:
            raise InvalidPayloadError(info.name, [str(error)]) from None
        if concurrency_key is not None:
            run_tags[CONCURRENCY_KEY_TAG] = str(concurrency_key)
        if max_attempts is not None:
            if not isinstance(max_attempts, int) or max_attempts < 1:
                raise ValueError(f"max_attempts: {max_attempts!r} must be a whole number of at least 1")
            # Trigger.dev's maxAttempts retries any failure, a failed step too, whatever the instance's
            # default for runs that did not ask (run_retries.retry_on_asset_or_op_failure).
            run_tags[MAX_RETRIES_TAG] = str(max_attempts - 1)
            run_tags[RETRY_ON_FAILURE_TAG] = "true"
        run_tags |= internal_tags
        return {
            "selector": info.selector(),
            "runConfigData": dict(payload),
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in run_tags.items()]},
        }

    def _launch(self, info: _Job, params: dict[str, Any]) -> str:
        return self._launch_result(info, self._graphql(LAUNCH, {"params": params})["launchRun"])

    def _launch_result(self, info: _Job, result: Mapping[str, Any]) -> str:
        kind = result["__typename"]
        if kind == "LaunchRunSuccess":
            run_id: str = result["run"]["runId"]
            return run_id
        if kind == "RunConfigValidationInvalid":
            raise InvalidPayloadError(info.name, [config_error_line(e["message"]) for e in result["errors"]])
        if kind == "PipelineNotFoundError":
            with self._lock:
                self._jobs_loaded = 0.0  # the code location changed: list the jobs again next time
            raise UnknownJobError(f"unknown job {info.name!r} at {self.url} (the code location was reloaded)")
        if kind == "PythonError":
            lines = _payload_lines(result)
            if lines is not None:
                raise InvalidPayloadError(info.name, lines)
        message = (result.get("message") or "").strip().splitlines()
        raise GraphQLError(f"launching {info.name} failed: {kind}: {message[0] if message else ''}")

    def _tagged_run(self, job: str, key: str, since: float) -> str | None:
        """The newest run of ``job`` tagged with idempotency ``key`` created since ``since`` (the stale
        claim's time): a launch whose claimer died before recording it."""
        filter_ = {
            "pipelineName": job,
            "tags": [{"key": IDEMPOTENCY_TAG, "value": key}],
            "createdAfter": since,
        }
        runs = self._runs_page(filter_, None, 1)
        return runs[0]["runId"] if runs else None

    def _idempotency(self) -> idempotency.IdempotencyStore:
        with self._lock:
            if self._store is None:
                self._store = idempotency.IdempotencyStore(self._idempotency_db)
            return self._store

    # -- reading runs ----------------------------------------------------------------------------------

    def _records(self, run_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The run and its attempts (the runs Dagster retried or re-executed from it), oldest first."""
        data = self._graphql(
            RUN_QUERY, {"runId": run_id, "group": {"tags": [{"key": ROOT_RUN_TAG, "value": run_id}]}}
        )
        run = data["runOrError"]
        if run["__typename"] == "RunNotFoundError":
            raise RunNotFoundError(f"no run {run_id!r} at {self.url}")
        if run["__typename"] != "Run":
            raise GraphQLError(f"reading run {run_id}: {run.get('message')}")
        if run["rootRunId"]:  # an attempt itself: its own run group is its root's
            group = self._runs_page({"tags": [{"key": ROOT_RUN_TAG, "value": run["rootRunId"]}]}, None, 1000)
            attempts = [*self._runs_page({"runIds": [run["rootRunId"]]}, None, 1), *group]
        else:
            attempts = [run, *(data["runsOrError"].get("results") or [])]
        return run, sorted(attempts, key=lambda record: record["creationTime"])

    def _current(self, run_id: str) -> dict[str, Any]:
        """The record that stands for the run now (see ``_latest``)."""
        return _latest(*self._records(run_id))

    def _status(self, run_id: str) -> Status | None:
        try:
            return status_of(self._current(run_id))
        except RunNotFoundError:
            return None

    def retrieve(self, run_id: str) -> Run:
        """The run now: status, output once COMPLETED, error once failed, timestamps, attempts, tags."""
        return self._build(*self._records(run_id), with_events=True)

    def _build(self, run: dict[str, Any], attempts: list[dict[str, Any]], *, with_events: bool) -> Run:
        current = _latest(run, attempts)
        status = status_of(current)
        output = error = None
        if with_events and status.is_final and status not in (Status.CANCELED, Status.EXPIRED):
            events = self._events(current["runId"])
            output = result_of(events) if status is Status.COMPLETED else None
            error = error_of(events, tag_dict(current)) if status.is_failure else None
            if status is Status.TIMED_OUT and not (error or "").startswith("exceeded max runtime"):
                # Canceled by Dagster's run monitor: the steps only say they were interrupted.
                limit = max_runtime.max_runtime_of(tag_dict(current))
                error = max_runtime.max_runtime_message(limit) if limit else error
        return Run(
            id=run["runId"],
            job=run["jobName"],
            status=status,
            output=output,
            error=error,
            created_at=timestamp(run["creationTime"]),  # type: ignore[arg-type]
            started_at=_started_at(attempts[0] if not run["rootRunId"] else run),
            completed_at=timestamp(current["endTime"]) if status.is_final else None,
            attempts=[r["runId"] for r in attempts].index(current["runId"]) + 1,
            tags=tag_dict(run),
            payload=run.get("runConfig") or {},
            metadata=metadata_of(current, attempts),
            waiting=waiting_for(current),
        )

    def _events(self, run_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = self._graphql(EVENTS_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            if page["__typename"] != "EventConnection":
                raise GraphQLError(f"reading events of run {run_id}: {page.get('message')}")
            events += page["events"]
            if not page["hasMore"]:
                return events
            cursor = page["cursor"]

    def _runs_page(self, filter_: Mapping[str, Any], cursor: str | None, limit: int) -> list[dict[str, Any]]:
        data = self._graphql(RUNS_QUERY, {"filter": dict(filter_), "cursor": cursor, "limit": limit})
        runs = data["runsOrError"]
        if runs["__typename"] != "Runs":
            raise GraphQLError(f"listing runs: {runs.get('message')}")
        results: list[dict[str, Any]] = runs["results"]
        return results

    def list(
        self,
        job: str | None = None,
        status: Status | str | None = None,
        tag: tuple[str, str] | Mapping[str, str] | None = None,
        limit: int = 20,
    ) -> list[Run]:
        """Runs, newest first, optionally of one job, in one status, with a tag (``("key", "value")``):
        at most ``limit`` of them, the newest that match (pages are read until ``limit`` match or none are
        left). Attempts made by retries or to resume a durable wait are part of their run, not listed apart,
        and ``status`` is the run's as ``retrieve`` reports it: its latest attempt's, so the server is asked
        for first attempts that may be in it (``first_attempt_statuses``) and each is checked here."""
        wanted = Status(status) if status is not None else None
        filter_: dict[str, Any] = {}
        if job is not None:
            filter_["pipelineName"] = self._job(job).name
        if tag is not None:
            pairs = tag.items() if isinstance(tag, Mapping) else [tag]
            filter_["tags"] = [{"key": k, "value": v} for k, v in pairs]
        if wanted is not None:
            filter_["statuses"] = first_attempt_statuses(wanted)
        found: builtins.list[Run] = []
        cursor = None
        with ThreadPoolExecutor(max_workers=8) as pool:
            while len(found) < limit:
                page = self._runs_page(filter_, cursor, max(limit, 20))
                firsts = [record["runId"] for record in page if not record["rootRunId"]]
                for run in pool.map(lambda run_id: self._listed(run_id, wanted), firsts):
                    if run is not None and (wanted is None or run.status is wanted) and len(found) < limit:
                        found.append(run)
                if len(page) < max(limit, 20):
                    break
                cursor = page[-1]["runId"]
        return found

    def _listed(self, run_id: str, wanted: Status | None) -> Run | None:
        """The run as ``retrieve`` reports it, or None if it is not in ``wanted`` (then its events are not
        read)."""
        run, attempts = self._records(run_id)
        if wanted is not None and status_of(_latest(run, attempts)) is not wanted:
            return None
        return self._build(run, attempts, with_events=True)

    def wait(self, run_id: str, timeout: float = 600.0, poll_interval: float = 1.0) -> Run:
        """Block until the run is final and return it; ``RunTimeoutError`` after ``timeout`` seconds (the
        run goes on)."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while True:
            run, attempts = self._records(run_id)
            if self._build(run, attempts, with_events=False).is_final:
                return self.retrieve(run_id)
            if time.monotonic() >= deadline:
                raise RunTimeoutError(f"run {run_id} did not finish within {timeout:g} s; it goes on running")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, poll_interval)

    def cancel(self, run_id: str) -> None:
        """Stop the run: a queued run is canceled at once, an executing one is interrupted (it becomes
        CANCELED when its worker has stopped; ``wait`` for it). Canceling a finished run does nothing."""
        deadline = time.monotonic() + STARTING_GRACE
        current = self._current(run_id)
        while not status_of(current).is_final:
            waiting = status_of(current) is Status.WAITING
            if waiting and current["status"] != "NOT_STARTED":
                # The attempt that ended at the wait; the one that resumes it is made within a second.
                if time.monotonic() > deadline:
                    raise GraphQLError(f"canceling run {run_id}: its waiting attempt did not appear")
                time.sleep(0.1)
                current = self._current(run_id)
                continue
            # A DELAYED run was never submitted, nor was a WAITING run's resuming attempt: Dagster cancels
            # such a run only by marking it canceled (the daemon's release after this is refused,
            # offload/runtime/delays.py; the resumer skips it, offload/runtime/waits.py).
            unstarted = waiting or status_of(current) is Status.DELAYED
            policy = "MARK_AS_CANCELED_IMMEDIATELY" if unstarted else "SAFE_TERMINATE"
            answer = self._graphql(TERMINATE, {"runId": current["runId"], "policy": policy})["terminateRun"]
            if answer["__typename"] == "TerminateRunSuccess":
                return
            if answer["__typename"] == "RunNotFoundError":
                raise RunNotFoundError(f"no run {run_id!r} at {self.url}")
            current = self._current(run_id)
            if status_of(current).is_final:  # finished meanwhile: nothing left to cancel
                return
            # Dagster refuses a safe terminate while the run is being handed to its worker (NOT_STARTED,
            # STARTING) and while that worker cannot yet be signalled; the status read above may already be
            # the next one (STARTING became STARTED meanwhile). Each lasts well under a second: try again.
            if time.monotonic() > deadline:
                raise GraphQLError(f"canceling run {run_id}: {answer['__typename']}: {answer.get('message')}")
            time.sleep(0.1)

    def subscribe(
        self,
        run_id: str | None = None,
        *,
        tag: tuple[str, str] | Mapping[str, str] | None = None,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> Iterator[Run]:
        """A ``Run`` snapshot on every change of status, metadata or output: of one run until it is final
        (the last snapshot has its output or error), or of the runs with ``tag`` until ``timeout``
        (offload/client/subscribe.py)."""
        return subscribe.subscribe(self, run_id, tag=tag, poll_interval=poll_interval, timeout=timeout)

    def create_public_token(
        self,
        runs: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        expires: float | timedelta | str = "15m",
    ) -> str:
        """A signed, read-only token for a browser to watch ``runs`` (or the runs with one of ``tags``) on
        the gateway's realtime stream, until it expires (offload/client/tokens.py)."""
        return tokens.create_public_token(runs, tags, expires)

    # -- wait tokens (offload/wait.py) -------------------------------------------------------------------

    def create_token(
        self,
        *,
        timeout: float | timedelta = timedelta(days=7),
        tags: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        """A wait token (``id``, ``url``) a step waits for with ``offload.wait.for_token``. Written to the
        Dagster instance's storage: this process needs ``DAGSTER_HOME`` (the instance's dagster.yaml)."""
        from offload import wait

        return wait.create_token(timeout=timeout, tags=tags, idempotency_key=idempotency_key)

    def complete_token(self, token: str, data: Any = None) -> bool:
        """Complete a wait token with ``data`` (JSON), by its id (needs ``DAGSTER_HOME``) or its URL (a POST
        to the webhook gateway). True if this call completed it; completing it again is a no-op (False)."""
        if token.startswith(("http://", "https://")):
            import httpx

            answer = httpx.post(token, json=data, timeout=30.0)
            if answer.status_code != 200:
                raise ClientError(f"completing token: {answer.status_code} {answer.text[:200]}")
            return bool(answer.json().get("completed_now"))
        from offload import wait

        return wait.complete_token(token, data)

    # -- queue limits ----------------------------------------------------------------------------------

    def set_queue_limit(self, queue: str, limit: int, *, per_key: bool = False) -> None:
        """Let ``limit`` runs of ``queue`` execute at once (``per_key``: per concurrency key), over what
        the queue declares, from the daemon's next look at the queue (about a second), without a deploy
        (offload/runtime/queues.py). Runs already executing go on."""
        pool = concurrency.pool_name(queue, per_key=per_key)
        answer = self._graphql(SET_LIMIT, {"pool": pool, "limit": concurrency.check_limit(limit)})
        if answer.get("setConcurrencyLimit") is not True:
            raise GraphQLError(f"setting the limit of queue {queue!r}: {answer}")

    def clear_queue_limit(self, queue: str, *, per_key: bool = False) -> None:
        """Back to the limit ``queue`` declares in code."""
        answer = self._graphql(CLEAR_LIMIT, {"pool": concurrency.pool_name(queue, per_key=per_key)})
        if answer.get("deleteConcurrencyLimit") is not True:
            raise GraphQLError(f"clearing the limit of queue {queue!r}: {answer}")

    def close(self) -> None:
        self._graphql.close()
        if self._store is not None:
            self._store.close()
        if self._batches is not None:
            self._batches.close()


def _latest(run: dict[str, Any], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    """The first attempt stands for the whole run: its latest attempt is reported. An attempt asked for by
    its own id is reported as itself."""
    return attempts[-1] if not run["rootRunId"] else run


def _started_at(record: Mapping[str, Any]) -> datetime | None:
    """When the run worker started. The webserver fills a run that ended without starting (canceled in the
    queue, failed to launch) with its end time; such a run never started."""
    start, end = record.get("startTime"), record.get("endTime")
    return None if start is None or start == end else timestamp(start)


def _user_tags(tags: Mapping[str, str] | None) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in (tags or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"tags: {key!r}: keys and values must be strings")
        if key.startswith(RESERVED_TAG_PREFIXES):
            raise ValueError(f"tags: {key!r} uses a reserved prefix ({', '.join(RESERVED_TAG_PREFIXES)})")
        problem = tag_problem(key, value)
        if problem is not None:
            raise ValueError(problem)
        checked[key] = value
    return checked


def _add_tags(params: dict[str, Any], tags: Mapping[str, str]) -> None:
    params["executionMetadata"]["tags"] += [{"key": k, "value": v} for k, v in tags.items()]
